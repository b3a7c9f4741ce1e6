"""``expression-paste``: the identity photo warped onto its *own* face shape with the pose's expression, then pasted.

The geometry is :func:`g2g.faces.geometry.transfer_expression` (the identity's shape, the
pose's expression), so the face keeps who it is and takes the pose's expression:
what an untrained masked-rest model draws, so the baseline its training must beat.
With ``fixes`` (:mod:`g2g.methods.compose`) the give-away removers run on top; the default
method is this one with the default fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from g2g.methods.base import IdentityFaces, LandmarkMethod, PoseFace, closest_first


@dataclass
class ExpressionPasteMixer(LandmarkMethod):
    name: str = "expression-paste"
    fixes: Any = None  # g2g.methods.compose.Fixes (None: the plain method)

    def spec_suffix(self) -> str:
        return f"/fixes={self.fixes.spec()}" if self.fixes is not None else ""

    def mix(self, poses: list[PoseFace], idents: list[IdentityFaces]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self._composed(p, i) if self.fixes is not None else self._plain(p, i) for p, i in zip(poses, idents)]
        return np.stack([c for c, _ in pairs]), np.stack([m for _, m in pairs])

    def _plain(self, pose: PoseFace, ident: IdentityFaces) -> tuple[np.ndarray, np.ndarray]:
        from g2g.faces.masked_rest import pair_inputs
        from g2g.faces.preprocess import to_image

        j = closest_first(ident.lm, pose.lm)[0]
        p = pair_inputs(pose.crop, pose.lm, ident.crops[j : j + 1], ident.lm[j : j + 1], rest_mask=pose.mask,
                        keep_mouth=self.keep_mouth)
        return to_image(p.base[None])[0], p.mask

    def _composed(self, pose: PoseFace, ident: IdentityFaces) -> tuple[np.ndarray, np.ndarray]:
        from g2g.methods.compose import choose_photo, compose, sharpness

        if self.fixes.quality and ident.sharpness is None:
            ident.sharpness = sharpness(ident.crops, ident.masks)  # once per identity
        j = choose_photo(ident.lm, pose.lm, ident.sharpness if self.fixes.quality else None)
        order = closest_first(ident.lm, pose.lm, best=j)
        return compose(pose.crop, pose.lm, pose.mask, ident.crops[order], ident.lm[order], self.fixes)
