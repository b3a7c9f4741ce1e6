"""Export the texture-statistics network of ``g2g eval --metric realism`` to one ONNX file.

The graph takes g2g's aligned crops (``crops``: float32 (N, 3, S, S) in [-1, 1])
and the face region to describe (``mask``: float32 (N, 1, S, S) in [0, 1]). It
greys the crop outside the region (pixel 128), resamples crop and mask to dlib's
150 px chip exactly as the identity network does (``IdentityNet.to_chip``), runs
dlib's face ResNet up to its last 4 x 4 stage, and returns ``features`` (N, 1024):
for the stem (after its max pool, 32 channels, 35 px) and for each resolution
stage (32 channels at 35 px, 64 at 17, 128 at 8, 256 at 4), the per-channel mean
and then the per-channel standard deviation of the activations inside the region
(the chip mask area-averaged onto that stage's grid, used as weights). Which
features they are travels in the file's metadata. Checked with ``onnx.checker``
and against PyTorch on ONNX Runtime before the file is kept.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2g.export.checked import ort_parity, write_checked
from g2g.faces.dlib_graph import GREY, OPSET, REALISM_DOC, STAGES, area_matrix, realism_meta
from g2g.faces.preprocess import DEFAULT_ZOOM

PARITY_TOL = 1e-3  # features are activation statistics of order 0.1-10


def _masked_stats(a: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel weighted mean and std of ``a`` (N, C, h, w) under weights ``w`` (N, 1, h, w) -> (N, C) each."""
    total = w.sum(dim=(2, 3)).clamp_min(1e-6)  # (N, 1)
    mean = (a * w).sum(dim=(2, 3)) / total
    var = (w * (a - mean[:, :, None, None]) ** 2).sum(dim=(2, 3)) / total
    return mean, torch.sqrt(var + 1e-6)


class TextureStats(nn.Module):
    """(crops (N, 3, S, S) in [-1, 1], mask (N, 1, S, S)) -> masked activation statistics (N, FEATURE_DIM)."""

    def __init__(self, identity_net: nn.Module):
        super().__init__()
        self.net = identity_net  # g2g.train.identity_net.IdentityNet("dlib"): its to_chip and backbone
        chip = int(identity_net.chip)
        for name, _, side, _ in STAGES:
            self.register_buffer(f"area_{name}", torch.from_numpy(area_matrix(side, chip)))

    def forward(self, crops: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        crops = crops * mask + GREY * (1.0 - mask)
        both = self.net.to_chip(torch.cat([crops, mask], dim=1))  # (N, 4, chip, chip): one resampling for both
        x, m = both[:, :3], both[:, 3:]
        body = self.net.backbone
        x = ((x + 1.0) * 127.5 - body.mean) / 256.0  # dlib reads RGB 0-255, minus its mean, over 256
        x = F.max_pool2d(F.relu(body.conv(x)), 3, 2)  # (N, 32, 35, 35)
        means, stds, done = [], [], 0
        for name, _, _, end in STAGES:
            for block in body.blocks[done:end]:
                x = block(x)
            done = end
            a = getattr(self, f"area_{name}")  # (side, chip)
            w = torch.matmul(torch.matmul(a, m), a.t())  # (N, 1, side, side): the chip mask's area on each cell
            mu, sd = _masked_stats(x, w)
            means.append(mu)
            stds.append(sd)
        return torch.cat([torch.cat(means, 1), torch.cat(stds, 1)], 1)


def export_realism(path: Path, zoom: float = DEFAULT_ZOOM, size: int = 128, tol: float = PARITY_TOL,
                   verbose: bool = True) -> Path:
    """Write the texture-statistics ONNX model for crops of ``size`` px aligned at ``zoom``; returns ``path``."""
    import onnx

    from g2g.train.identity_net import load_identity_net

    ident = load_identity_net("dlib", zoom)
    net = TextureStats(ident).eval()
    example = (torch.rand(2, 3, size, size) * 2 - 1, torch.rand(2, 1, size, size))
    N = torch.export.Dim("N", min=1, max=4096)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name")  # crops and mask share N on purpose
        raw = Path(tmp) / "realism.onnx"
        torch.onnx.export(
            net, example, str(raw), input_names=["crops", "mask"], output_names=["features"],
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={"crops": {0: N}, "mask": {0: N}},
        )
        model = onnx.load(str(raw))
    meta = realism_meta(zoom, size, ident.weights_sha256)
    return write_checked(model, meta, REALISM_DOC,
                         lambda data: _parity(data, net, size), tol, path, f"realism ONNX ({size} px, zoom {zoom})",
                         verbose)


def _parity(model_bytes: bytes, net: nn.Module, size: int) -> float:
    """ORT vs PyTorch on batches of 1 and 3, with a hard and a soft mask."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).float()

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
        m = torch.stack([disc, torch.rand(size, size, generator=gen), disc, torch.ones(size, size)][:n])[:, None]
        return x, m

    return ort_parity(model_bytes, net, (batch(n) for n in (1, 3)), ["crops", "mask"], "features")
