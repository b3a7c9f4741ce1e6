"""What a crop goes through between a file and a network, in one place (torch-free).

Training, export, ``g2g mix`` and ``g2g eval`` all call these, so a crop reaches
every network as the same tensor (timm's lesson: preprocessing travels with the
model). The bundle records ``NORMALISATION`` in its metadata and refuses one it
does not know; ``DEFAULT_ZOOM`` is the alignment every default crop is made at.
"""

from __future__ import annotations

import numpy as np

from g2g.errors import G2GError

DEFAULT_ZOOM = 1.3  # crops cover 1.3 x dlib's 150 px face chip: forehead, chin, some hair
NORMALISATION = {"mean": 0.5, "std": 0.5, "range": [-1, 1], "channels": "RGB"}  # x = (pixel / 255 - 0.5) / 0.5
ZOOM_TOLERANCE = 1e-6


class PreprocessError(G2GError):
    """Crops or a model made with other preprocessing than the one asked for (one-line message)."""


def resize_to_model(crop: np.ndarray, size: int) -> np.ndarray:
    """An aligned uint8 crop (S', S', 3) at the model's side ``size``: area-averaged down, bicubic up."""
    import cv2

    h = crop.shape[0]
    if crop.shape[:2] == (size, size):
        return crop
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_CUBIC)


def to_input(crops: np.ndarray) -> np.ndarray:
    """uint8 RGB crops (N, S, S, 3) -> float32 (N, 3, S, S) in [-1, 1] (pixel / 127.5 - 1)."""
    return np.ascontiguousarray(np.asarray(crops).transpose(0, 3, 1, 2), dtype=np.float32) / 127.5 - 1.0


def to_image(x: np.ndarray) -> np.ndarray:
    """float (N, 3, S, S) in [-1, 1] -> uint8 RGB (N, S, S, 3)."""
    return np.clip(np.rint((x.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def same_zoom(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) <= ZOOM_TOLERANCE


def check_zoom(found: float | None, expected: float, what: str, error: type[G2GError] = PreprocessError) -> None:
    """Refuse crops aligned at another zoom (they frame the face differently); ``found=None``: not recorded."""
    if found is not None and not same_zoom(found, expected):
        raise error(f"{what} uses zoom {found} but the model was trained at zoom {expected}: "
                    f"prepare with --zoom {expected}")


def check_normalisation(meta_value: object, where: str, error: type[G2GError] = PreprocessError) -> None:
    """A bundle's recorded normalisation must be g2g's (bundles from before it was recorded have none)."""
    if meta_value is not None and meta_value != NORMALISATION:
        raise error(f"{where}: the model expects normalisation {meta_value}, g2g feeds {NORMALISATION}")
