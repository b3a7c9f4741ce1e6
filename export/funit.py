"""Export of the FUNIT generator into the three bundle parts.

- ``content_encoder.onnx``: ``image`` (N, 3, S, S) -> ``content`` (E_A's content map)
- ``class_encoder.onnx``: ``images`` (N, K, 3, S, S) -> ``code`` (the mean of E_B's codes over K)
- ``decoder.onnx``: ``content``, ``code`` -> ``image`` (N, 3, S, S)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from g2g.bundle import PARTS
from g2g.export.parts import ExportParts, PartSpec, batch_dims, diffs_and_bounds
from g2g.train.model import KShotClassEncoder


def funit_parts(gen: nn.Module, faces: np.ndarray) -> ExportParts:
    """The three parts of a FUNIT generator, traced on two of the check faces (n, 3, S, S) and checked on all."""
    N, K = batch_dims()
    x = torch.from_numpy(faces[:2] if len(faces) >= 2 else np.repeat(faces, 2, 0))  # (2, 3, S, S) sample
    with torch.no_grad():
        content, code = gen.content_encoder(x), gen.class_encoder(x)
    specs = {
        "content_encoder": PartSpec(gen.content_encoder, (x,), ["image"], ["content"], {"x": {0: N}}),
        "class_encoder": PartSpec(KShotClassEncoder(gen.class_encoder), (x[:, None].repeat(1, 2, 1, 1, 1),),
                                  ["images"], ["code"], {"x": {0: N, 1: K}}),
        "decoder": PartSpec(gen.decoder, (content, code), ["content", "code"], ["image"],
                            {"content": {0: N}, "code": {0: N}}),
    }
    return ExportParts(specs, lambda paths, fp16: funit_parity(gen, paths, faces, fp16))


def funit_parity(gen: nn.Module, paths: dict[str, Path], faces: np.ndarray, fp16: bool
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """max |ORT - torch| per part and for the whole mix, and the bounds they must meet."""
    from g2g.runtime import open_session

    sess = {p: open_session(paths[p], device="cpu").session for p in PARTS}
    n = len(faces)
    k = 2 if n >= 2 else 1
    nk = faces[: (n // k) * k].reshape(n // k, k, *faces.shape[1:])  # (n/k, k, 3, S, S)
    ids = np.roll(faces, 1, axis=0)[:, None]  # (n, 1, 3, S, S): each face mixed with its neighbour
    with torch.no_grad():
        t = torch.from_numpy
        ref_content = gen.content_encoder(t(faces)).numpy()
        ref_code_nk = gen.encode_class(t(nk)).numpy()
        ref_code = gen.encode_class(t(ids)).numpy()
        ref_dec = gen.decoder(t(ref_content), t(ref_code)).numpy()
    ort_content = sess["content_encoder"].run(None, {"image": faces})[0]
    ort_code_nk = sess["class_encoder"].run(None, {"images": nk})[0]
    ort_dec = sess["decoder"].run(None, {"content": ref_content, "code": ref_code})[0]
    ort_code = sess["class_encoder"].run(None, {"images": ids})[0]
    ort_mix = sess["decoder"].run(None, {"content": ort_content, "code": ort_code})[0]
    pairs = {
        "content_encoder": (ort_content, ref_content), "class_encoder": (ort_code_nk, ref_code_nk),
        "decoder": (ort_dec, ref_dec), "mix": (ort_mix, ref_dec),
    }
    return diffs_and_bounds(pairs, fp16)
