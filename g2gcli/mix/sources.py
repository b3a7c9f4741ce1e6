"""Pose and identity photos -> aligned crops at the method's size, through the photo-to-crop stage of
:mod:`g2g.photos` (or, with ``--aligned``, crops taken as they are).

A pose photo gives one face (``--faces largest``/``skip-multiple``) or every accepted
face (``--faces all``), and with ``--reference`` only the faces of that person
(:mod:`g2g.mix.reference`); an identity photo always gives one face, its largest."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from g2g.config import MIX_FACE_POLICIES, MixConfig
from g2g.faces.detect import MTCNN_MIN_FACE
from g2g.io.images import LoadedImage, SkipImage, multi_page_note
from g2g.methods.base import Mixer
from g2g.mix.reference import Reference
from g2g.photos import FacePolicy, PhotoFaces, crop_faces, detector_or_cpu, load_photo
from g2g.faces.preprocess import resize_to_model


@dataclass
class FaceCrop:
    """One face of a photo, aligned."""

    crop: np.ndarray  # (S, S, 3) uint8
    affine: list | None = None  # 2x3 photo -> crop; None for --aligned input
    box: list[float] | None = None  # x1, y1, x2, y2 in the photo; None for --aligned input
    distance: float | None = None  # to the --reference face
    crop_rel: str | None = None  # where the crop is kept, relative to OUT


@dataclass
class Source:
    """One photo after loading and alignment: its faces to mix (the main one first), or why there are none."""

    rel: str  # relative to its root (POSES or IDS)
    faces: list[FaceCrop] = field(default_factory=list)
    photo: np.ndarray | None = None  # (H, W, 3) uint8, kept for paste-back only
    reason: str | None = None
    message: str = ""

    @property
    def crop(self) -> np.ndarray | None:
        """The main face's crop (an identity photo has one face)."""
        return self.faces[0].crop if self.faces else None

    @property
    def affine(self) -> list | None:
        return self.faces[0].affine if self.faces else None

    @property
    def crop_rel(self) -> str | None:
        return self.faces[0].crop_rel if self.faces else None


