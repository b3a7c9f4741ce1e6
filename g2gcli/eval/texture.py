"""Texture statistics of the face region, on ONNX Runtime: what ``--metric realism`` compares.

Each aligned crop is described by its face only: the region is the brows-to-chin
mask of the crop's *own* 68 landmarks (``g2g.facegeom.face_mask`` at
``REALISM_SCALE``, larger than the 1.2 a mix replaces, so a seam at the mix's mask
edge falls inside it), and outside it the crop is grey. The network (exported once
into the user cache by ``g2g.export.realism``; only that first export imports
torch) returns, for the stem and each resolution stage of dlib's face ResNet, the
per-channel mean and standard deviation of the activations inside the region.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from g2g.preprocess import DEFAULT_ZOOM, to_input
from g2g.runtime import SessionInfo, open_session, read_metadata

REALISM_SCALE = 1.35  # the face region described, x the brows-to-chin hull (mixes change 1.2x)
GRAPH_VERSION = 1  # of g2g.export.realism's graph: a new version is exported afresh into the cache


def cached_realism_onnx(zoom: float = DEFAULT_ZOOM, size: int = 128, cache_dir: Path | None = None) -> Path:
    """The texture-statistics network for (zoom, size) as ONNX, exported once into the user cache."""
    from g2g.weights import verified_sha256

    root = Path(cache_dir or os.path.join(os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "g2g"))
    path = root / f"realism-v{GRAPH_VERSION}-dlib-s{size}-z{zoom:g}-{verified_sha256('dlib-resnet')[:12]}.onnx"
    if not path.is_file():
        from g2g.export.realism import export_realism

        export_realism(path, zoom, size, verbose=False)
    return path


def face_regions(crops: np.ndarray, zoom: float) -> np.ndarray:
    """(N, S, S) float32 face regions of uint8 crops (N, S, S, 3), each from its own 68 landmarks."""
    from g2g.facegeom import face_mask
    from g2g.landmarks import landmarks68

    crops = np.asarray(crops)
    if not len(crops):
        return np.zeros((0, *crops.shape[1:3]), np.float32)
    lms = landmarks68(crops, zoom)
    return np.stack([face_mask(lm, crops.shape[1], scale=REALISM_SCALE) for lm in lms])


def greyed(crops: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """uint8 crops grey (128) outside their regions: what the network describes (for example sheets)."""
    m = np.asarray(regions, np.float32)[..., None]
    return np.clip(np.rint(crops * m + 128.0 * (1 - m)), 0, 255).astype(np.uint8)


class TextureFeatures:
    """uint8 aligned crops (N, S, S, 3) -> (N, D) texture statistics of their face regions."""

    def __init__(self, path: Path, device: str = "auto", batch_size: int = 32):
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        self.info: SessionInfo = open_session(self.path, device)
        self.size = int(self.meta.get("input_size", 0))
        self.zoom = float(self.meta.get("zoom", "nan"))
        self.dim = int(self.meta.get("feature_dim", 0))
        self.description = self.meta.get("features", "")
        self.batch_size = batch_size

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
    """:class:`TextureFeatures` for crops of ``size`` px at ``zoom`` (exported on first use)."""
    from g2g.eval.report import EvalError

    try:
        path = cached_realism_onnx(zoom=zoom, size=size)
    except Exception as e:  # no torch, missing weights: one line, not a traceback
        raise EvalError(f"cannot export the realism feature network: {type(e).__name__}: {e}") from None
    return TextureFeatures(path, device=device, batch_size=batch_size)
