"""Similarity alignment of 5 face landmarks to a fixed template.

The transform is the least-squares similarity (rotation, uniform scale,
translation; Umeyama's closed form via scikit-image's ``SimilarityTransform``):
all 5 points count, none is dropped as an outlier, and the same landmarks always
give the same matrix. Matrices are 2x3, mapping source pixels to crop pixels,
with pixel centres at integer coordinates (OpenCV's convention), so
``invert_affine`` of a prepare affine pastes a crop back onto its photo.
"""

from __future__ import annotations

import cv2
import numpy as np

from g2g.config import AlignConfig


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity taking ``src_pts`` (N, 2) onto ``dst_pts`` (N, 2) -> (2, 3)."""
    from skimage.transform import SimilarityTransform

    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {len(src)} and {len(dst)}")
    tform = SimilarityTransform.from_estimate(src, dst)
    if not tform:  # degenerate input (all points equal)
        raise ValueError("degenerate landmarks: cannot estimate a similarity transform")
    return np.asarray(tform.params[:2], dtype=np.float64)  # (2, 3)


def transform_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points (N, 2) -> (N, 2)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ M[:, :2].T + M[:, 2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine (crop -> source for a prepare matrix)."""
    return cv2.invertAffineTransform(np.asarray(M, dtype=np.float64))


def warp_face(image: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """Crop (size, size, C) of ``image`` (H, W, C) under the source->crop affine ``M``.

    Pixels outside the photo are mirrored (``BORDER_REFLECT_101``) rather than
    black, so a face at the frame's edge does not teach a model hard black bars.
    A strong downscale (> 2x) first shrinks the photo with area averaging, which
    bilinear warping alone would alias.
    """
    M = np.asarray(M, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    if scale < 0.5:
        h, w = image.shape[:2]
        r = min(1.0, scale * 1.25)  # leave a mild downscale (0.8x) to the bilinear warp
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        rx, ry = nw / w, nh / h
        # small-image pixel centre x' maps to source x = (x' + 0.5) / rx - 0.5
        small_to_src = np.array([[1 / rx, 0, 0.5 / rx - 0.5], [0, 1 / ry, 0.5 / ry - 0.5], [0, 0, 1]])
        M = M @ small_to_src
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def outside_fraction(image_hw: tuple[int, int], M: np.ndarray, size: int) -> float:
    """Fraction of the crop that lies outside the source photo (filled by mirroring)."""
    h, w = image_hw
    step = max(1, size // 64)  # a 64x64 sample of crop pixels is plenty for a fraction
    ys, xs = np.mgrid[0:size:step, 0:size:step]
    pts = transform_points(invert_affine(M), np.stack([xs.ravel(), ys.ravel()], 1))
    inside = (pts[:, 0] >= -0.5) & (pts[:, 0] <= w - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] <= h - 0.5)
    return float(1.0 - inside.mean())


def align_face(image: np.ndarray, landmarks: np.ndarray, cfg: AlignConfig) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop (size, size, 3) and its source->crop affine (2, 3) for 5 landmarks (5, 2)."""
    M = estimate_similarity(landmarks, np.asarray(cfg.template()))
    return warp_face(image, M, cfg.size), M
