"""``model`` with a masked-rest bundle: per pair, the identity warped onto the target geometry, encoded and decoded.

Poses and identities are encoded as for the pastes (68 landmarks and face masks);
per pair, :func:`g2g.faces.masked_rest.pair_inputs` builds the network's inputs and
the bundle's three parts run on ONNX Runtime. Outside the mask the output is the
pose crop exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from g2g.faces.masked_rest import pair_inputs
from g2g.methods.compose import base_fixes
from g2g.methods.base import IdentityFaces, LandmarkMethod, PoseFace, closest_first
from g2g.faces.preprocess import to_image


class AppearanceMixer(LandmarkMethod):
    needs_sibling = True  # recon never rebuilds a photo from itself: the identity input is another photo
    self_label = "self, other photo"

    def __init__(self, bundle: Any, keep_mouth: bool = False):
        super().__init__(bundle.align, keep_mouth=keep_mouth, name="model", providers=bundle.providers,
                         device=bundle.device, note=bundle.note, root=bundle.root)
        self.bundle = bundle
        self.warp = bundle.model.warped_identity
        self.fixes = base_fixes(bundle.model.base_fixes)  # a refiner draws over the default method's composition

    @property
    def sha256(self) -> str:
        return self.bundle.sha256

    def mix(self, poses: list[PoseFace], idents: list[IdentityFaces]) -> tuple[np.ndarray, np.ndarray]:
        inputs = []
        for pose, ident in zip(poses, idents):
            order = closest_first(ident.lm, pose.lm)
            inputs.append(pair_inputs(pose.crop, pose.lm, ident.crops[order], ident.lm[order], rest_mask=pose.mask,
                                      warp=self.warp, keep_mouth=self.keep_mouth, fixes=self.fixes))
        by_k: dict[int, list[int]] = {}
        for i, p in enumerate(inputs):
            by_k.setdefault(len(p.identity), []).append(i)
        out = np.zeros((len(inputs), 3) + inputs[0].base.shape[1:], np.float32)
        for idx in by_k.values():
            sel = [inputs[i] for i in idx]
            out[idx] = self.bundle.generate(np.stack([p.content for p in sel]), np.stack([p.identity for p in sel]),
                                            np.stack([p.base for p in sel]))
        masks = np.stack([p.mask for p in inputs])
        rest = np.stack([p.rest for p in inputs])
        final = rest * (1 - masks[:, None]) + out * masks[:, None]
        return to_image(final), masks

    def reconstruct(self, a_u8: np.ndarray, sibling_u8: np.ndarray, b_u8: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(self, mix, cycle), whose identity input is never the photo being rebuilt: self = rest a with
        ``sibling_u8`` (another photo of a's person); mix = rest a with b; cycle = rest a with the mix of a's
        face into b's pose (the reassembly)."""
        pa, pb = self.encode_poses(a_u8), self.encode_poses(b_u8)
        same = self.encode_identities([x[None] for x in sibling_u8])
        ib = self.encode_identities([x[None] for x in b_u8])
        ia = self.encode_identities([x[None] for x in a_u8])
        self_u8, _ = self.mix(pa, same)
        mix_u8, _ = self.mix(pa, ib)
        x_ba, _ = self.mix(pb, ia)
        cyc, _ = self.mix(pa, self.encode_identities([x[None] for x in x_ba]))
        return self_u8, mix_u8, cyc
