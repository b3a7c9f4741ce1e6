"""Export of the masked-rest generators into the same three bundle parts as FUNIT's.

- ``content_encoder.onnx``: ``content`` (N, CONTENT_CHANNELS, S, S) -> ``r0..r3`` (E_A's four scales)
- ``class_encoder.onnx``: ``images`` (N, K, 3, S, S) identity crops (warped for ``appearance``) -> ``a0..a3``
  (means over K; the pooled encoders give (N, C, 1, 1) codes; ``dlib`` holds the dlib network)
- ``decoder.onnx``: ``r0..r3``, ``a0..a3``, ``base`` (N, 3, S, S) -> ``image`` (before the composite)

The warp, the mask and the composite are numpy (``g2g.faces.masked_rest``), the same code
training uses. Parity runs on inputs built from real faces by that code.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from g2g.bundle import PARTS
from g2g.export.parts import ExportParts, PartSpec, batch_dims, diffs_and_bounds
from g2g.train.appearance_model import image_class_encoder

FEATURES = 4  # scales of E_A and E_B


class _Decoder(nn.Module):
    """The fusion decoder with flat tensor arguments (ONNX inputs are named one by one)."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, r0, r1, r2, r3, a0, a1, a2, a3, base):
        return self.decoder([r0, r1, r2, r3], [a0, a1, a2, a3], base)


def appearance_parts(gen: nn.Module, faces: np.ndarray, lm: np.ndarray | None, zoom: float, warp: bool) -> ExportParts:
    """The three parts of a masked-rest generator, checked on inputs built from the check faces (n, 3, S, S)."""
    inputs = appearance_inputs(faces, zoom, warp=warp, lm=lm)
    class_encoder = image_class_encoder(gen)  # dlib: the frozen network in front of the trained projection
    return ExportParts(appearance_specs(gen, class_encoder, inputs),
                       lambda paths, fp16: appearance_parity(gen, class_encoder, paths, inputs, fp16))


def appearance_inputs(faces: np.ndarray, zoom: float, warp: bool = True, lm: np.ndarray | None = None
                      ) -> dict[str, np.ndarray]:
    """Network inputs from check faces (n, 3, S, S) in [-1, 1]: each face's neighbour drawn into it. ``lm``: their
    68 landmarks (n, 68, 2) when known (a prepare manifest has them), else dlib finds them."""
    from g2g.faces.masked_rest import pair_inputs
    from g2g.faces.landmarks import flip68, landmarks68
    from g2g.faces.preprocess import to_image

    crops = to_image(faces)
    if len(crops) < 2:
        crops = np.concatenate([crops, crops[:, :, ::-1]])
        lm = None if lm is None else np.concatenate([lm, flip68(lm, crops.shape[2])])
    if lm is None:
        lm = landmarks68(crops, zoom)
    n = len(crops)
    ins = [pair_inputs(crops[i], lm[i], crops[[(i + 1) % n, (i + 2) % n]], lm[[(i + 1) % n, (i + 2) % n]], warp=warp)
           for i in range(n)]
    return {"content": np.stack([p.content for p in ins]), "images": np.stack([p.identity for p in ins]),
            "base": np.stack([p.base for p in ins])}


def appearance_specs(gen: nn.Module, class_encoder: nn.Module, inputs: dict[str, np.ndarray]) -> dict[str, PartSpec]:
    """The part specs of ``gen``; ``class_encoder``: E_B reading crops (``appearance_model.image_class_encoder``)."""
    N, K = batch_dims()
    t = {k: torch.from_numpy(v[:2]) for k, v in inputs.items()}
    with torch.no_grad():
        r = gen.content_encoder(t["content"])
        a = class_encoder(t["images"])
    rn, an = [f"r{i}" for i in range(FEATURES)], [f"a{i}" for i in range(FEATURES)]
    dec_dyn = {**{n: {0: N} for n in rn + an}, "base": {0: N}}
    return {
        "content_encoder": PartSpec(gen.content_encoder, (t["content"],), ["content"], rn, {"x": {0: N}}),
        "class_encoder": PartSpec(class_encoder, (t["images"],), ["images"], an, {"x": {0: N, 1: K}}),
        "decoder": PartSpec(_Decoder(gen.decoder), (*r, *a, t["base"]), rn + an + ["base"], ["image"], dec_dyn),
    }


def appearance_parity(gen: nn.Module, class_encoder: nn.Module, paths: dict, inputs: dict[str, np.ndarray],
                      fp16: bool) -> tuple[dict[str, float], dict[str, float]]:
    """max |ORT - torch| per part and for the whole generator, and the bounds they must meet."""
    from g2g.runtime import open_session

    sess = {p: open_session(paths[p], device="cpu").session for p in PARTS}
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.no_grad():
        r = [x.numpy() for x in gen.content_encoder(t["content"])]
        a = [x.numpy() for x in class_encoder(t["images"])]
        ref = gen.decoder([torch.from_numpy(x) for x in r], [torch.from_numpy(x) for x in a], t["base"]).numpy()
    ort_r = sess["content_encoder"].run(None, {"content": inputs["content"]})
    ort_a = sess["class_encoder"].run(None, {"images": inputs["images"]})
    feeds = {**{f"r{i}": r[i] for i in range(FEATURES)}, **{f"a{i}": a[i] for i in range(FEATURES)},
             "base": inputs["base"]}
    ort_dec = sess["decoder"].run(None, feeds)[0]
    feeds_ort = {**{f"r{i}": ort_r[i] for i in range(FEATURES)}, **{f"a{i}": ort_a[i] for i in range(FEATURES)},
                 "base": inputs["base"]}
    ort_mix = sess["decoder"].run(None, feeds_ort)[0]
    pairs = {
        "content_encoder": (np.concatenate([x.ravel() for x in ort_r]), np.concatenate([x.ravel() for x in r])),
        "class_encoder": (np.concatenate([x.ravel() for x in ort_a]), np.concatenate([x.ravel() for x in a])),
        "decoder": (ort_dec, ref), "mix": (ort_mix, ref),
    }
    return diffs_and_bounds(pairs, fp16)
