"""Paste an aligned crop back into its photo with a feathered mask.

The crop came out of the photo through a source->crop affine ``M`` (from
alignment); pasting samples the crop at ``M(x, y)`` for every photo pixel
(``cv2.warpAffine`` with ``WARP_INVERSE_MAP``: the inverse mapping, no matrix
inversion) and blends it in with the same warp of a soft mask, 1 inside the
crop and falling to 0 over ``feather`` x crop size at its border, so no seam
shows. Only the photo's region under the crop is touched (large photos stay
cheap).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from g2g.faces.align import invert_affine, transform_points


@lru_cache(maxsize=8)
def feather_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) float32 mask: 1 in the middle, a smooth ramp to 0 over ``feather * size`` px at the edges."""
    width = max(feather * size, 1e-6)
    c = np.arange(size, dtype=np.float32)
    edge = np.minimum(c + 0.5, size - 0.5 - c)  # distance of each pixel centre to the nearest border
    ramp = np.clip(edge / width, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible kink where the ramp ends
    mask = np.minimum(ramp[:, None], ramp[None, :])
    mask.setflags(write=False)
    return mask


def crop_region(M: np.ndarray, size: int, hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) of the photo covered by the crop, clipped; None if off-photo."""
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    pts = transform_points(invert_affine(M), corners)
    h, w = hw
    x0, y0 = max(0, int(np.floor(pts[:, 0].min()))), max(0, int(np.floor(pts[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max())) + 1), min(h, int(np.ceil(pts[:, 1].max())) + 1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste_back(photo: np.ndarray, crop: np.ndarray, M: np.ndarray, feather: float = 0.1,
               mask: np.ndarray | None = None) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 with ``crop`` (S, S, 3) uint8 blended in where ``M`` (photo->crop, 2x3) took it from.

    ``mask`` (S, S) in [0, 1] is what the crop changed (a method's face mask); by
    default the whole crop, feathered at its border.
    """
    M = np.asarray(M, dtype=np.float64)
    size = crop.shape[0]
    out = photo.copy()
    box = crop_region(M, size, photo.shape[:2])
    if box is None:
        return out
    x0, y0, x1, y1 = box
    Mr = M.copy()
    Mr[:, 2] += M[:, :2] @ np.array([x0, y0], dtype=np.float64)  # ROI pixel (u, v) = photo pixel (u + x0, v + y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    dsize = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(crop, Mr, dsize, flags=flags, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    soft = feather_mask(size, float(feather)) if mask is None else np.minimum(mask.astype(np.float32),
                                                                             feather_mask(size, float(feather)))
    alpha = cv2.warpAffine(soft, Mr, dsize, flags=flags,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]  # (h, w, 1)
    roi = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(roi + alpha * (face - roi)), 0, 255).astype(np.uint8)
    return out
