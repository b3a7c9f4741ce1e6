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

The ``.dat`` reader and the folding live in ``g2g.faces.dlib_dat`` (torch-free, shared
with the inference install's ONNX builder); this module only holds the PyTorch network.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2g.faces.dlib_dat import (
    BLOCKS,
    CHIP_SIZE,
    DLIB_THRESHOLD,
    EMBED_DIM,
    DatFormatError,
    DatLayer,
    DatNet,
    dlib_state,
    expected_kinds,
    fold_dat,
    read_dat,
)

# the reader's names stay importable from here, where they were first defined
__all__ = ["BLOCKS", "CHIP_SIZE", "EMBED_DIM", "DatFormatError", "DatLayer", "DatNet", "DlibFaceResNet", "ResBlock",
           "expected_kinds", "load_dlib_resnet", "read_dat"]


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
        self.threshold = DLIB_THRESHOLD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / 256.0  # (B, 3, 150, 150)
        x = F.max_pool2d(F.relu(self.conv(x)), 3, 2)  # (B, 32, 35, 35)
        x = self.blocks(x)  # (B, 256, 2, 2)
        return self.fc(x.mean(dim=(2, 3)))  # (B, 128)

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv] + [c for b in self.blocks for c in (b.conv1, b.conv2)]

    @torch.no_grad()
    def load_state(self, state: dict) -> "DlibFaceResNet":
        """Fill the weights from a numpy state dict such as :func:`g2g.faces.dlib_dat.dlib_state` (copied bit for
        bit)."""
        self.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        self.threshold = getattr(state, "threshold", DLIB_THRESHOLD)
        return self

    def load_dat(self, net: DatNet) -> "DlibFaceResNet":
        """Fill the weights from a parsed ``.dat`` (affine layers folded into their convs)."""
        return self.load_state(fold_dat(net))


def load_dlib_resnet(path: Path | None = None) -> DlibFaceResNet:
    """dlib's ResNet with its weights, frozen and in eval mode (by default the verified package file, or a packed
    copy of it where one is given: g2g.weights.read_packed)."""
    net = DlibFaceResNet().load_state(dlib_state(path)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
