"""``model`` with a funit bundle: E_A's content map per pose, E_B's K-shot code per identity, the decoder per pair.

The decoder redraws the whole crop, so this method needs no landmarks and its
mask is ``None``. Torch-free (ONNX Runtime, :mod:`g2g.bundle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from g2g.errors import G2GError
from g2g.faces.preprocess import to_image, to_input


@dataclass
class PoseCode:
    crop: np.ndarray  # (S, S, 3) uint8
    content: np.ndarray  # (C, h, w) E_A's content map


@dataclass
class IdentityCode:
    crops: np.ndarray  # (K, S, S, 3) uint8
    code: np.ndarray  # (code,) E_B's code, the mean over the K photos


class FunitMixer:
    name = "model"
    needs_sibling = False  # recon rebuilds a photo from itself: G(E_A(a), E_B(a))
    self_label = "self G(a, a)"

    def __init__(self, bundle: Any, keep_mouth: bool = False):
        if keep_mouth:
            raise G2GError("--keep-mouth needs a masked-rest model or a paste method: a funit model redraws the crop",
                           usage=True)
        self.bundle = bundle
        self.align, self.sha256, self.root = bundle.align, bundle.sha256, bundle.root
        self.providers, self.device, self.note = bundle.providers, bundle.device, bundle.note

    def encode_poses(self, crops: np.ndarray) -> list[PoseCode]:
        content = self.bundle.encode_content(to_input(crops)) if len(crops) else []
        return [PoseCode(c, m) for c, m in zip(crops, content)]

    def encode_identities(self, groups: list[np.ndarray]) -> list[IdentityCode]:
        out: list[IdentityCode | None] = [None] * len(groups)
        by_k: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            by_k.setdefault(len(g), []).append(i)
        for idx in by_k.values():
            x = np.stack([to_input(groups[i]) for i in idx])  # (m, K, 3, S, S)
            for i, code in zip(idx, self.bundle.encode_class(x)):
                out[i] = IdentityCode(groups[i], code)
        return out  # type: ignore[return-value]

    def mix(self, poses: list[PoseCode], idents: list[IdentityCode]) -> tuple[np.ndarray, None]:
        content = np.stack([p.content for p in poses])
        codes = np.stack([i.code for i in idents])
        return to_image(self.bundle.decode(content, codes)), None  # the decoder redraws the whole crop

    def reconstruct(self, a_u8: np.ndarray, sibling_u8: np.ndarray, b_u8: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(self G(a,a), mix G(a,b), cycle a'), each (B, S, S, 3) uint8, from crops a and b (B, S, S, 3) uint8
        (``sibling_u8`` is unused: a funit model rebuilds a photo from itself). The cycle stays in float."""
        bundle = self.bundle
        xa, xb = to_input(a_u8), to_input(b_u8)  # (B, 3, S, S)
        ca, cb = bundle.encode_content(xa), bundle.encode_content(xb)
        za, zb = bundle.encode_class(xa[:, None]), bundle.encode_class(xb[:, None])  # K = 1 shot
        x_ab, x_ba = bundle.decode(ca, zb), bundle.decode(cb, za)
        cyc = bundle.decode(bundle.encode_content(x_ab), bundle.encode_class(x_ba[:, None]))
        return to_image(bundle.decode(ca, za)), to_image(x_ab), to_image(cyc)