class Aligner:
    """Photos -> aligned crops at the mixer's size (MTCNN + 5-point similarity), or -> resized crops (--aligned)."""

    def __init__(self, cfg: MixConfig, mixer: Mixer, pool: ThreadPoolExecutor, reference: Reference | None = None):
        self.cfg, self.pool, self.reference = cfg, pool, reference
        self.size = mixer.align.size
        self.template = np.asarray(mixer.align.template())
        self.policy = FacePolicy.of(cfg, MIX_FACE_POLICIES)
        # a reference picks among every accepted face; an identity photo gives its largest face
        self.pose_policy = replace(self.policy, faces="all") if reference is not None else self.policy
        self.id_policy = replace(self.policy, faces="largest") if self.policy.faces == "all" else self.policy
        self.detector = reference.detector if reference is not None else None
        self.seconds: Counter = Counter()
        self.notes: list[str] = []
        self.pages: list[int] = []  # of the multi-page files read (only their first page is used)
        self.multi_face_ids = 0  # identity photos with several accepted faces (their largest was used)

    def all_notes(self) -> list[str]:
        """What the report should say about the photos read: the detector's device, multi-page files, identity
        photos with several faces."""
        multi = (f"{self.multi_face_ids} identity photo(s) hold several faces: the largest face of each was used"
                 if self.multi_face_ids else None)
        return self.notes + [n for n in [multi_page_note(self.pages), multi] if n]

    def _detector(self) -> Any:
        if self.detector is None:
            self.detector, note = detector_or_cpu(self.cfg.device, self.cfg.min_face)
            if note:
                self.notes.append(note)
        return self.detector

    def _load(self, path: Path) -> LoadedImage | SkipImage:
        min_side = 8 if self.cfg.aligned else max(MTCNN_MIN_FACE, self.cfg.min_face // 2)
        return load_photo(path, self.cfg.max_pixels, min_side)

    def stage(self, role: str) -> str:
        """What the progress display calls this step for ``role`` (pose, identity) photos."""
        return f"reading {role} crops" if self.cfg.aligned else f"detecting {role} photos"

    def run(self, root: Path, rels: list[str], keep_photo: bool, role: str = "pose",
            step: Callable[[int], None] | None = None) -> list[Source]:
        """Load and align ``rels`` (relative to ``root``), in order; ``role``: pose or identity; ``step(n)``: the
        progress display's count of photos done, called as each detector batch finishes."""
        t = time.perf_counter()
        loaded = list(self.pool.map(self._load, [root / r for r in rels]))
        self.seconds["load"] += time.perf_counter() - t
        return self.align(rels, loaded, keep_photo, role, step)

    def align(self, rels: list[str], loaded: list[LoadedImage | SkipImage], keep_photo: bool, role: str = "pose",
              step: Callable[[int], None] | None = None) -> list[Source]:
        """Align photos already loaded (``rels`` name them), as :meth:`run` does: the Python API's way in."""
        step = step or (lambda n: None)
        self.pages += [im.pages for im in loaded if isinstance(im, LoadedImage) and im.pages > 1]
        if self.cfg.aligned:
            step(len(rels))
            return [self._take_aligned(r, im) for r, im in zip(rels, loaded)]
        counted = 0
        if not any(isinstance(im, LoadedImage) for im in loaded):  # nothing to detect in: no detector needed
            photos = [PhotoFaces(im, reason=im.reason, message=im.message) for im in loaded]  # type: ignore[union-attr]
        else:
            policy = self.pose_policy if role == "pose" else self.id_policy
            detector = _Counted(self._detector(), step)
            photos = crop_faces(loaded, detector, policy, self.template, self.size, self.cfg.batch_size,
                                self.pool, self.seconds)
            counted = detector.n
        step(len(rels) - counted)  # the photos no detector saw (unreadable ones)
        if role != "pose":
            self.multi_face_ids += sum(ph.reason is None and self._accepted(ph) > 1 for ph in photos)
        distances: list[list[float] | None] = [None] * len(photos)
        if role == "pose" and self.reference is not None:
            t = time.perf_counter()
            distances = self.reference.select(photos, self.policy.faces)  # type: ignore[assignment]
            self.seconds["reference"] += time.perf_counter() - t
        return [self._source(r, p, keep_photo, d) for r, p, d in zip(rels, photos, distances)]

    def _accepted(self, photo: PhotoFaces) -> int:
        """How many of the photo's detections pass --min-score and --min-face."""
        p = self.policy
        return sum(f.score >= p.min_score and f.side >= p.min_face for f in photo.faces)

    @staticmethod
    def _source(rel: str, photo: PhotoFaces, keep_photo: bool, distances: list[float] | None) -> Source:
        if photo.reason is not None:
            return Source(rel, reason=photo.reason, message=photo.message)
        faces = [FaceCrop(crop, M.tolist(), [round(float(v), 1) for v in f.box],
                          None if distances is None else round(distances[k], 4))
                 for k, (f, crop, M) in enumerate(photo.crops)]
        return Source(rel, faces=faces, photo=photo.loaded.rgb if keep_photo else None)  # type: ignore[union-attr]

    def _take_aligned(self, rel: str, loaded: LoadedImage | SkipImage) -> Source:
        if isinstance(loaded, SkipImage):
            return Source(rel, reason=loaded.reason, message=loaded.message)
        h, w = loaded.rgb.shape[:2]
        if abs(h - w) > 1:
            return Source(rel, reason="not-aligned",
                          message=f"{w}x{h} is not square: --aligned expects aligned crops (g2g prepare output)")
        return Source(rel, faces=[FaceCrop(resize_to_model(loaded.rgb, self.size))])


class _Counted:
    """A face detector that tells the progress display how many photos each batch held, as it finishes."""

    def __init__(self, detector: Any, step: Callable[[int], None]):
        self.detector, self.step, self.n = detector, step, 0

    def detect_batch(self, images: list[np.ndarray]) -> list[Any]:
        found = self.detector.detect_batch(images)
        self.n += len(images)
        self.step(len(images))
        return found
