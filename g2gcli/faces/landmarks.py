"""68-point face landmarks of aligned crops (dlib's shape predictor, iBUG 300-W order).

MTCNN's 5 points align a face; these 68 points describe its shape and
expression: the face mask, the warp of an identity photo onto a pose and the
expression metric all start here. A crop is already aligned to a fixed template,
so the predictor is given a fixed box (where dlib's own detector puts the face in
a g2g crop, measured on CelebA crops at zoom 1.3) instead of running a detector:
no face is ever "not found", and the cost is about 1 ms a crop. Torch-free.

Point groups (0-based): jaw 0-16, brows 17-21 and 22-26 (image-left, image-right),
nose 27-35, eyes 36-41 and 42-47, outer lips 48-59, inner lips 60-67.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from g2g.weights import locate

JAW, BROWS, NOSE = slice(0, 17), slice(17, 27), slice(27, 36)
BROW_L, BROW_R = slice(17, 22), slice(22, 27)
EYE_L, EYE_R, MOUTH, INNER_LIPS = slice(36, 42), slice(42, 48), slice(48, 68), slice(60, 68)
EYES_AND_BROWS = ((EYE_L, BROW_L), (EYE_R, BROW_R))  # each eye with the brow above it
MEASURED_ZOOM = 1.3  # the zoom of the crops BOX_AT_ZOOM_1_3 was measured on
# dlib's frontal detector box in a crop at zoom 1.3, as fractions of the crop side (mean of 195 CelebA crops)
BOX_AT_ZOOM_1_3 = (0.119, 0.107, 0.835, 0.822)
# A horizontal flip maps point i to FLIP_68[i] (the iBUG mirror order)
FLIP_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


@lru_cache(maxsize=1)
def _predictor():
    import dlib  # dlib-bin: a compiled wheel, no torch

    return dlib.shape_predictor(str(locate("dlib-shape68")))


def crop_box(size: int, zoom: float) -> tuple[int, int, int, int]:
    """The face box (left, top, right, bottom) the predictor is given in a ``size`` px crop at ``zoom``."""
    c, k = size / 2, MEASURED_ZOOM / zoom  # a larger zoom shows more around the face: the face box shrinks
    x0, y0, x1, y1 = ((v * size - c) * k + c for v in BOX_AT_ZOOM_1_3)
    return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def landmarks68(crops: np.ndarray, zoom: float) -> np.ndarray:
    """uint8 RGB aligned crops (N, S, S, 3) -> (N, 68, 2) float32 pixel coordinates (x, y)."""
    import dlib

    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    pred = _predictor()
    rect = dlib.rectangle(*crop_box(crops.shape[1], zoom))
    out = np.empty((len(crops), 68, 2), np.float32)
    for i, crop in enumerate(crops):
        shape = pred(np.ascontiguousarray(crop, dtype=np.uint8), rect)
        out[i] = [(p.x, p.y) for p in shape.parts()]
    return out


def flip68(lm: np.ndarray, size: int) -> np.ndarray:
    """Landmarks (..., 68, 2) of the horizontally mirrored crop."""
    out = lm[..., FLIP_68, :].copy()
    out[..., 0] = size - 1 - out[..., 0]
    return out


def interocular68(lm: np.ndarray) -> np.ndarray:
    """Distance between the eye centres (...,) of 68-point landmarks (..., 68, 2)."""
    return np.linalg.norm(lm[..., EYE_R, :].mean(-2) - lm[..., EYE_L, :].mean(-2), axis=-1)


def mouth_opening(lm: np.ndarray) -> np.ndarray:
    """Inner-lip gap (...,) in px: the mean of the three vertical pairs 61-67, 62-66, 63-65."""
    inner = np.asarray(lm, np.float64)[..., INNER_LIPS, :]
    return np.mean(inner[..., [5, 6, 7], 1] - inner[..., [3, 2, 1], 1], axis=-1)


def shape_distances(lms: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(N,) distance of each landmark set in ``lms`` (N, 68, 2) to ``lm`` (68, 2), each centred and over its IOD."""
    def norm(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(-2, keepdims=True)) / interocular68(x)[..., None, None]

    return np.abs(norm(lms) - norm(lm)[None]).mean(axis=(1, 2))


def closest_shape(lms: np.ndarray, lm: np.ndarray) -> int:
    """Index of the landmark set in ``lms`` (N, 68, 2) closest to ``lm`` (68, 2) (:func:`shape_distances`):
    the identity photo whose pose and expression best match a pose (g2g mix and the training sampler)."""
    return int(np.argmin(shape_distances(lms, lm)))
