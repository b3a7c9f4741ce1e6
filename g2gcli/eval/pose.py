"""``pose``: does each mixed crop keep its pose source's head pose and landmarks?

MTCNN runs on the mixed crop and its pose crop; the score is the mean 5-point
error normalised by the pose crop's inter-ocular distance, and the yaw/pitch/roll
differences (``g2g.eval.metrics.head_pose``). Baseline: an identity crop vs the pose
crop, what an output that ignored the pose would score.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from g2g.eval import metrics as M
from g2g.config import EvalConfig
from g2g.eval.runs import MixRun, mixed_crop, read_crop

ANGLES = ("yaw", "pitch", "roll")


def _closest_to_template(faces: Any, template: np.ndarray) -> np.ndarray | None:
    """Landmarks (5,2) of the detection nearest the alignment template (the aligned face, not a neighbour)."""
    if not isinstance(faces, list) or not faces:
        return None
    return min((f.landmarks for f in faces), key=lambda lm: float(np.linalg.norm(lm - template, axis=1).mean()))


def detect_landmarks(detector, root: Path, rels: Sequence[str], size: int, template: np.ndarray,
                     batch: int) -> dict[str, np.ndarray | None]:
    """Landmarks of the aligned face in each crop (None: unreadable or no face).

    Crops with identical pixels share one detection: MTCNN's numbers shift by
    ~0.005 inter-ocular distances with the batch an image lands in, and an
    output identical to its pose source must measure exactly 0.
    """
    out: dict[str, np.ndarray | None] = {}
    by_hash: dict[str, np.ndarray | None] = {}
    rels = list(dict.fromkeys(rels))
    for i in range(0, len(rels), batch):
        todo: dict[str, tuple[np.ndarray, list[str]]] = {}
        for r in rels[i : i + batch]:
            a = read_crop(root / r, size)
            if a is None:
                out[r] = None
                continue
            h = hashlib.sha1(a.tobytes()).hexdigest()  # of the decoded pixels
            if h in by_hash:
                out[r] = by_hash[h]
            else:
                todo.setdefault(h, (a, []))[1].append(r)
        if todo:
            found = detector.detect_batch([a for a, _ in todo.values()])
            for (h, (_, names)), faces in zip(todo.items(), found):
                by_hash[h] = _closest_to_template(faces, template)
                out.update({r: by_hash[h] for r in names})
    return out


def _compare(lm: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(landmark error / IOD (N,), |angle differences| (N,3), angles of ``ref`` (N,3), angles of ``lm`` (N,3))."""
    h_ref, h_lm = M.head_pose(ref), M.head_pose(lm)
    return M.landmark_error(lm, ref), M.angle_difference(h_lm, h_ref), h_ref, h_lm


def _summary(err: np.ndarray, dang: np.ndarray) -> dict[str, Any]:
    return {"landmark_error": M.stats(err), **{f"d_{a}": M.stats(dang[:, k]) for k, a in enumerate(ANGLES)}}


def pose_metrics(run: MixRun, detector, cfg: EvalConfig, rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Pose numbers of the run's outputs and of the identity-photo baseline; fills per-image ``rows``."""
    template = np.asarray(run.align.template(), np.float64)
    first_id = {n: cs[0] for n, cs in run.gallery.items()}
    rels = [r["pose_crop"] for r in run.ok] + [mixed_crop(r) for r in run.ok] + list(first_id.values())
    lms = detect_landmarks(detector, run.out, rels, run.align.size, template, cfg.batch_size)
    ok, base, no_face_out, no_face_pose = [], [], 0, 0
    for r in run.ok:
        lp, lo, li = lms.get(r["pose_crop"]), lms.get(mixed_crop(r)), lms.get(first_id.get(r["identity"], ""))
        if lp is not None and li is not None:
            base.append((li, lp))  # the baseline does not depend on the output having a face
        if lp is None:
            no_face_pose += 1
            rows[id(r)]["pose_note"] = "no face found in the pose crop"
        elif lo is None:
            no_face_out += 1
            rows[id(r)]["pose_note"] = "no face found in the output"
        else:
            ok.append((r, lp, lo))
    err, dang = np.zeros(0), np.zeros((0, 3))
    if ok:
        err, dang, hp, ho = _compare(np.stack([o[2] for o in ok]), np.stack([o[1] for o in ok]))
        for k, (r, *_rest) in enumerate(ok):
            rows[id(r)].update({
                "landmark_error": float(err[k]), **{f"{a}_pose": float(hp[k, j]) for j, a in enumerate(ANGLES)},
                **{f"{a}_output": float(ho[k, j]) for j, a in enumerate(ANGLES)},
                **{f"d_{a}": float(dang[k, j]) for j, a in enumerate(ANGLES)},
            })
    base_err, base_ang = np.zeros(0), np.zeros((0, 3))
    if base:
        base_err, base_ang, *_ = _compare(np.stack([b[0] for b in base]), np.stack([b[1] for b in base]))
    n = len(run.ok)
    return {
        "n_outputs": n, "n_measured": len(ok), "no_face_in_output": no_face_out, "no_face_in_pose": no_face_pose,
        "face_found_in_output": None if n - no_face_pose <= 0 else 1.0 - no_face_out / (n - no_face_pose),
        **_summary(err, dang), "landmark_error_below_0.1": None if not len(err) else float(np.mean(err < 0.1)),
        "baseline_identity_photo": _summary(base_err, base_ang),
        "method": "MTCNN 5 points on both aligned crops; error / pose inter-ocular distance; angles: weak-perspective "
                  "fit of a generic 3D 5-point face (g2g.eval.metrics.head_pose; pitch also moves with expression)",
    }
