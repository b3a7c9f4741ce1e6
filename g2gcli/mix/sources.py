"""Pose and identity photos -> aligned crops at the method's size, through the photo-to-crop stage of
:mod:`g2g.photos` (or, with ``--aligned``, crops taken as they are)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2g.config import MIX_FACE_POLICIES, MixConfig
from g2g.faces.detect import MTCNN_MIN_FACE
from g2g.io.images import LoadedImage, SkipImage, multi_page_note
from g2g.methods.base import Mixer
from g2g.photos import FacePolicy, PhotoFaces, crop_faces, detector_or_cpu, load_photo
from g2g.faces.preprocess import resize_to_model


@dataclass
class Source:
    """One photo after loading and alignment: a crop, or why there is none."""

    rel: str  # relative to its root (POSES or IDS)
    crop: np.ndarray | None = None  # (S, S, 3) uint8
    photo: np.ndarray | None = None  # (H, W, 3) uint8, kept for paste-back only
    affine: list | None = None  # 2x3 photo -> crop; None for --aligned input
    crop_rel: str | None = None  # where the crop is kept, relative to OUT
    reason: str | None = None
    message: str = ""


class Aligner:
    """Photos -> aligned crops at the mixer's size (MTCNN + 5-point similarity), or -> resized crops (--aligned)."""

    def __init__(self, cfg: MixConfig, mixer: Mixer, pool: ThreadPoolExecutor):
        self.cfg, self.pool = cfg, pool
        self.size = mixer.align.size
        self.template = np.asarray(mixer.align.template())
        self.policy = FacePolicy.of(cfg, MIX_FACE_POLICIES)
        self.detector = None
        self.seconds: Counter = Counter()
        self.notes: list[str] = []
        self.pages: list[int] = []  # of the multi-page files read (only their first page is used)

    def all_notes(self) -> list[str]:
        """What the report should say about the photos read: the detector's device, multi-page files."""
        return self.notes + [n for n in [multi_page_note(self.pages)] if n]

    def _detector(self) -> Any:
        if self.detector is None:
            self.detector, note = detector_or_cpu(self.cfg.device, self.cfg.min_face)
            if note:
                self.notes.append(note)
        return self.detector

    def _load(self, path: Path) -> LoadedImage | SkipImage:
        min_side = 8 if self.cfg.aligned else max(MTCNN_MIN_FACE, self.cfg.min_face // 2)
        return load_photo(path, self.cfg.max_pixels, min_side)

    def run(self, root: Path, rels: list[str], keep_photo: bool) -> list[Source]:
        """Load and align ``rels`` (relative to ``root``), in order."""
        t = time.perf_counter()
        loaded = list(self.pool.map(self._load, [root / r for r in rels]))
        self.seconds["load"] += time.perf_counter() - t
        self.pages += [im.pages for im in loaded if isinstance(im, LoadedImage) and im.pages > 1]
        if self.cfg.aligned:
            return [self._take_aligned(r, im) for r, im in zip(rels, loaded)]
        if not any(isinstance(im, LoadedImage) for im in loaded):  # nothing to detect in: no detector needed
            photos = [PhotoFaces(im, reason=im.reason, message=im.message) for im in loaded]  # type: ignore[union-attr]
        else:
            photos = crop_faces(loaded, self._detector(), self.policy, self.template, self.size, self.cfg.batch_size,
                                self.pool, self.seconds)
        return [self._source(r, p, keep_photo) for r, p in zip(rels, photos)]

    @staticmethod
    def _source(rel: str, photo: PhotoFaces, keep_photo: bool) -> Source:
        if photo.reason is not None:
            return Source(rel, reason=photo.reason, message=photo.message)
        _, crop, M = photo.crops[0]  # mix replaces one face per photo
        return Source(rel, crop=crop, affine=M.tolist(), photo=photo.loaded.rgb if keep_photo else None)  # type: ignore[union-attr]

    def _take_aligned(self, rel: str, loaded: LoadedImage | SkipImage) -> Source:
        if isinstance(loaded, SkipImage):
            return Source(rel, reason=loaded.reason, message=loaded.message)
        h, w = loaded.rgb.shape[:2]
        if abs(h - w) > 1:
            return Source(rel, reason="not-aligned",
                          message=f"{w}x{h} is not square: --aligned expects aligned crops (g2g prepare output)")
        return Source(rel, crop=resize_to_model(loaded.rgb, self.size))
