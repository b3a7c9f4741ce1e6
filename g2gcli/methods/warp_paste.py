"""``warp-paste``: the paste, with the identity photo first warped onto the pose's 68 points (piecewise affine).

Expression closer to the pose's than ``paste``; identity weaker, since the face
takes the pose person's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from g2g.methods.base import IdentityFaces, PoseFace
from g2g.methods.paste import PasteMixer


@dataclass
class WarpPasteMixer(PasteMixer):
    name: str = "warp-paste"

    def face(self, ident: IdentityFaces, j: int, pose: PoseFace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The identity photo warped onto the pose's landmarks, so it takes the pose's landmarks and mask."""
        from g2g.faces.geometry import warp_to

        return warp_to(ident.crops[j], ident.lm[j], pose.lm), pose.lm, pose.mask
