"""From a photo file to an aligned face crop: the one path ``g2g prepare`` and ``g2g mix`` share.

Loading with reasons (a bad file is a :class:`g2g.io.images.SkipImage`, never an
exception), the MTCNN detector, the face policy (``--faces``, ``--min-score``,
``--min-face``), the 5-point alignment, and the names: who a photo shows
(:func:`identity_of`) and what its output is called (:func:`output_stems`).
Torch is imported only when a detector is built.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from g2g.faces.detect import MTCNN_MIN_FACE
from g2g.errors import G2GError, check_options
from g2g.io.images import LoadedImage, SkipImage, load_rgb


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


def identity_names(rels: list[str]) -> dict[str, str]:
    """Each source's identity (:func:`identity_of`), made injective: a flat photo whose stem is also a folder's name
    or another flat photo's stem is its own identity under its file name (``alice.jpg``), never merged with them;
    names that differ only in case are told apart as :func:`unique_names` does."""
    folders = {identity_of(r).casefold() for r in rels if len(Path(r).parts) > 1}
    flat = Counter(Path(r).stem.casefold() for r in rels if len(Path(r).parts) == 1)
    raw = {r: (Path(r).name if len(Path(r).parts) == 1 and (Path(r).stem.casefold() in folders
                                                              or flat[Path(r).stem.casefold()] > 1) else identity_of(r))
           for r in rels}
    unique = unique_names({name: name for name in raw.values()})
    return {r: unique[name] for r, name in raw.items()}


def unique_names(names: dict[str, str]) -> dict[str, str]:
    """``key -> name`` made injective, also where the file system ignores case: each of the keys that share a name
    (casefolded) gets ``name~<8 hex digits of its key's sha256>``, so two inputs never write one output, and the
    same inputs always get the same names."""
    while True:
        count = Counter(n.casefold() for n in names.values())
        if all(c == 1 for c in count.values()):
            return names
        names = {k: n if count[n.casefold()] == 1 else f"{n}~{hashlib.sha256(k.encode()).hexdigest()[:8]}"
                 for k, n in names.items()}


def output_stems(rels: list[str]) -> dict[str, str]:
    """Each relative path without its suffix; ``<stem>_<ext>`` where two files differ only in extension; unique
    (:func:`unique_names`)."""
    seen = Counter(Path(r).with_suffix("").as_posix() for r in rels)
    out = {}
    for r in rels:
        base = Path(r).with_suffix("").as_posix()
        out[r] = base if seen[base] == 1 else f"{base}_{Path(r).suffix.lstrip('.').lower()}"
    return unique_names(out)


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
    rather than no-face. Raises DeviceError for a device string that is not auto, cpu or cuda[:N]."""
    from g2g.faces.detect import FaceDetector

    return FaceDetector(device, min_face=max(MTCNN_MIN_FACE, min_face // 2))


def detector_or_cpu(device: str, min_face: int) -> tuple[Any, str | None]:
    """(:func:`open_detector` on ``device``, None), or with the reason it runs on the CPU where CUDA was asked
    for and cannot be used (ONNX Runtime falls back to the CPU)."""
    from g2g.runtime import parse_device

    detector = open_detector(device, min_face)
    asked = parse_device(device)[0] == "cuda"
    return detector, (f"face detector on the CPU: {detector.note}" if asked and detector.note else None)


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
    from g2g.faces.align import estimate_similarity, warp_face

    M = estimate_similarity(landmarks, template)
    return warp_face(rgb, M, size), np.asarray(M, dtype=np.float64)


@dataclass
class PhotoFaces:
    """What the photo-to-crop stage made of one photo: its accepted faces aligned, or why there are none."""

    loaded: LoadedImage | SkipImage
    faces: list = field(default_factory=list)  # every detection (g2g.faces.detect.Face)
    crops: list[tuple[Any, np.ndarray, np.ndarray]] = field(default_factory=list)  # (face, crop, M photo -> crop)
    reason: str | None = None  # a skip reason of g2g.io.images.REASONS
    message: str = ""


def crop_faces(loaded: list[LoadedImage | SkipImage], detector: Any, policy: FacePolicy, template: np.ndarray,
               size: int, batch_size: int, pool: Any = None, seconds: Counter | None = None) -> list[PhotoFaces]:
    """The photo-to-crop stage of prepare and mix: detect faces in batches of ``batch_size`` photos, apply the face
    policy, align every accepted face (in ``pool``'s threads when given). ``seconds`` collects detect/align time."""
    from g2g.faces.detect import DetectorError

    seconds = Counter() if seconds is None else seconds
    out = [PhotoFaces(im) for im in loaded]
    for r in out:
        if isinstance(r.loaded, SkipImage):
            r.reason, r.message = r.loaded.reason, r.loaded.message
    ok = [i for i, r in enumerate(out) if r.reason is None]
    t = time.perf_counter()
    found: list[Any] = []
    for j in range(0, len(ok), batch_size):
        found += detector.detect_batch([out[i].loaded.rgb for i in ok[j : j + batch_size]])  # type: ignore[union-attr]
    seconds["detect"] += time.perf_counter() - t
    t = time.perf_counter()
    jobs = []
    for i, faces in zip(ok, found):
        if isinstance(faces, DetectorError):
            out[i].reason, out[i].message = "detector-error", str(faces)
            continue
        out[i].faces = faces or []
        chosen, reason, message = select_faces(out[i].faces, policy)
        if reason is not None:
            out[i].reason, out[i].message = reason, message or ""
            continue
        job = (out[i], chosen, template, size)
        jobs.append(pool.submit(_align_all, *job) if pool is not None else _align_all(*job))
    for j in jobs:
        if pool is not None:
            j.result()
    seconds["align"] += time.perf_counter() - t
    return out


def _align_all(photo: PhotoFaces, chosen: list, template: np.ndarray, size: int) -> None:
    """Align each chosen face; degenerate landmarks make the whole photo a ``no-face`` skip."""
    try:
        crops = [(f, *align_photo(photo.loaded.rgb, f.landmarks, template, size)) for f in chosen]  # type: ignore[union-attr]
    except ValueError as e:
        photo.reason, photo.message = "no-face", f"degenerate landmarks ({e})"
        return
    photo.crops = crops


AUTO_SIDES = (128, 512)  # the crop side --size auto picks from (a multiple of 32 in this range)


def native_side(landmarks: np.ndarray, template: np.ndarray, size: int) -> float:
    """The crop side at which a face with photo landmarks ``landmarks`` (5, 2) keeps the photo's own resolution
    (one crop pixel per photo pixel), for a ``template`` of crops of ``size`` px."""
    from g2g.faces.align import estimate_similarity

    M = estimate_similarity(landmarks, template)
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))  # crop px per photo px
    return size / max(scale, 1e-6)


