"""One source photo's crops, written, and its manifest lines: what a local run and every Ray worker of
``g2g prepare`` make of a photo the photo-to-crop stage (:func:`g2g.photos.crop_faces`) has read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from g2g.config import PrepareConfig
from g2g.io.files import DISK_ERRNOS, atomic_save_image, safe_join
from g2g.io.images import SkipImage
from g2g.photos import PhotoFaces
from g2g.prepare.records import record, rounded, source_digest


def photo_records(src: Path, rel: Path, photo: PhotoFaces, cfg: PrepareConfig, stem: Path, identity: str,
                  out: Path) -> list[dict[str, Any]]:
    """The manifest lines of the photo ``src / rel`` (its crops written under ``out``, named from ``stem``), each
    with its identity and the digest of the photo read (a photo replaced later, same path new content, is redone)."""
    recs = _photo_lines(rel, photo, cfg, stem, out)
    digest = source_digest(src / rel)
    for r in recs:  # two people never share a name (a folder alice/ and a photo alice.jpg)
        r["identity"], r["source_digest"] = identity, digest
    return recs


def _photo_lines(rel: Path, photo: PhotoFaces, cfg: PrepareConfig, stem: Path, out: Path) -> list[dict[str, Any]]:
    """Manifest lines of one source photo, writing its crops."""
    from PIL import Image

    from g2g.faces.align import outside_fraction, transform_points
    from g2g.faces.landmarks import landmarks68

    loaded = photo.loaded
    if isinstance(loaded, SkipImage):
        return [record(rel, cfg, status="skipped", reason=loaded.reason, message=loaded.message)]
    w, h = loaded.size
    base: dict[str, Any] = dict(image_size=[w, h], conversions=loaded.conversions)
    if photo.reason == "detector-error":
        return [record(rel, cfg, status="skipped", reason=photo.reason, message=photo.message, **base)]
    faces = photo.faces
    base["n_faces"] = len(faces)
    base["n_accepted"] = sum(f.score >= cfg.min_score and f.side >= cfg.min_face for f in faces)
    if photo.reason is not None:
        best = max(faces, key=lambda f: f.score, default=None)
        # the best face where the policy rejected faces; none where there was none or its landmarks were degenerate
        extra = {} if best is None or photo.reason == "no-face" else \
            dict(box=rounded(best.box), landmarks=rounded(best.landmarks), score=float(best.score))
        return [record(rel, cfg, status="skipped", reason=photo.reason, message=photo.message, **base, **extra)]
    recs = []
    for k, (face, crop, M) in enumerate(photo.crops):
        name = stem.with_name(f"{stem.name}_{k}") if cfg.faces == "all" else stem
        out_rel = name.with_name(name.name + "." + cfg.fmt)  # not with_suffix: a stem may hold dots
        try:
            written = atomic_save_image(safe_join(out, out_rel), Image.fromarray(crop))
        except OSError as e:
            if e.errno in DISK_ERRNOS:  # the disk, not the photo: stop here with one line; a rerun resumes
                raise
            return [record(rel, cfg, status="skipped", reason="write-error", message=f"{type(e).__name__}: {e}", **base)]
        recs.append(record(
            rel, cfg, status="ok", face_index=k, box=rounded(face.box), landmarks=rounded(face.landmarks),
            crop_landmarks=rounded(transform_points(M, face.landmarks)),
            crop_landmarks68=rounded(landmarks68(crop, cfg.zoom)[0], 1), score=float(face.score),
            affine=M.tolist(), outside=round(outside_fraction((h, w), M, cfg.size), 4),
            output=out_rel.as_posix(), output_digest=written, **base,
        ))
    return recs
