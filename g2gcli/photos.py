"""From a photo file to an aligned face crop: the one path ``g2g prepare`` and ``g2g mix`` share.

Loading with reasons (a bad file is a :class:`g2g.images.SkipImage`, never an
exception), the MTCNN detector, the face policy (``--faces``, ``--min-score``,
``--min-face``), the 5-point alignment, and the names: who a photo shows
(:func:`identity_of`) and what its output is called (:func:`output_stems`).
Torch is imported only when a detector is built.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2g.detect import MTCNN_MIN_FACE
from g2g.errors import G2GError, check_options
from g2g.images import LoadedImage, SkipImage, load_rgb


@dataclass(frozen=True)
class FacePolicy:
    """Which detected faces a photo gives: ``faces`` largest | all | skip-multiple."""

    faces: str = "largest"
    min_face: int = 20  # px, the longer side of the box
    min_score: float = 0.9

    @classmethod
    def of(cls, cfg: Any, allowed: tuple[str, ...] = ("largest", "all", "skip-multiple"),
           error: type[G2GError] = G2GError) -> "FacePolicy":
        """The policy of a PrepareConfig or MixConfig, checked (``error``, a usage error, names the flag)."""
        p = cls(cfg.faces, cfg.min_face, cfg.min_score)
        check_options([
            (p.faces in allowed, f"--faces must be one of {', '.join(allowed)}, got {p.faces!r}"),
            (0 <= p.min_score <= 1, f"--min-score must be in [0, 1], got {p.min_score}"),
            (p.min_face >= MTCNN_MIN_FACE, f"--min-face must be at least {MTCNN_MIN_FACE} px (MTCNN's window), got {p.min_face}"),
        ], error)
        return p


def identity_of(rel: str | Path) -> str:
    """``alice/1.jpg`` -> ``alice``; ``bob.jpg`` (directly in the folder) -> ``bob``."""
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 else Path(rel).stem


def output_stems(rels: list[str]) -> dict[str, str]:
    """Each relative path without its suffix; ``<stem>_<ext>`` where two files differ only in extension."""
    seen = Counter(Path(r).with_suffix("").as_posix() for r in rels)
    out = {}
    for r in rels:
        base = Path(r).with_suffix("").as_posix()
        out[r] = base if seen[base] == 1 else f"{base}_{Path(r).suffix.lstrip('.').lower()}"
    return out


def load_photo(path: Path, max_pixels: int, min_side: int) -> LoadedImage | SkipImage:
    """The decoded photo, or the reason it cannot be used (never raises: one file never stops a batch)."""
    try:
        return load_rgb(path, max_pixels=max_pixels, min_side=min_side)
    except SkipImage as e:
        return e
    except Exception as e:
        return SkipImage("unreadable", f"{type(e).__name__}: {e}")


def open_detector(device: str, min_face: int) -> Any:
    """MTCNN searching faces down to half of ``min_face``, so that smaller ones are reported as face-too-small
    rather than no-face. Raises ValueError for a device torch cannot use."""
    from g2g.detect import FaceDetector

    return FaceDetector(device, min_face=max(MTCNN_MIN_FACE, min_face // 2))


def select_faces(faces: list, policy: FacePolicy) -> tuple[list, str | None, str | None]:
    """Apply the face policy -> (accepted by decreasing box area, reason, message).

    With ``largest`` and ``skip-multiple`` one face is kept. A rejection names the most specific reason.
    """
    if not faces:
        return [], "no-face", "MTCNN found no face"
    scored = [f for f in faces if f.score >= policy.min_score]
    if not scored:
        best = max(f.score for f in faces)
        return [], "low-score", f"{len(faces)} face(s), best score {best:.3f} < min_score {policy.min_score}"
    accepted = sorted((f for f in scored if f.side >= policy.min_face), key=lambda f: -f.area)
    if not accepted:
        big = max(f.side for f in scored)
        return [], "face-too-small", f"largest confident face {big:.1f} px < min_face {policy.min_face}"
    if policy.faces == "skip-multiple" and len(accepted) > 1:
        return [], "multiple-faces", f"{len(accepted)} faces pass min_score and min_face"
    return (accepted[:1] if policy.faces in ("largest", "skip-multiple") else accepted), None, None


def align_photo(rgb: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(crop (size, size, 3) uint8, M (2, 3) photo -> crop) from a face's 5 points; ValueError if degenerate."""
    from g2g.align import estimate_similarity, warp_face

    M = estimate_similarity(landmarks, template)
    return warp_face(rgb, M, size), np.asarray(M, dtype=np.float64)