def auto_side(sides: list[float]) -> int:
    """The one crop side of a run from its faces' native sides: the median, rounded up to 32 px, within
    AUTO_SIDES (a face pasted back at a lower resolution than the photo around it looks soft)."""
    lo, hi = AUTO_SIDES
    if not sides:
        return lo
    s = float(np.median(sides))
    return int(min(hi, max(lo, 32 * int(np.ceil(s / 32)))))


def native_sides(root: Path, rels: list[str], cfg: Any, template: np.ndarray, size: int, limit: int = 16
                 ) -> list[float]:
    """Native crop sides (:func:`native_side`) of the faces in the first ``limit`` usable photos of ``rels``
    (``cfg``: a MixConfig, for its face policy and device; with ``cfg.aligned`` the crops' own sides)."""
    from PIL import Image

    sides: list[float] = []
    if cfg.aligned:
        for rel in rels[:limit]:
            try:
                with Image.open(root / rel) as im:
                    sides.append(float(min(im.size)))
            except Exception:  # an unreadable crop is reported by the run itself
                continue
        return sides
    photos = [p for p in (load_photo(root / r, cfg.max_pixels, MTCNN_MIN_FACE) for r in rels[:limit])
              if not isinstance(p, SkipImage)]
    return photo_sides([p.rgb for p in photos], cfg, template, size)


def photo_sides(rgbs: list[np.ndarray], cfg: Any, template: np.ndarray, size: int, detector: Any = None
                ) -> list[float]:
    """:func:`native_sides` of photos already in memory (RGB arrays; the caller picks which), with ``detector``
    when one is open."""
    if cfg.aligned:
        return [float(min(rgb.shape[:2])) for rgb in rgbs]
    sides: list[float] = []
    if not rgbs:
        return sides
    detector = detector if detector is not None else detector_or_cpu(cfg.device, cfg.min_face)[0]
    policy = FacePolicy(cfg.faces if cfg.faces != "all" else "largest", cfg.min_face, cfg.min_score)
    for found in detector.detect_batch(rgbs):
        if isinstance(found, Exception):
            continue
        chosen, _, _ = select_faces(found or [], policy)
        sides += [native_side(f.landmarks, template, size) for f in chosen[:1]]
    return sides
