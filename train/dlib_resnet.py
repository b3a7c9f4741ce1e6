"""dlib's face-recognition ResNet in PyTorch, filled from dlib's own ``.dat`` file.

The network of ``dlib_face_recognition_resnet_model_v1.dat`` (128-d descriptors,
LFW 99.38%), rebuilt so that it is differentiable (the training ID loss) and
exports to ONNX, with no dlib at run time. Layout, forward order (dlib's
``dnn_face_recognition_ex.cpp``):

    input 150x150 RGB 0-255 -> (x - mean_rgb) / 256          (input_rgb_image_sized)
    conv 7x7/2 (32), affine, relu, max_pool 3x3/2              150 -> 72 -> 35
    3 x res(32), res_down(64) + 3 x res(64), res_down(128) + 2 x res(128),
    res_down(256) + 2 x res(256), res_down(256)                35 -> 17 -> 8 -> 4 -> 2
    mean over H, W, fc 256 -> 128 without bias

``res``: relu(x + affine(conv(relu(affine(conv(x)))))) with 3x3 convs.
``res_down``: the first conv has stride 2 and *no padding* (dlib pads only stride-1
layers), and the skip branch is a 2x2/2 average pool. dlib's add sums tensors of
different shapes as if the smaller one were zero-padded at the end (channels 32 ->
64, and 3x3 -> 4x4 at 8 px, 1x1 -> 2x2 at 4 px), which ``_add_padded`` mirrors.
The affine layers are dlib's folded batch norm; they are folded further into the
preceding conv here. 29 convs, 1 fc.

The ``.dat`` reader follows dlib's serialisation (dlib/serialize.h, dlib/dnn/core.h,
layers.h, input.h): integers are a control byte (low nibble: byte count, 0x80:
negative) and little-endian bytes; floats are an integer mantissa then an integer
exponent (m * 2**e); bools are '0'/'1'; strings are a length then bytes; tensors are
a version, 4 dims and float32 little-endian data (version 2) or one float each
(version 1). A network is written outermost first (loss, then every layer's
version), then the input layer, then each layer's details from the input outwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from g2g.errors import G2GError

CHIP_SIZE = 150  # dlib's face chip side, px
EMBED_DIM = 128

# (channels, downsample) of the 15 residual blocks, input to output
BLOCKS: tuple[tuple[int, bool], ...] = (
    ((32, False),) * 3
    + ((64, True),) + ((64, False),) * 3
    + ((128, True),) + ((128, False),) * 2
    + ((256, True),) + ((256, False),) * 2
    + ((256, True),)
)


class DatFormatError(G2GError):
    """The file is not a dlib network of the expected layout."""


# --- dlib serialisation -----------------------------------------------------------------------------------------------


class _Stream:
    """Sequential reader of dlib's serialisation primitives over a bytes buffer."""

    def __init__(self, data: bytes):
        self.b = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.b):
            raise DatFormatError(f"file ends early (wanted {n} bytes at offset {self.pos})")
        out = self.b[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        ctrl = self._take(1)[0]
        n = ctrl & 0x0F
        if n > 8:
            raise DatFormatError(f"bad integer control byte {ctrl:#x} at offset {self.pos - 1}")
        value = int.from_bytes(self._take(n), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise DatFormatError(f"bad bool byte {c!r} at offset {self.pos - 1}")
        return c == b"1"

    def str(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def peek_str(self) -> str | None:
        """The string at the cursor if one is there (printable ASCII), without consuming it."""
        pos = self.pos
        try:
            n = self.int()
            s = self._take(n) if 0 < n < 64 else b""
        except DatFormatError:
            s = b""
        self.pos = pos
        return s.decode() if s and all(32 < c < 127 for c in s) else None

    def tensor(self) -> np.ndarray:
        version = self.int()
        dims = [self.int() for _ in range(4)]
        n = int(np.prod(dims))
        if version == 2:  # raw little-endian float32
            return np.frombuffer(self._take(4 * n), dtype="<f4").reshape(dims).astype(np.float32)
        if version == 1:  # one dlib float each
            return np.array([self.float() for _ in range(n)], dtype=np.float32).reshape(dims)
        raise DatFormatError(f"unknown tensor version {version}")

    def alias(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise DatFormatError("unknown alias_tensor version")
        return tuple(self.int() for _ in range(4))


@dataclass
class DatLayer:
    kind: str  # dlib's details tag: con_4, affine_, relu_, max_pool_2, avg_pool_2, add_prev_, fc_2, or "tag"
    params: np.ndarray | None = None  # flat parameter tensor
    geom: tuple[int, ...] = ()  # con: filters, nr, nc, stride_y, stride_x, pad_y, pad_x; pools: nr, nc, sy, sx, py, px
    shapes: tuple[tuple[int, ...], ...] = ()  # alias tensors over params (filters and biases, gamma and beta, ...)


@dataclass
class DatNet:
    input_mean: tuple[float, float, float]  # RGB means subtracted before the /256
    input_size: tuple[int, int]
    loss: str
    margin: float
    threshold: float  # dlib's same-person distance threshold (0.6)
    layers: list[DatLayer] = field(default_factory=list)  # input to output; tags and skips as "tag"


def _details(s: _Stream) -> DatLayer:
    kind = s.str()
    if kind == "con_4":
        params = s.tensor()
        geom = tuple(s.int() for _ in range(7))
        shapes = (s.alias(), s.alias())
        [s.float() for _ in range(4)]  # learning-rate and weight-decay multipliers
        return DatLayer(kind, params.ravel(), geom, shapes)
    if kind == "affine_":
        params = s.tensor()
        shapes = (s.alias(), s.alias())
        s.int()  # mode (0: per channel)
        return DatLayer(kind, params.ravel(), (), shapes)
    if kind == "bn_con2":  # an unfolded batch norm: fold it as dlib's affine_ does on load
        params = s.tensor()
        s.alias(), s.alias()
        s.tensor(), s.tensor()  # batch means and inverse stds (training state)
        running_mean, running_var = s.tensor().ravel(), s.tensor().ravel()
        s.int(), s.int()
        [s.float() for _ in range(4)]
        eps = s.float()
        k = running_mean.size
        gamma = params.ravel()[:k] / np.sqrt(running_var + eps)
        beta = params.ravel()[k:] - gamma * running_mean
        return DatLayer("affine_", np.concatenate([gamma, beta]).astype(np.float32), (), ((1, k, 1, 1),) * 2)
    if kind in ("relu_", "add_prev_"):
        return DatLayer(kind)
    if kind in ("max_pool_2", "avg_pool_2"):
        return DatLayer(kind, None, tuple(s.int() for _ in range(6)))
    if kind == "fc_2":
        n_out, n_in = s.int(), s.int()
        params = s.tensor()
        shapes = (s.alias(), s.alias())
        bias_mode = s.int()
        [s.float() for _ in range(4)]
        return DatLayer(kind, params.ravel(), (n_out, n_in, bias_mode), shapes)
    raise DatFormatError(f"unsupported dlib layer {kind!r} at offset {s.pos}")


def _trailer(s: _Stream, version: int, is_input: bool) -> None:
    """Skip add_layer's training state: 3 bools and cached tensors (all empty in a saved model)."""
    s.bool(), s.bool(), s.bool()
    s.tensor(), s.tensor()  # x_grad, cached_output
    if is_input:
        s.tensor()  # grad_final
        if version >= 3:
            s.int()  # sample_expansion_factor
    elif version >= 2:
        s.tensor()  # params_grad


def read_dat(path: Path) -> DatNet:
    """Parse a dlib metric-learning network file into its layers (input to output)."""
    s = _Stream(Path(path).read_bytes())
    if s.int() != 1:
        raise DatFormatError("not a dlib add_loss_layer (unexpected version)")
    loss = s.str()
    if loss != "loss_metric_2":
        raise DatFormatError(f"expected dlib's loss_metric_2, found {loss!r}")
    margin, threshold = s.float(), s.float()
    versions = []  # one per layer, outermost first; 1: tag/skip, 2: add_layer, last: the layer on the input
    while True:
        versions.append(s.int())
        name = s.peek_str()
        if name is not None and name.startswith("input"):
            break
        if len(versions) > 10_000:
            raise DatFormatError("no input layer found")
    if s.str() != "input_rgb_image_sized":
        raise DatFormatError("expected an input_rgb_image_sized input layer")
    mean = (s.float(), s.float(), s.float())
    size = (s.int(), s.int())
    net = DatNet(mean, size, loss, margin, threshold)
    net.layers.append(_details(s))
    _trailer(s, versions[-1], is_input=True)
    for v in reversed(versions[:-1]):
        if v == 1:  # add_tag_layer / add_skip_layer: no details of their own
            net.layers.append(DatLayer("tag"))
        elif v == 2:
            net.layers.append(_details(s))
            _trailer(s, v, is_input=False)
        else:
            raise DatFormatError(f"unsupported dlib add_layer version {v} (file from a much older dlib?)")
    if s.pos != len(s.b):
        raise DatFormatError(f"{len(s.b) - s.pos} unread bytes at the end")
    return net


def expected_kinds() -> list[str]:
    """The layer sequence (input to output) that dlib writes for this network."""
    kinds = ["con_4", "affine_", "relu_", "max_pool_2"]
    for _, down in BLOCKS:
        body = ["tag", "con_4", "affine_", "relu_", "con_4", "affine_"]
        kinds += body + (["tag", "tag", "avg_pool_2"] if down else []) + ["add_prev_", "relu_"]
    return kinds + ["avg_pool_2", "fc_2"]


# --- the network ------------------------------------------------------------------------------------------------------


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b where the smaller is zero-padded at the end of C, H and W (dlib's tt::add)."""
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:
        dc, dh, dw = c - t.shape[1], h - t.shape[2], w - t.shape[3]
        return F.pad(t, (0, dw, 0, dh, 0, dc)) if dc or dh or dw else t

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        # dlib pads stride-1 convs by k//2 and stride-2 convs not at all
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, skip))


class DlibFaceResNet(nn.Module):
    """(B, 3, 150, 150) RGB in 0-255 -> (B, 128) dlib face descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, stride=2)
        blocks, cin = [], 32
        for cout, down in BLOCKS:
            blocks.append(ResBlock(cin, cout, down))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, EMBED_DIM, bias=False)
        self.threshold = 0.6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0  # (B, 3, 150, 150)
        x = F.max_pool2d(F.relu(self.conv(x)), 3, 2)  # (B, 32, 35, 35)
        x = self.blocks(x)  # (B, 256, 2, 2)
        return self.fc(x.mean(dim=(2, 3)))  # (B, 128)

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv] + [c for b in self.blocks for c in (b.conv1, b.conv2)]

    @torch.no_grad()
    def load_dat(self, net: DatNet) -> "DlibFaceResNet":
        """Fill the weights from a parsed ``.dat`` (affine layers folded into their convs)."""
        kinds = [layer.kind for layer in net.layers]
        if kinds != expected_kinds():
            raise DatFormatError("the file's layers are not dlib's face-recognition ResNet v1 layout")
        if net.input_size != (CHIP_SIZE, CHIP_SIZE):
            raise DatFormatError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} input layer, found {net.input_size}")
        self.mean.copy_(torch.tensor(net.input_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.threshold = net.threshold
        pairs = [(a, b) for a, b in zip(net.layers, net.layers[1:]) if a.kind == "con_4"]
        convs = self.convs()
        assert len(pairs) == len(convs) == 29
        for conv, (con, aff) in zip(convs, pairs):
            if aff.kind != "affine_":
                raise DatFormatError("a conv is not followed by its affine layer")
            n, k, kh, kw = con.shapes[0]
            expect = (conv.out_channels, conv.kernel_size[0], conv.kernel_size[1], *conv.stride, *conv.padding)
            if con.geom != expect or k != conv.in_channels:
                raise DatFormatError(f"conv geometry {con.geom} differs from the expected {expect}")
            w = con.params[: n * k * kh * kw].reshape(n, k, kh, kw)
            b = con.params[n * k * kh * kw :]
            gamma, beta = aff.params[:n], aff.params[n:]
            conv.weight.copy_(torch.from_numpy(w * gamma[:, None, None, None]))
            conv.bias.copy_(torch.from_numpy(b * gamma + beta))
        fc = net.layers[-1]
        n_out, n_in, bias_mode = fc.geom
        if (n_out, n_in, bias_mode) != (EMBED_DIM, 256, 1):
            raise DatFormatError(f"unexpected fc layer {fc.geom}")
        self.fc.weight.copy_(torch.from_numpy(fc.params.reshape(n_in, n_out).T.copy()))  # dlib computes x @ W
        return self


def load_dlib_resnet(path: Path | None = None) -> DlibFaceResNet:
    """dlib's ResNet with its weights, frozen and in eval mode (by default the verified package file, or a packed
    copy of it where one is given: g2g.weights.read_packed)."""
    packed = None
    if path is None:
        from g2g.weights import locate, read_packed

        packed = read_packed("dlib-resnet")
        if packed is None:
            path = locate("dlib-resnet")
    if packed is not None:
        net = DlibFaceResNet()
        net.load_state_dict({k: torch.from_numpy(v) for k, v in packed.items()}, strict=True)
        net.eval()
    else:
        net = DlibFaceResNet().load_dat(read_dat(path)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
