"""What every mixing method is: encode each pose once, each identity once, then mix pairs in batches.

``g2g mix`` treats what ``encode_poses`` and ``encode_identities`` return as
opaque: each method keeps what it needs (68 landmarks and a face mask for the
pastes and the masked-rest model, a content map and a K-shot code for a funit
model). ``mix`` returns the mixed crops and the mask of what it changed
(``None``: the whole crop), which paste-back uses so that what a mix changes in
a photo is what the method drew.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from g2g.config import AlignConfig


class Mixer(Protocol):
    name: str
    align: AlignConfig
    sha256: str  # names what made an output (model bundle or method), for the manifest and resume
    providers: list[str]
    device: str
    note: str
    root: Path | None

    def encode_poses(self, crops: np.ndarray) -> list[Any]:
        """One encoding per pose crop of (N, S, S, 3) uint8."""
        ...

    def encode_identities(self, groups: list[np.ndarray]) -> list[Any]:
        """One encoding per identity, from its K crops (K, S, S, 3) uint8."""
        ...

    def mix(self, poses: list[Any], idents: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """Mixed crops (B, S, S, 3) uint8 and the masks (B, S, S) of what changed (None: the whole crop)."""
        ...


@dataclass
class PoseFace:
    """A pose crop and its face: what the landmark-based methods need of it."""

    crop: np.ndarray  # (S, S, 3) uint8
    lm: np.ndarray  # (68, 2) crop pixels
    mask: np.ndarray  # (S, S) float32 face mask (brows to chin)


@dataclass
class IdentityFaces:
    """An identity's K crops and their faces."""

    crops: np.ndarray  # (K, S, S, 3) uint8
    lm: np.ndarray  # (K, 68, 2)
    masks: np.ndarray  # (K, S, S) face masks
    sharpness: np.ndarray | None = None  # (K,) per-photo sharpness, computed once where a method ranks photos by it


def faces_of(crops: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """68-point landmarks (N, 68, 2) and face masks (N, S, S) of uint8 crops (N, S, S, 3)."""
    from g2g.faces.geometry import face_mask
    from g2g.faces.landmarks import landmarks68

    lm = landmarks68(crops, zoom)
    return lm, np.stack([face_mask(p, crops.shape[1]) for p in lm]) if len(lm) else np.zeros((0,) + crops.shape[1:3])


def closest_first(ident_lm: np.ndarray, pose_lm: np.ndarray, best: int | None = None) -> list[int]:
    """Indices of an identity's K photos with the one whose face shape is closest to the pose's (or ``best``) first."""
    from g2g.faces.landmarks import closest_shape

    j = closest_shape(ident_lm, pose_lm) if best is None else best
    return [j] + [i for i in range(len(ident_lm)) if i != j]


@dataclass
class LandmarkMethod:
    """Encoders of the methods that work on 68 landmarks and face masks; the fields every method reports."""

    align: AlignConfig
    keep_mouth: bool = False  # the pose's own mouth opening stays (g2g.faces.geometry.with_pose_mouth)
    name: str = ""
    providers: list[str] = field(default_factory=list)
    device: str = "cpu"
    note: str = ""
    root: Path | None = None

    def encode_poses(self, crops: np.ndarray) -> list[PoseFace]:
        lm, masks = faces_of(crops, self.align.zoom)
        return [PoseFace(c, p, m) for c, p, m in zip(crops, lm, masks)]

    def encode_identities(self, groups: list[np.ndarray]) -> list[IdentityFaces]:
        if not groups:
            return []
        lm, masks = faces_of(np.concatenate(groups), self.align.zoom)
        out, i = [], 0
        for g in groups:
            out.append(IdentityFaces(g, lm[i : i + len(g)], masks[i : i + len(g)]))
            i += len(g)
        return out

    @property
    def sha256(self) -> str:
        """Names the method and its settings in manifests (a rerun with other settings redoes the outputs)."""
        return hashlib.sha256(f"g2g-method/{self.name}/1{'/keep-mouth' if self.keep_mouth else ''}{self.spec_suffix()}"
                              .encode()).hexdigest()

    def spec_suffix(self) -> str:
        return ""
