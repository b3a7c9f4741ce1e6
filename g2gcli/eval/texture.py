"""Texture statistics of the face region, on ONNX Runtime: what ``--metric realism`` compares.

Each aligned crop is described by its face only: the region is the brows-to-chin
mask of the crop's *own* 68 landmarks (``g2g.faces.geometry.face_mask`` at
``REALISM_SCALE``, larger than the 1.2 a mix replaces, so a seam at the mix's mask
edge falls inside it), and outside it the crop is grey. The network (built once
into the user cache from dlib's weights by ``g2g.faces.dlib_graph``, without
torch; ``g2g.export.texture_onnx`` is its PyTorch reference) returns, for the stem and
each resolution stage of dlib's face ResNet, the per-channel mean and standard
deviation of the activations inside the region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from g2g.faces.preprocess import DEFAULT_ZOOM, to_input
from g2g.runtime import CropNetwork

REALISM_SCALE = 1.35  # the face region described, x the brows-to-chin hull (mixes change 1.2x)
GRAPH_VERSION = 2  # of the realism graph in the cache (1: PyTorch exports); a new version is built afresh


def cached_realism_onnx(zoom: float = DEFAULT_ZOOM, size: int = 128, cache_dir: Path | None = None) -> Path:
    """The texture-statistics network for (zoom, size) as ONNX, built once into the user cache from dlib's weights
    with numpy (g2g.faces.dlib_graph, no torch) and checked against its ``.sha256`` sidecar on every later call (a
    damaged file is rebuilt)."""
    from g2g.faces.dlib_graph import checked_bytes, realism_model
    from g2g.io.cache import cache_root, cached_file
    from g2g.weights import verified_sha256

    name = f"realism-v{GRAPH_VERSION}-dlib-s{size}-z{zoom:g}-{verified_sha256('dlib-resnet')[:12]}.onnx"
    return cached_file(cache_root(cache_dir) / name, lambda: checked_bytes(realism_model(zoom, size)))


def face_regions(crops: np.ndarray, zoom: float) -> np.ndarray:
    """(N, S, S) float32 face regions of uint8 crops (N, S, S, 3), each from its own 68 landmarks."""
    from g2g.faces.geometry import face_mask
    from g2g.faces.landmarks import landmarks68

    crops = np.asarray(crops)
    if not len(crops):
        return np.zeros((0, *crops.shape[1:3]), np.float32)
    lms = landmarks68(crops, zoom)
    return np.stack([face_mask(lm, crops.shape[1], scale=REALISM_SCALE) for lm in lms])


def greyed(crops: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """uint8 crops grey (128) outside their regions: what the network describes (for example sheets)."""
    m = np.asarray(regions, np.float32)[..., None]
    return np.clip(np.rint(crops * m + 128.0 * (1 - m)), 0, 255).astype(np.uint8)


class TextureFeatures(CropNetwork):
    """uint8 aligned crops (N, S, S, 3) -> (N, D) texture statistics of their face regions."""

    def __init__(self, path: Path, device: str = "auto", batch_size: int = 32):
        super().__init__(path, device, batch_size)
        self.dim = int(self.meta.get("feature_dim", 0))
        self.description = self.meta.get("features", "")

    def __call__(self, crops: np.ndarray, regions: np.ndarray | None = None) -> np.ndarray:
        """Features of ``crops``; ``regions`` (N, S, S) default to :func:`face_regions` of the crops."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected crops (N, {self.size}, {self.size}, 3), got {crops.shape}")
        if regions is None:
            regions = face_regions(crops, self.zoom)
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = to_input(crops[i : i + self.batch_size])  # (B, 3, S, S)
            m = np.ascontiguousarray(regions[i : i + self.batch_size, None], np.float32)  # (B, 1, S, S)
            out.append(self.info.session.run(["features"], {"crops": x, "mask": m})[0])
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def open_texture_features(size: int, zoom: float, device: str, batch_size: int) -> TextureFeatures:
    """:class:`TextureFeatures` for crops of ``size`` px at ``zoom`` (built on first use)."""
    from g2g.eval.report import EvalError

    try:
        path = cached_realism_onnx(zoom=zoom, size=size)
    except Exception as e:  # missing or damaged weights, a full disk: one line, not a traceback
        raise EvalError(f"cannot build the realism feature network: {type(e).__name__}: {e}") from None
    return TextureFeatures(path, device=device, batch_size=batch_size)
