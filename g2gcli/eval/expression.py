"""``expression``: does each mixed crop keep its pose photo's expression?

Identity retrieval alone rewards copy-paste: pasting the identity photo's face
scores near 100% while carrying that photo's expression. This metric measures
what paste cannot keep. Four descriptors from dlib's 68 points, each over the
face's own inter-ocular distance (IOD):

- mouth opening: the inner-lip gap (mean of the three vertical pairs),
- mouth width: corner to corner (48-54),
- eye opening: lid to lid (37-41, 38-40), both eyes averaged,
- brow height: the brows' mean height above their eye's centre, both sides averaged.

The error of an output is the mean absolute difference of its descriptors and its
pose crop's (0 for identical images). The baseline beside it: the identity's
own photo against the same pose, i.e. what an output would score if it kept the
identity photo's expression.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from g2g.eval import metrics as M
from g2g.config import EvalConfig
from g2g.eval.runs import MixRun, map_crops, mixed_crop
from g2g.faces.landmarks import EYES_AND_BROWS, interocular68, landmarks68, mouth_opening

DESCRIPTORS = ("mouth_opening", "mouth_width", "eye_opening", "brow_height")


def expression_descriptors(lm: np.ndarray) -> np.ndarray:
    """(..., 68, 2) landmarks -> (..., 4) descriptors over the inter-ocular distance, in DESCRIPTORS order."""
    lm = np.asarray(lm, np.float64)
    iod = np.maximum(interocular68(lm), 1e-6)
    mouth_open = mouth_opening(lm)
    mouth_width = np.linalg.norm(lm[..., 54, :] - lm[..., 48, :], axis=-1)
    eyes, brows = [], []
    for eye, brow in EYES_AND_BROWS:
        e = lm[..., eye, :]
        eyes.append((np.linalg.norm(e[..., 1, :] - e[..., 5, :], axis=-1)
                     + np.linalg.norm(e[..., 2, :] - e[..., 4, :], axis=-1)) / 2)
        brows.append(e[..., 1].mean(-1) - lm[..., brow, 1].mean(-1))
    d = np.stack([mouth_open, mouth_width, (eyes[0] + eyes[1]) / 2, (brows[0] + brows[1]) / 2], axis=-1)
    return d / iod[..., None]


def expression_error(lm_a: np.ndarray, lm_b: np.ndarray) -> np.ndarray:
    """Per-descriptor absolute differences (..., 4) of two sets of 68-point landmarks."""
    return np.abs(expression_descriptors(lm_a) - expression_descriptors(lm_b))


def expression_metrics(run: MixRun, cfg: EvalConfig, rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Expression error of every output vs its pose crop, and of the identity's first photo vs the same pose."""
    size, zoom = run.align.size, run.align.zoom
    id_first = {name: crops[0] for name, crops in run.gallery.items() if crops}
    rels = [r["pose_crop"] for r in run.ok] + [mixed_crop(r) for r in run.ok] + list(id_first.values())
    lm = map_crops(lambda crops: landmarks68(crops, zoom), run.out, [r for r in rels if r], size, cfg.batch_size,
                   "eval expression")
    ev = [r for r in run.ok if r["pose_crop"] in lm and mixed_crop(r) in lm]
    if not ev:
        return {"n_measured": 0, "descriptors": list(DESCRIPTORS), "error": M.stats([]),
                **{k: M.stats([]) for k in DESCRIPTORS},
                "baseline_identity_photo": {"error": M.stats([]), **{k: M.stats([]) for k in DESCRIPTORS}}}
    pose = np.stack([lm[r["pose_crop"]] for r in ev])
    err = expression_error(np.stack([lm[mixed_crop(r)] for r in ev]), pose)  # (N, 4)
    base_ev = [(k, id_first.get(r["identity"])) for k, r in enumerate(ev)]
    base_ev = [(k, rel) for k, rel in base_ev if rel in lm]
    base = expression_error(np.stack([lm[rel] for _, rel in base_ev]), pose[[k for k, _ in base_ev]]) \
        if base_ev else np.zeros((0, 4))
    for k, r in enumerate(ev):
        rows[id(r)]["expression_error"] = float(err[k].mean())
    return {
        "n_measured": len(ev), "descriptors": list(DESCRIPTORS), "error": M.stats(err.mean(1)),
        **{name: M.stats(err[:, i]) for i, name in enumerate(DESCRIPTORS)},
        "baseline_identity_photo": {"error": M.stats(base.mean(1)),
                                    **{name: M.stats(base[:, i]) for i, name in enumerate(DESCRIPTORS)}},
    }
