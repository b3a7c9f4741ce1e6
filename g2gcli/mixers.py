"""How a (pose, identity) pair becomes a mixed crop: ``g2g mix --method model|paste|warp-paste``.

A mixer encodes each pose once and each identity once (whatever N x M is), then
turns batches of pairs into mixed crops, each with the mask of what it changed
(``None``: the whole crop), which paste-back uses so that what a mix changes in
a photo is what the method drew.

- ``model`` with a ``funit`` bundle (:class:`CodeMixer`): E_A content map per pose,
  E_B K-shot code per identity, the decoder per pair (the seed's design).
- ``model`` with an ``appearance`` bundle (:class:`AppearanceMixer`, in
  :mod:`g2g.appearance`): masked rest + landmarks per pose, the identity photo
  warped onto the pose's expression per pair, the network per pair.
- ``paste`` (:class:`PasteMixer`): no learning. The identity photo's face
  interior, colour-matched, blended onto the pose crop through the face mask.
  Identity right, expression the identity photo's.
- ``warp-paste``: the same, the identity photo first warped onto the pose's 68
  points (piecewise affine). Expression closer to the pose's, identity weaker.
- ``expression-paste``: the identity photo warped onto its *own* face shape with
  the pose's expression (:func:`g2g.facegeom.transfer_expression`), then pasted:
  what an untrained appearance model draws, so the baseline its training must beat.

These two are the frontier a learned model must beat (``g2g eval`` reports
them), and fast fallbacks for users. Of an identity's K photos, the paste methods
use, per pose, the one whose landmarks are closest to the pose's. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from g2g.config import METHODS, AlignConfig
from g2g.errors import G2GError
from g2g.preprocess import DEFAULT_ZOOM

# ``auto``: the model when one is given (--model), else this, with the default fixes of g2g.compose (open_mixer): the
# method with the best held-out numbers (docs/realism.md: more identity than the shipped CPU model at the same
# expression error, and harder to tell from photographs). ``--method model`` runs the shipped model.
DEFAULT_METHOD = "expression-paste"


@dataclass
class PoseFace:
    """A pose crop and what every method needs of it."""

    crop: np.ndarray  # (S, S, 3) uint8
    lm: np.ndarray  # (68, 2) crop pixels
    mask: np.ndarray  # (S, S) float32 face mask (brows to chin)
    extra: Any = None  # a method's own per-pose encoding (content map, ...)


@dataclass
class IdentityFaces:
    """An identity's K crops and their landmarks."""

    crops: np.ndarray  # (K, S, S, 3) uint8
    lm: np.ndarray  # (K, 68, 2)
    masks: np.ndarray | None = None  # (K, S, S) face masks (None where a method needs none)
    extra: Any = None  # a method's own per-identity encoding (K-shot code, ...)


class Mixer(Protocol):
    name: str
    align: AlignConfig
    sha256: str  # names what made an output (model bundle or method), for the manifest and resume
    providers: list[str]
    device: str
    note: str
    root: Path | None

    def encode_poses(self, crops: np.ndarray) -> list[PoseFace]: ...

    def encode_identities(self, groups: list[np.ndarray]) -> list[IdentityFaces]: ...

    def mix(self, poses: list[PoseFace], idents: list[IdentityFaces]) -> tuple[np.ndarray, np.ndarray | None]:
        """Mixed crops (B, S, S, 3) uint8 and the masks (B, S, S) of what changed (None: the whole crop)."""
        ...


