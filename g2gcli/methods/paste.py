"""``paste``: the identity photo's face interior, colour-matched, blended onto the pose crop through the face mask.

No learning. Identity right, expression the identity photo's. Of an identity's K
photos, the one whose face shape is closest to the pose's is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from g2g.methods.base import IdentityFaces, LandmarkMethod, PoseFace, closest_first


def paste_face(face: np.ndarray, geometry: np.ndarray, face_area: np.ndarray, pose: PoseFace,
               keep_mouth: bool) -> np.ndarray:
    """``face`` (S, S, 3) uint8 with landmarks ``geometry``, colour-matched over ``face_area`` to the pose's face and
    blended onto the pose crop through the pose's mask (optionally keeping the pose's mouth opening)."""
    from g2g.faces.geometry import blend, match_colour, with_pose_mouth

    face = match_colour(face, face_area, pose.crop, pose.mask)
    if keep_mouth:
        face = with_pose_mouth(face, geometry, pose.crop, pose.lm)
    return blend(face, pose.crop, pose.mask)


@dataclass
class PasteMixer(LandmarkMethod):
    name: str = "paste"

    def mix(self, poses: list[PoseFace], idents: list[IdentityFaces]) -> tuple[np.ndarray, np.ndarray]:
        crops = []
        for pose, ident in zip(poses, idents):
            j = closest_first(ident.lm, pose.lm)[0]  # the identity photo nearest the pose's head pose
            crops.append(paste_face(*self.face(ident, j, pose), pose, self.keep_mouth))
        return np.stack(crops), np.stack([p.mask for p in poses])

    def face(self, ident: IdentityFaces, j: int, pose: PoseFace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(face crop, its landmarks, its face mask) that replaces the pose's face: the identity photo as it is."""
        return ident.crops[j], ident.lm[j], ident.masks[j]
