"""``--reference PHOTO``: replace only the faces of one person, found by dlib's face embedding.

The reference photo's largest face and every accepted face of a pose photo are
aligned to :data:`REFERENCE_ALIGN` and embedded by dlib's ResNet on ONNX Runtime
(:mod:`g2g.faces.embedder`, the network ``g2g eval`` scores identity with). A pose
face matches when its euclidean distance to the reference is below
``--reference-distance`` (0.6 by default: dlib's own same-person threshold, about
99.4% right on LFW pairs). Among the matches ``--faces`` decides: ``all`` keeps
every match, ``largest`` the closest one, ``skip-multiple`` skips a photo where
several faces match. A pose photo with no match is a skipped pair
(``no-reference-match``), not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2g.config import AlignConfig, MixConfig
from g2g.errors import G2GError
from g2g.faces.detect import MTCNN_MIN_FACE
from g2g.photos import FacePolicy, PhotoFaces, align_photo, crop_faces, detector_or_cpu, load_photo

REFERENCE_ALIGN = AlignConfig(size=160)  # the crops compared: dlib's chip and margin at 160 px
NO_MATCH = "no-reference-match"


class ReferenceFaceError(G2GError):
    """A --reference photo that cannot be used (unreadable, no face): a one-line user error."""


@dataclass
class Reference:
    """The reference person's embedding and the network that made it."""

    path: Path
    detector: Any  # g2g.faces.detect.FaceDetector, that found the reference face: the run's detector too
    embedder: Any  # g2g.faces.embedder.IdentityEmbedder
    embedding: np.ndarray  # (D,) float32
    max_distance: float
    notes: list[str]  # what the report should say about the reference photo and the detector

    def embed(self, photos: list[PhotoFaces]) -> list[np.ndarray]:
        """Each photo's distances to the reference, one per accepted face (in ``photo.crops`` order)."""
        template = np.asarray(REFERENCE_ALIGN.template())
        crops = [align_photo(p.loaded.rgb, f.landmarks, template, REFERENCE_ALIGN.size)[0]  # type: ignore[union-attr]
                 for p in photos for f, _, _ in p.crops]
        if not crops:
            return [np.zeros(0) for _ in photos]
        d = np.linalg.norm(self.embedder.embed(np.stack(crops)) - self.embedding, axis=1)
        out, i = [], 0
        for p in photos:
            out.append(d[i : i + len(p.crops)])
            i += len(p.crops)
        return out

    def select(self, photos: list[PhotoFaces], faces: str) -> list[list[float]]:
        """Keep, in each photo, the faces that match (closest first; ``faces`` as in the module docstring) and return
        their distances; a photo without a match gets the ``no-reference-match`` reason."""
        kept: list[list[float]] = []
        for p, d in zip(photos, self.embed(photos)):
            order = [k for k in np.argsort(d, kind="stable") if d[k] < self.max_distance]
            if p.reason is None and not order:
                best = f"closest face at {float(d.min()):.3f}" if len(d) else "no face"
                p.reason, p.message = NO_MATCH, (f"no face matches --reference ({best}, --reference-distance "
                                                 f"{self.max_distance:g})")
            elif p.reason is None and faces == "skip-multiple" and len(order) > 1:
                p.reason, p.message = "multiple-faces", f"{len(order)} faces match --reference"
            if p.reason is not None:
                p.crops = []
                kept.append([])
                continue
            order = order[:1] if faces in ("largest", "skip-multiple") else order
            p.crops = [p.crops[k] for k in order]
            kept.append([float(d[k]) for k in order])
        return kept


def open_reference(cfg: MixConfig) -> Reference | None:
    """The reference of ``cfg.reference`` (None without one); raises :class:`ReferenceFaceError` when its photo is
    unreadable or holds no usable face (``--min-face``, ``--min-score``)."""
    if cfg.reference is None:
        return None
    from g2g.faces.embedder import IdentityEmbedder, cached_identity_onnx
    from g2g.io.images import LoadedImage

    path = Path(cfg.reference)
    loaded = load_photo(path, cfg.max_pixels, MTCNN_MIN_FACE)
    if not isinstance(loaded, LoadedImage):
        raise ReferenceFaceError(f"--reference {path}: {loaded.reason}: {loaded.message}")
    detector, det_note = detector_or_cpu(cfg.device, cfg.min_face)
    policy = FacePolicy("largest", cfg.min_face, cfg.min_score)
    template = np.asarray(REFERENCE_ALIGN.template())
    photo = crop_faces([loaded], detector, policy, template, REFERENCE_ALIGN.size, 1)[0]
    if photo.reason is not None:
        raise ReferenceFaceError(f"--reference {path}: no usable face ({photo.reason}: {photo.message})")
    try:
        embedder = IdentityEmbedder(cached_identity_onnx("dlib", REFERENCE_ALIGN.zoom, REFERENCE_ALIGN.size),
                                    device=cfg.device)
    except G2GError:  # already one line
        raise
    except Exception as e:  # missing weights, a broken cache: one line
        raise ReferenceFaceError(f"--reference: cannot open dlib's identity network: {e}") from None
    embedding = embedder.embed(photo.crops[0][1][None])[0]
    n = sum(f.score >= policy.min_score and f.side >= policy.min_face for f in photo.faces)
    notes = [det_note] if det_note else []
    if n > 1:
        notes.append(f"--reference {path.name}: {n} faces in the photo; its largest is the person replaced")
    return Reference(path, detector, embedder, embedding, cfg.reference_distance, notes)
