"""dlib's face-recognition ResNet weights, read from dlib's own ``.dat`` file with numpy alone.

The inference install builds the identity and realism networks from these weights
(``g2g.faces.dlib_graph``) and the training install fills its PyTorch port from
them (``g2g.train.dlib_resnet``); both read them here, so that neither needs the
other's dependencies and the folding is written once. Torch-free.

The ``.dat`` reader follows dlib's serialisation (dlib/serialize.h, dlib/dnn/core.h,
layers.h, input.h): integers are a control byte (low nibble: byte count, 0x80:
negative) and little-endian bytes; floats are an integer mantissa then an integer
exponent (m * 2**e); bools are '0'/'1'; strings are a length then bytes; tensors are
a version, 4 dims and float32 little-endian data (version 2) or one float each
(version 1). A network is written outermost first (loss, then every layer's
version), then the input layer, then each layer's details from the input outwards.

:func:`dlib_state` folds each affine layer (dlib's frozen batch norm) into the conv
before it and returns the weights keyed as ``DlibFaceResNet().state_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from g2g.errors import G2GError

CHIP_SIZE = 150  # dlib's face chip side, px
EMBED_DIM = 128
DLIB_THRESHOLD = 0.6  # dlib's same-person distance; a packed copy does not carry the file's own

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
    """Parse a dlib metric-learning network file into its layers (input to output); a damaged or foreign file is a
    one-line DatFormatError naming it."""
    try:
        return _parse(_Stream(Path(path).read_bytes()))
    except DatFormatError as e:
        raise DatFormatError(f"{path}: {e}") from None


def _parse(s: _Stream) -> DatNet:
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


# --- the folded weights -----------------------------------------------------------------------------------------------


class DlibState(dict):
    """``{state-dict key: float32 array}`` of ``DlibFaceResNet``, with dlib's same-person threshold beside it."""

    threshold: float = DLIB_THRESHOLD


@dataclass(frozen=True)
class ConvSpec:
    key: str  # state-dict prefix: conv, blocks.{i}.conv1, blocks.{i}.conv2
    cin: int
    geom: tuple[int, ...]  # as dlib writes it: filters, nr, nc, stride_y, stride_x, pad_y, pad_x


def conv_specs() -> list[ConvSpec]:
    """The 29 convs, input to output (dlib pads stride-1 convs by k//2 and stride-2 convs not at all)."""
    specs, cin = [ConvSpec("conv", 3, (32, 7, 7, 2, 2, 0, 0))], 32
    for i, (cout, down) in enumerate(BLOCKS):
        s, p = (2, 0) if down else (1, 1)
        specs.append(ConvSpec(f"blocks.{i}.conv1", cin, (cout, 3, 3, s, s, p, p)))
        specs.append(ConvSpec(f"blocks.{i}.conv2", cout, (cout, 3, 3, 1, 1, 1, 1)))
        cin = cout
    return specs


def state_shapes() -> dict[str, tuple[int, ...]]:
    """The shape of every state-dict entry, in ``DlibFaceResNet().state_dict()`` order."""
    shapes: dict[str, tuple[int, ...]] = {"mean": (1, 3, 1, 1)}
    for spec in conv_specs():
        n, kh, kw = spec.geom[:3]
        shapes[f"{spec.key}.weight"], shapes[f"{spec.key}.bias"] = (n, spec.cin, kh, kw), (n,)
    shapes["fc.weight"] = (EMBED_DIM, 256)
    return shapes


def fold_dat(net: DatNet) -> DlibState:
    """The state dict of a parsed ``.dat`` (affine layers folded into their convs), checked against the layout."""
    if [layer.kind for layer in net.layers] != expected_kinds():
        raise DatFormatError("the file's layers are not dlib's face-recognition ResNet v1 layout")
    if net.input_size != (CHIP_SIZE, CHIP_SIZE):
        raise DatFormatError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} input layer, found {net.input_size}")
    state = DlibState(mean=np.array(net.input_mean, dtype=np.float32).reshape(1, 3, 1, 1))
    state.threshold = net.threshold
    pairs = [(a, b) for a, b in zip(net.layers, net.layers[1:]) if a.kind == "con_4"]
    for spec, (con, aff) in zip(conv_specs(), pairs, strict=True):
        if aff.kind != "affine_":
            raise DatFormatError("a conv is not followed by its affine layer")
        n, k, kh, kw = con.shapes[0]
        if con.geom != spec.geom or k != spec.cin:
            raise DatFormatError(f"conv geometry {con.geom} differs from the expected {spec.geom}")
        w = con.params[: n * k * kh * kw].reshape(n, k, kh, kw)
        b = con.params[n * k * kh * kw :]
        gamma, beta = aff.params[:n], aff.params[n:]
        state[f"{spec.key}.weight"] = w * gamma[:, None, None, None]
        state[f"{spec.key}.bias"] = b * gamma + beta
    fc = net.layers[-1]
    n_out, n_in, bias_mode = fc.geom
    if (n_out, n_in, bias_mode) != (EMBED_DIM, 256, 1):
        raise DatFormatError(f"unexpected fc layer {fc.geom}")
    state["fc.weight"] = np.ascontiguousarray(fc.params.reshape(n_in, n_out).T)  # dlib computes x @ W
    return state


def check_state(state: dict, source: str) -> None:
    """Every entry of ``DlibFaceResNet().state_dict()`` with its shape, and nothing else."""
    shapes = state_shapes()
    if set(state) != set(shapes):
        odd = sorted(set(state) ^ set(shapes))
        raise DatFormatError(f"{source}: not dlib's ResNet state ({len(odd)} keys differ, e.g. {odd[0]!r})")
    for key, shape in shapes.items():
        if tuple(np.shape(state[key])) != shape:
            raise DatFormatError(f"{source}: {key} has shape {tuple(np.shape(state[key]))}, expected {shape}")


def dlib_state(path: Path | None = None) -> DlibState:
    """dlib's ResNet weights keyed as ``DlibFaceResNet().state_dict()``: from ``path`` when given, else from the
    packed copy where one is (g2g.weights.read_packed), else from the verified package file."""
    if path is None:
        from g2g.weights import locate, read_packed

        packed = read_packed("dlib-resnet")
        if packed is not None:
            check_state(packed, "the packed dlib-resnet copy")
            return DlibState({k: np.asarray(v, np.float32) for k, v in packed.items()})
        path = locate("dlib-resnet")
    net = read_dat(path)
    try:
        return fold_dat(net)
    except DatFormatError as e:
        raise DatFormatError(f"{path}: {e}") from None