def faces_of(crops: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """68-point landmarks (N, 68, 2) and face masks (N, S, S) of uint8 crops (N, S, S, 3)."""
    from g2g.facegeom import face_mask
    from g2g.landmarks import landmarks68

    lm = landmarks68(crops, zoom)
    return lm, np.stack([face_mask(p, crops.shape[1]) for p in lm]) if len(lm) else np.zeros((0,) + crops.shape[1:3])


@dataclass
class _Faces:
    """Shared encoders of the landmark-based mixers."""

    align: AlignConfig

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


@dataclass
class PasteMixer(_Faces):
    """``paste`` / ``warp-paste`` / ``expression-paste``: the non-learned frontier."""

    method: str = "paste"  # paste | warp-paste | expression-paste
    keep_mouth: bool = False  # the pose's own mouth opening stays (g2g.facegeom.with_pose_mouth)
    fixes: Any = None  # g2g.compose.Fixes of expression-paste (None: the plain paste)
    name: str = "paste"
    providers: list[str] = field(default_factory=list)
    device: str = "cpu"
    note: str = ""
    root: Path | None = None

    def __post_init__(self) -> None:
        self.name = self.method

    @property
    def sha256(self) -> str:
        import hashlib

        fixes = f"/fixes={self.fixes.spec()}" if self.fixes is not None else ""
        return hashlib.sha256(f"g2g-method/{self.name}/1{'/keep-mouth' if self.keep_mouth else ''}{fixes}".encode()
                              ).hexdigest()

    def mix(self, poses: list[PoseFace], idents: list[IdentityFaces]) -> tuple[np.ndarray, np.ndarray]:
        from g2g.facegeom import blend, match_colour, warp_to, with_pose_mouth
        from g2g.landmarks import closest_shape

        crops, masks = [], []
        for pose, ident in zip(poses, idents):
            if self.fixes is not None:
                from g2g.compose import choose_photo, compose, sharpness

                if self.fixes.quality and ident.extra is None:
                    ident.extra = sharpness(ident.crops, ident.masks)  # once per identity
                j = choose_photo(ident.lm, pose.lm, ident.extra if self.fixes.quality else None)
                order = [j] + [i for i in range(len(ident.crops)) if i != j]
                crop, mask = compose(pose.crop, pose.lm, pose.mask, ident.crops[order], ident.lm[order], self.fixes)
                crops.append(crop)
                masks.append(mask)
                continue
            j = closest_shape(ident.lm, pose.lm)
            if self.name == "expression-paste":
                from g2g.appearance import pair_inputs
                from g2g.preprocess import to_image

                p = pair_inputs(pose.crop, pose.lm, ident.crops[j : j + 1], ident.lm[j : j + 1], rest_mask=pose.mask,
                                keep_mouth=self.keep_mouth)
                crops.append(to_image(p.base[None])[0])
                masks.append(p.mask)
                continue
            face, geometry = ident.crops[j], ident.lm[j]
            if self.name == "warp-paste":
                face, geometry = warp_to(face, ident.lm[j], pose.lm), pose.lm
                face_area = pose.mask
            else:
                face_area = ident.masks[j]  # type: ignore[index]
            face = match_colour(face, face_area, pose.crop, pose.mask)
            if self.keep_mouth:
                face = with_pose_mouth(face, geometry, pose.crop, pose.lm)
            crops.append(blend(face, pose.crop, pose.mask))
            masks.append(pose.mask)
        return np.stack(crops), np.stack(masks)


@dataclass
class CodeMixer:
    """``model`` with a FUNIT-style bundle: content map per pose, code per identity, decoder per pair."""

    bundle: Any  # g2g.bundle.Bundle
    name: str = "model"

    def __post_init__(self) -> None:
        b = self.bundle
        self.align, self.sha256, self.root = b.align, b.sha256, b.root
        self.providers, self.device, self.note = b.providers, b.device, b.note

    def encode_poses(self, crops: np.ndarray) -> list[PoseFace]:
        from g2g.preprocess import to_input

        content = self.bundle.encode_content(to_input(crops)) if len(crops) else []
        return [PoseFace(c, np.zeros((68, 2), np.float32), np.ones(c.shape[:2], np.float32), extra=m)
                for c, m in zip(crops, content)]  # no landmarks needed: the decoder redraws the whole crop

    def encode_identities(self, groups: list[np.ndarray]) -> list[IdentityFaces]:
        from g2g.preprocess import to_input

        out: list[IdentityFaces | None] = [None] * len(groups)
        by_k: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            by_k.setdefault(len(g), []).append(i)
        for k, idx in by_k.items():
            x = np.stack([to_input(groups[i]) for i in idx])  # (m, K, 3, S, S)
            for i, code in zip(idx, self.bundle.encode_class(x)):
                out[i] = IdentityFaces(groups[i], np.zeros((k, 68, 2), np.float32), extra=code)
        return out  # type: ignore[return-value]

    def mix(self, poses: list[PoseFace], idents: list[IdentityFaces]) -> tuple[np.ndarray, None]:
        from g2g.preprocess import to_image

        content = np.stack([p.extra for p in poses])
        codes = np.stack([i.extra for i in idents])
        return to_image(self.bundle.decode(content, codes)), None  # the decoder redraws the whole crop


def open_mixer(method: str, model_dir: Path | None, device: str = "auto", batch_size: int = 16,
               size: int | None = None, zoom: float | None = None, keep_mouth: bool | None = None,
               fixes: str | None = None) -> Mixer:
    """The mixer for ``--method``; ``model`` opens the bundle (default: the shipped one).

    ``fixes=None`` runs the default give-away removers of :mod:`g2g.compose` for the default method only (``auto``
    without a model: expression-paste with them was harder to tell from photographs than the earlier default at
    the same identity and expression on held-out people, docs/realism.md); an explicit ``--method`` is the plain
    method unless ``fixes`` says otherwise. ``keep_mouth`` (the older, plain mouth rule) applies where no fixes run."""
    if method not in METHODS:
        raise G2GError(f"--method must be one of {', '.join(METHODS)}, got {method!r}", usage=True)
    if fixes is None and method == "auto" and model_dir is None:  # the default fixes; --no-keep-mouth drops 'mouth'
        fixes, keep_mouth = ("default,-mouth" if keep_mouth is False else "default"), None
    keep_mouth = bool(keep_mouth)
    if method == "auto":
        method = "model" if model_dir is not None else DEFAULT_METHOD
    if method == "model":
        from g2g.bundle import open_bundle

        bundle = open_bundle(model_dir, device=device, batch_size=batch_size)
        if bundle.model.masked_rest:
            from g2g.appearance import AppearanceMixer

            return AppearanceMixer(bundle, keep_mouth=keep_mouth)
        if keep_mouth:
            raise G2GError("--keep-mouth needs a masked-rest model or a paste method: a funit model redraws the crop",
                           usage=True)
        return CodeMixer(bundle)
    from g2g.compose import Fixes

    fx = Fixes.parse(fixes) if fixes is not None else None
    if fx is not None and fx != Fixes.none() and method != "expression-paste":
        raise G2GError(f"--fixes applies to expression-paste (the default method), not to {method}", usage=True)
    if fx is not None and keep_mouth:
        raise G2GError("--keep-mouth is the plain mouth rule: with --fixes, the 'mouth' fix keeps an open mouth",
                       usage=True)
    align = AlignConfig(size=size or 128, zoom=zoom or DEFAULT_ZOOM)
    return PasteMixer(align, method=method, keep_mouth=keep_mouth, fixes=None if fx == Fixes.none() else fx)
