"""``g2g eval``: numbers users can cite about a mix run (OUT) or a model's reassembly (MODEL + DATA).

Metrics
- ``id-sim``: identity embedding of each mixed crop vs its identity source (the
  mean embedding of that identity's aligned crops) and vs its pose source (the
  baseline it must beat), in the network's distance (dlib: Euclidean, threshold
  0.6) and cosine; the share of outputs whose nearest identity of the run is the
  right one. Reference distributions come from the real crops of the run and are
  measured the same way as the outputs (one image vs an identity's mean
  embedding): same-person = an identity crop vs the mean of the *other* crops of
  its identity (identities with >= 2 crops), different-person = an identity crop
  (or a pose crop, when poses sit in per-person folders) vs another identity's
  mean. Folders are taken as people: two folder names are two people.
- ``id-retrieval``: rank of the right identity among all identities of the run
  (top-1, top-5, chance level).
- ``pose``: MTCNN on the mixed crop and its pose crop; mean 5-point error
  normalised by the pose crop's inter-ocular distance, and yaw/pitch/roll
  differences (``g2g.metrics.head_pose``). Baseline: the identity crop vs the
  pose crop (an output that ignored the pose).
- ``recon``: PSNR, SSIM and LPIPS (the trainer's ST-LPIPS) of the self
  reconstruction G(E_A(a), E_B(a)) and the cycle reconstruction
  G(E_A(G(E_A(a),E_B(b))), E_B(G(E_A(b),E_B(a)))) of held-out crops a (b: a crop
  of another identity), run on ONNX Runtime; a vs b is the unrelated-image floor.

Skipped manifest lines (and ok lines whose crop file is gone) are counted and
reported, never evaluated. Everything is written atomically under the eval out
dir (default TARGET/eval): report.json, per_image.csv, id_sim_hist.png,
examples.png (recon: recon_per_image.csv, recon_examples.png). The identity
network is exported once into the user cache (g2g.export.identity).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from g2g import metrics as M
from g2g.config import AlignConfig, EvalConfig
from g2g.fsutil import UnsafePathError, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl, safe_join

MIX_METRICS = ("id-sim", "id-retrieval", "pose")
METRICS = MIX_METRICS + ("recon",)
IDENTITY_NETS = ("dlib", "facenet-vggface2", "facenet-casia-webface")


class EvalError(ValueError):
    """A problem with the whole evaluation (bad target, missing weights): a one-line user error."""


@dataclass
class EvalReport:
    target: str
    metrics: list[str]
    out_dir: str
    networks: list[dict[str, Any]] = field(default_factory=list)  # name, distance, threshold, trained_against
    counts: dict[str, Any] = field(default_factory=dict)  # planned, ok, evaluated, skipped {reason: n}
    results: dict[str, Any] = field(default_factory=dict)  # metric -> numbers (per network for id metrics)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # what -> path written
    elapsed_s: float = 0.0
    images: int = 0  # outputs (mix) plus held-out images (recon) evaluated: throughput = images / elapsed_s
    timings: dict[str, float] = field(default_factory=dict)  # s per stage: identity, pose, recon
    device: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s, "psnr_cap_db": M.PSNR_CAP_DB}

    def table(self):
        """A rich table of the headline numbers, each next to the reference it should be read against."""
        from rich.table import Table

        t = Table(title=f"g2g eval {self.target}", title_justify="left")
        for col, just in (("metric", "left"), ("quantity", "left"), ("value", "right"), ("read against", "left")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for row in _table_rows(self):
            t.add_row(*row)
        return t


# --- reading a mix run ----------------------------------------------------------------------------------------------


@dataclass
class MixRun:
    out: Path
    run: dict[str, Any]
    align: AlignConfig
    ok: list[dict[str, Any]]  # evaluated lines (status ok, mixed crop on disk)
    skipped: Counter  # reason -> lines not evaluated
    skipped_recs: list[dict[str, Any]]  # those lines (reason "eval:missing-crop" when an ok line's crop is gone)
    planned: int
    gallery: dict[str, list[str]]  # identity -> its aligned crops (relative to OUT), sorted
    model_dir: Path | None


def _mixed_crop(rec: dict[str, Any]) -> str | None:
    return rec.get("mixed_crop") or (rec.get("output") if rec.get("status") == "ok" else None)


def load_mix(out: Path) -> MixRun:
    """Read OUT/run.json and OUT/manifest.jsonl (last line per (pose, identity) wins, as after a resume)."""
    out = Path(out)
    manifest = out / "manifest.jsonl"
    if not manifest.is_file():
        raise EvalError(f"{out} is not a g2g mix output (no manifest.jsonl); run g2g mix first")
    run: dict[str, Any] = {}
    if (out / "run.json").is_file():
        try:
            run = json.loads((out / "run.json").read_text())
        except (OSError, ValueError) as e:
            raise EvalError(f"cannot read {out / 'run.json'}: {e}") from None
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in read_jsonl(manifest):
        last[(str(rec.get("pose")), str(rec.get("identity")))] = rec
    ok, skipped, skipped_recs = [], Counter(), []
    for rec in last.values():
        if rec.get("status") != "ok":
            reason = str(rec.get("reason") or "skipped")
        elif not (rel := _mixed_crop(rec)) or not rec.get("pose_crop") or not _exists(out, rel) \
                or not _exists(out, rec["pose_crop"]):
            reason = "eval:missing-crop"
        else:
            ok.append(rec)
            continue
        skipped[reason] += 1
        skipped_recs.append({**rec, "reason": reason})
    gallery: dict[str, set[str]] = {}
    ids_dir = out / "aligned" / "ids"
    for rec in last.values():
        name = str(rec.get("identity"))
        crops = gallery.setdefault(name, set())
        crops.update(c for c in rec.get("identity_crops") or [] if _exists(out, c))
        folder = ids_dir / name
        if "/" not in name and "\\" not in name and name not in ("", ".", "..") and folder.is_dir():
            crops.update(p.relative_to(out).as_posix() for p in sorted(folder.glob("*.png")))
    align = run.get("align") or {}
    size = int(align.get("size") or 0)
    if not size and ok:
        from PIL import Image

        with Image.open(out / _mixed_crop(ok[0])) as im:  # type: ignore[operator]
            size = im.size[0]
    model_dir = Path(run["model_dir"]) if run.get("model_dir") else None
    return MixRun(
        out=out, run=run, align=AlignConfig(size=size or 128, zoom=float(align.get("zoom") or 1.3)), ok=ok,
        skipped=skipped, skipped_recs=skipped_recs, planned=len(last), gallery={k: sorted(v) for k, v in sorted(gallery.items()) if v},
        model_dir=model_dir,
    )


def _exists(root: Path, rel: str) -> bool:
    try:
        return safe_join(root, rel).is_file()
    except UnsafePathError:
        return False


def read_crop(path: Path, size: int | None = None) -> np.ndarray | None:
    """(S, S, 3) uint8 RGB, or None when unreadable or not ``size`` px square."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        return None
    if size is not None and a.shape[:2] != (size, size):
        return None
    return a


# --- identity networks --------------------------------------------------------------------------------------------


def _model_facts(model_dir: Path | None) -> dict[str, Any] | None:
    if model_dir is None or not (Path(model_dir) / "g2g_model.json").is_file():
        return None
    try:
        return json.loads((Path(model_dir) / "g2g_model.json").read_text())
    except (OSError, ValueError):
        return None


def trained_against(facts: dict[str, Any] | None) -> tuple[str | None, str]:
    """(identity net the model's ID loss used or None, explanation) from g2g_model.json's "train" config."""
    if facts is None:
        return None, "unknown (no readable g2g_model.json)"
    train = facts.get("train") or {}
    net = train.get("id_net") or train.get("identity_net") or "dlib"  # dlib: the trainer's default ID-loss net
    if float(train.get("delta_id", 1.0) or 0.0) <= 0.0:
        return None, "no identity loss (delta_id = 0)"
    return str(net), f"identity loss delta_id = {train.get('delta_id', 1.0)}"


def parse_nets(spec: str) -> list[str]:
    names = [n.strip() for n in str(spec).split(",") if n.strip()]
    if not names:
        raise EvalError("--eval-net is empty; use dlib")
    for n in names:
        if n not in IDENTITY_NETS:
            raise EvalError(f"unknown --eval-net {n!r}; choose from {', '.join(IDENTITY_NETS)}")
    return list(dict.fromkeys(names))


def open_identity_net(name: str, align: AlignConfig, device: str, batch_size: int, model_dir: Path | None = None):
    """An :class:`g2g.identity.IdentityEmbedder` for ``name`` at the run's crop size and zoom.

    dlib reuses MODEL_DIR/identity.onnx when its metadata matches; otherwise the
    network is exported once into the user cache (``g2g.export.identity``).
    facenet variants need their weights on disk already (no download here): a
    one-line error otherwise.
    """
    from g2g.identity import IdentityEmbedder
    from g2g.runtime import read_metadata

    if name != "dlib":
        from g2g.weights import WeightsError, locate

        try:
            locate(name, download=False)
        except WeightsError as e:
            raise EvalError(f"--eval-net {name}: weights not available ({e})") from None
    cand = Path(model_dir) / "identity.onnx" if model_dir is not None and name == "dlib" else None
    if cand is not None and cand.is_file():
        try:
            meta = read_metadata(cand)
            if (meta.get("identity_net") == name and int(meta.get("input_size", 0)) == align.size
                    and abs(float(meta.get("zoom", "nan")) - align.zoom) < 1e-6):
                return IdentityEmbedder(cand, device=device, batch_size=batch_size)
        except Exception:  # unreadable or foreign file: export our own below
            pass
    try:
        from g2g.export.identity import cached_identity_onnx

        path = cached_identity_onnx(name, zoom=align.zoom, size=align.size)
    except Exception as e:  # no torch, missing weights, unsupported size: one line, not a traceback
        raise EvalError(f"cannot export the {name} identity network: {type(e).__name__}: {e}") from None
    return IdentityEmbedder(path, device=device, batch_size=batch_size)


def embed_paths(net, root: Path, rels: Sequence[str], size: int, batch: int) -> dict[str, np.ndarray]:
    """Embeddings of the crops at ``root/rel`` (unreadable crops are left out), read in batches."""
    out: dict[str, np.ndarray] = {}
    rels = list(dict.fromkeys(rels))
    for i in range(0, len(rels), batch):
        chunk = [(r, read_crop(root / r, size)) for r in rels[i : i + batch]]
        chunk = [(r, a) for r, a in chunk if a is not None]
        if not chunk:
            continue
        emb = net.embed(np.stack([a for _, a in chunk]))  # (B, D)
        out.update({r: e for (r, _), e in zip(chunk, emb)})
    return out


# --- id-sim and id-retrieval --------------------------------------------------------------------------------------


def _rowwise(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return M.rowwise_euclidean if metric == "euclidean" else (lambda a, b: 1.0 - M.rowwise_cosine(a, b))


def _distance(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return M.euclidean_matrix if metric == "euclidean" else (lambda a, b: 1.0 - M.cosine_matrix(a, b))


def reference_distributions(
    crops: dict[str, list[np.ndarray]], extra: list[tuple[str, np.ndarray]], metric: str, max_pairs: int, seed: int,
) -> dict[str, Any]:
    """Same- and different-person distances (image vs identity mean) on real crops.

    ``crops``: identity -> its crop embeddings (the gallery). ``extra``: (person
    label, embedding) of other real crops (pose crops in per-person folders),
    used as different-person samples against every identity not of that label.
    """
    rng = np.random.default_rng(seed)
    dist = _distance(metric)
    names = list(crops)
    means = {n: np.mean(crops[n], axis=0) for n in names}
    same_d, same_c, diff_d, diff_c = [], [], [], []
    for n in names:
        e = np.asarray(crops[n])
        if len(e) >= 2:
            for i in range(len(e)):
                loo = (e.sum(0) - e[i]) / (len(e) - 1)  # leave-one-out mean of the other crops
                same_d.append(dist(e[i : i + 1], loo[None])[0, 0])
                same_c.append(M.cosine_matrix(e[i : i + 1], loo[None])[0, 0])
    queries = [(n, x) for n in names for x in crops[n]] + list(extra)
    pairs = [(qi, g) for qi, (lab, _) in enumerate(queries) for g in names if g != lab]
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    if len(same_d) > max_pairs:
        keep = rng.choice(len(same_d), max_pairs, replace=False)
        same_d, same_c = [same_d[i] for i in keep], [same_c[i] for i in keep]
    if pairs:
        q = np.stack([queries[qi][1] for qi, _ in pairs])  # (P, D)
        g = np.stack([means[name] for _, name in pairs])  # (P, D)
        diff_d = list(_rowwise(metric)(q, g))
        diff_c = list(M.rowwise_cosine(q, g))
    note = ""
    if not same_d:
        note = "no identity has 2 or more crops: no same-person reference in this run"
    return {"same": np.asarray(same_d), "same_cos": np.asarray(same_c), "diff": np.asarray(diff_d),
            "diff_cos": np.asarray(diff_c), "note": note}


def identity_metrics(run: MixRun, net, cfg: EvalConfig, rows: dict[int, dict[str, Any]]) -> tuple[dict, dict, dict]:
    """(id-sim numbers, id-retrieval numbers, arrays for plots) for one network; fills per-image ``rows``."""
    size, tag = run.align.size, net.name
    metric, thr = net.metric, net.threshold
    dist = _distance(metric)
    gallery_rels = [c for cs in run.gallery.values() for c in cs]
    rels = gallery_rels + [r["pose_crop"] for r in run.ok] + [_mixed_crop(r) for r in run.ok]
    emb = embed_paths(net, run.out, rels, size, cfg.batch_size)
    crops = {n: [emb[c] for c in cs if c in emb] for n, cs in run.gallery.items()}
    crops = {n: v for n, v in crops.items() if v}
    names = list(crops)
    index = {n: i for i, n in enumerate(names)}
    means = np.stack([np.mean(crops[n], axis=0) for n in names]) if names else np.zeros((0, 1))
    # pose crops as extra different-person samples when poses sit in per-person folders
    extra_by_crop: dict[str, tuple[str, np.ndarray]] = {}
    for r in run.ok:
        parts = Path(str(r["pose"])).parts
        if len(parts) > 1 and r["pose_crop"] in emb:
            extra_by_crop[r["pose_crop"]] = (parts[0], emb[r["pose_crop"]])
    extra = list(extra_by_crop.values())
    pose_people = {lab for lab, _ in extra}
    ref = reference_distributions(crops, extra, metric, cfg.max_pairs, cfg.seed)

    ev = [r for r in run.ok if r["identity"] in index and _mixed_crop(r) in emb and r["pose_crop"] in emb]
    n_unscored = len(run.ok) - len(ev)
    e_out = np.stack([emb[_mixed_crop(r)] for r in ev]) if ev else np.zeros((0, means.shape[1]))
    e_pose = np.stack([emb[r["pose_crop"]] for r in ev]) if ev else np.zeros((0, means.shape[1]))
    truth = np.array([index[r["identity"]] for r in ev], np.int64)
    d_all = dist(e_out, means) if ev else np.zeros((0, len(names)))  # (N, identities)
    c_all = M.cosine_matrix(e_out, means) if ev else np.zeros((0, len(names)))
    d_id = d_all[np.arange(len(ev)), truth]
    c_id = c_all[np.arange(len(ev)), truth]
    d_pose = _rowwise(metric)(e_out, e_pose) if ev else np.zeros(0)
    c_pose = M.rowwise_cosine(e_out, e_pose) if ev else np.zeros(0)
    d_base = dist(e_pose, means)[np.arange(len(ev)), truth] if ev else np.zeros(0)  # the untouched pose photo
    ranks = M.retrieval_ranks(d_all, truth, higher_is_better=False) if ev else np.zeros(0, np.int64)
    nearest = d_all.argmin(1) if ev else np.zeros(0, np.int64)
    for k, r in enumerate(ev):
        row = rows[id(r)]
        row.update({
            f"{tag}_dist_identity": float(d_id[k]), f"{tag}_cos_identity": float(c_id[k]),
            f"{tag}_dist_pose": float(d_pose[k]), f"{tag}_cos_pose": float(c_pose[k]),
            f"{tag}_nearest_identity": names[int(nearest[k])], f"{tag}_rank": int(ranks[k]),
        })
    s_out, s_same, s_diff = M.stats(d_id), M.stats(ref["same"]), M.stats(ref["diff"])
    level = None
    if s_out["mean"] is not None and s_same["mean"] is not None and s_diff["mean"] is not None \
            and abs(s_diff["mean"] - s_same["mean"]) > 1e-9:
        level = (s_diff["mean"] - s_out["mean"]) / (s_diff["mean"] - s_same["mean"])
    lower = metric == "euclidean"
    sim = {
        "network": tag, "distance": metric, "threshold": thr, "n_outputs": len(ev), "n_unscored": n_unscored,
        "n_identities": len(names),
        "dist_to_identity": s_out, "cos_to_identity": M.stats(c_id),
        "dist_to_pose": M.stats(d_pose), "cos_to_pose": M.stats(c_pose),
        "pose_photo_dist_to_identity": M.stats(d_base),
        "closer_to_identity_than_pose": None if not ev else float(np.mean(d_id < d_pose)),
        "nearest_identity_accuracy": M.top_k_accuracy(ranks, 1),
        "verified_at_threshold": M.verification_rate(d_id, thr, lower_is_match=lower),
        "identity_level": level,  # 0 = different-person mean, 1 = same-person mean
        "auc_outputs_vs_different": M.roc_auc(-d_id, -ref["diff"]) if lower else M.roc_auc(1 - d_id, 1 - ref["diff"]),
        "reference": {
            "same_person": s_same, "different_person": s_diff,
            "same_person_cos": M.stats(ref["same_cos"]), "different_person_cos": M.stats(ref["diff_cos"]),
            "same_verified_at_threshold": M.verification_rate(ref["same"], thr, lower),
            "different_verified_at_threshold": M.verification_rate(ref["diff"], thr, lower),
            "auc_same_vs_different": M.roc_auc(-ref["same"], -ref["diff"]),
            "labels": f"{len(names)} identity folders" + (f" + {len(pose_people)} pose folders" if pose_people else ""),
            "note": ref["note"],
        },
    }
    n_ids = len(names)
    retr = {
        "network": tag, "n_outputs": len(ev), "n_identities": n_ids,
        "top1": M.top_k_accuracy(ranks, 1), "top5": M.top_k_accuracy(ranks, 5),
        "chance_top1": 1.0 / n_ids if n_ids else None, "chance_top5": min(1.0, 5.0 / n_ids) if n_ids else None,
        "mean_rank": float(ranks.mean() + 1) if len(ranks) else None,
        "pose_photo_top1": M.top_k_accuracy(M.retrieval_ranks(dist(e_pose, means), truth, False), 1) if ev else None,
    }
    arrays = {"d_id": d_id, "d_pose": d_pose, "same": ref["same"], "diff": ref["diff"], "ev": ev}
    return sim, retr, arrays


# --- pose ---------------------------------------------------------------------------------------------------------


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
    import hashlib

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
            h = hashlib.sha1(a.tobytes()).hexdigest()
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


def pose_metrics(run: MixRun, detector, cfg: EvalConfig, rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    template = np.asarray(run.align.template(), np.float64)
    first_id = {n: cs[0] for n, cs in run.gallery.items()}
    rels = [r["pose_crop"] for r in run.ok] + [_mixed_crop(r) for r in run.ok] + list(first_id.values())
    lms = detect_landmarks(detector, run.out, rels, run.align.size, template, cfg.batch_size)
    ok, base, no_face_out, no_face_pose = [], [], 0, 0
    for r in run.ok:
        lp, lo, li = lms.get(r["pose_crop"]), lms.get(_mixed_crop(r)), lms.get(first_id.get(r["identity"], ""))
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
        lp = np.stack([o[1] for o in ok])
        lo = np.stack([o[2] for o in ok])
        err = M.landmark_error(lo, lp)
        hp, ho = M.head_pose(lp), M.head_pose(lo)
        dang = M.angle_difference(ho, hp)  # (N,3)
        for k, (r, *_rest) in enumerate(ok):
            rows[id(r)].update({
                "landmark_error": float(err[k]),
                "yaw_pose": float(hp[k, 0]), "pitch_pose": float(hp[k, 1]), "roll_pose": float(hp[k, 2]),
                "yaw_output": float(ho[k, 0]), "pitch_output": float(ho[k, 1]), "roll_output": float(ho[k, 2]),
                "d_yaw": float(dang[k, 0]), "d_pitch": float(dang[k, 1]), "d_roll": float(dang[k, 2]),
            })
    base_err, base_ang = np.zeros(0), np.zeros((0, 3))
    if base:
        bi, bp = np.stack([b[0] for b in base]), np.stack([b[1] for b in base])
        base_err, base_ang = M.landmark_error(bi, bp), M.angle_difference(M.head_pose(bi), M.head_pose(bp))
    n = len(run.ok)
    return {
        "n_outputs": n, "n_measured": len(ok), "no_face_in_output": no_face_out, "no_face_in_pose": no_face_pose,
        "face_found_in_output": None if n - no_face_pose <= 0 else 1.0 - no_face_out / (n - no_face_pose),
        "landmark_error": M.stats(err), "landmark_error_below_0.1": None if not len(err) else float(np.mean(err < 0.1)),
        "d_yaw": M.stats(dang[:, 0]), "d_pitch": M.stats(dang[:, 1]), "d_roll": M.stats(dang[:, 2]),
        "baseline_identity_photo": {
            "landmark_error": M.stats(base_err), "d_yaw": M.stats(base_ang[:, 0]), "d_pitch": M.stats(base_ang[:, 1]),
            "d_roll": M.stats(base_ang[:, 2]),
        },
        "method": "MTCNN 5 points on both aligned crops; error / pose inter-ocular distance; angles: weak-perspective "
                  "fit of a generic 3D 5-point face (g2g.metrics.head_pose; pitch also moves with expression)",
    }


# --- plots and files ----------------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_id_hist(path: Path, arrays: dict[str, Any], net) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = [a for a in (arrays["d_id"], arrays["same"], arrays["diff"], arrays["d_pose"]) if len(a)]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if vals:
        lo, hi = float(min(v.min() for v in vals)), float(max(v.max() for v in vals))
        bins = np.linspace(lo, hi + 1e-9, 40)
        for a, label, kw in [
            (arrays["same"], "real same-person", dict(color="tab:green", alpha=0.35)),
            (arrays["diff"], "real different-person", dict(color="tab:red", alpha=0.35)),
            (arrays["d_id"], "output vs its identity", dict(histtype="step", color="k", linewidth=2)),
            (arrays["d_pose"], "output vs its pose photo", dict(histtype="step", color="tab:blue", linestyle="--")),
        ]:
            if len(a):
                ax.hist(a, bins=bins, density=True, label=f"{label} (n={len(a)})", **kw)
    if np.isfinite(net.threshold):
        ax.axvline(net.threshold, color="grey", linestyle=":", label=f"{net.name} threshold {net.threshold:g}")
    ax.set_xlabel(f"{net.name} {'Euclidean distance' if net.metric == 'euclidean' else 'cosine distance'} "
                  "(image vs identity mean)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)


def examples_sheet(path: Path, run: MixRun, arrays: dict[str, Any], k: int) -> None:
    """Best and worst outputs by distance to their identity: pose | identity | output."""
    from g2g.fsutil import atomic_save_image
    from g2g.sheets import contact_sheet

    ev, d = arrays["ev"], arrays["d_id"]
    if not ev:
        return
    order = np.argsort(d)
    pick = list(order[:k]) + [i for i in order[::-1][:k] if i not in set(order[:k])]
    rows, labels = [], []
    size = run.align.size
    for i in pick:
        r = ev[int(i)]
        ids = run.gallery.get(r["identity"]) or []
        rows.append([read_crop(run.out / r["pose_crop"], size), read_crop(run.out / ids[0], size) if ids else None,
                     read_crop(run.out / _mixed_crop(r), size)])
        labels.append(f"{'best' if i in set(order[:k]) else 'worst'} {d[int(i)]:.3f}")
    atomic_save_image(path, contact_sheet(rows, labels, ["pose", "identity", "output"], cell=min(size, 128)))


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])) for c in cols})
    atomic_write_text(path, buf.getvalue())


# --- recon --------------------------------------------------------------------------------------------------------


def _lpips(device: str) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray] | None, str]:
    """ST-LPIPS of the trainer as ``fn(a_uint8, b_uint8) -> (N,)``, or (None, why) when torch or weights are missing."""
    try:
        import torch

        from g2g.train.perceptual import load_perceptual

        dev = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        net = load_perceptual("stlpips", dev)
    except Exception as e:  # ImportError (no torch), missing weights
        return None, f"LPIPS unavailable: {type(e).__name__}: {e}"

    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(to_model(a)).to(dev)
            y = torch.from_numpy(to_model(b)).to(dev)
            return net(x, y).float().cpu().numpy()

    return fn, "ST-LPIPS VGG16 (the trainer's perceptual network); 0 = identical"


def to_model(crops: np.ndarray) -> np.ndarray:
    """(N,S,S,3) uint8 -> (N,3,S,S) float32 in [-1,1]."""
    return np.ascontiguousarray(crops.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """(N,3,S,S) in [-1,1] -> (N,S,S,3) uint8 (what a saved output would hold)."""
    return np.clip(np.rint((np.asarray(x, np.float32).transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _held_out(data: Path, split: str | None) -> tuple[list[dict[str, Any]], str]:
    from g2g.prepare import read_manifest

    recs = [r for r in read_manifest(data) if r.get("output")]
    if not recs:
        raise EvalError(f"{data} has no aligned crops (no ok lines in manifest.jsonl); run g2g prepare first")
    if not split:
        return recs, f"all {len({r['identity'] for r in recs})} identities of DATA (no split given)"
    p = Path(split)
    p = p / "split.json" if p.is_dir() else p
    try:
        val = set(json.loads(p.read_text())["val"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"cannot read the validation identities from {p}: {type(e).__name__}: {e}") from None
    held = [r for r in recs if r["identity"] in val]
    if not held:
        raise EvalError(f"none of the {len(val)} validation identities of {p} has crops in {data}")
    return held, f"{len({r['identity'] for r in held})} validation identities of {p}"


def recon_metrics(model_dir: Path, data: Path, cfg: EvalConfig, report: EvalReport, out_dir: Path) -> dict[str, Any]:
    """PSNR/SSIM/LPIPS of self and cycle reconstructions of held-out crops, on ONNX Runtime."""
    from g2g.bundle import open_bundle

    try:
        bundle = open_bundle(model_dir, cfg.device)
    except Exception as e:
        raise EvalError(f"cannot open the model bundle {model_dir}: {e}") from None
    facts = _model_facts(model_dir) or {}
    size = int((facts.get("align") or {}).get("size") or (facts.get("model") or {}).get("image_size") or 0)
    zoom = float((facts.get("align") or {}).get("zoom") or (facts.get("model") or {}).get("zoom") or 1.3)
    recs, held_note = _held_out(data, cfg.split)
    r0 = recs[0]
    if r0.get("size") and int(r0["size"]) != size:
        raise EvalError(f"DATA crops are {r0['size']} px but the model reads {size} px: prepare DATA with --size {size}")
    if r0.get("zoom") and abs(float(r0["zoom"]) - zoom) > 1e-6:
        raise EvalError(f"DATA crops use zoom {r0['zoom']} but the model was trained at zoom {zoom}: prepare with --zoom {zoom}")
    rng = np.random.default_rng(cfg.seed)
    if len(recs) > cfg.max_images:
        recs = [recs[i] for i in sorted(rng.choice(len(recs), cfg.max_images, replace=False))]
    imgs, names, rels = [], [], []
    for r in recs:
        a = read_crop(Path(data) / r["output"], size)
        if a is not None:
            imgs.append(a), names.append(r["identity"]), rels.append(r["output"])
    if not imgs:
        raise EvalError(f"no readable {size} px crops among the held-out images of {data}")
    n = len(imgs)
    ids = np.array(names)
    cycle_ok = len(set(names)) >= 2
    partner = np.array([rng.choice(np.flatnonzero(ids != ids[i])) if cycle_ok else i for i in range(n)])
    lpips_fn, lpips_note = _lpips(cfg.device)
    per: list[dict[str, Any]] = []
    sheet_rows = []
    t_gen = t_lpips = 0.0
    for s in range(0, n, cfg.batch_size):
        t1 = time.perf_counter()
        idx = np.arange(s, min(n, s + cfg.batch_size))
        a_u8 = np.stack([imgs[i] for i in idx])
        b_u8 = np.stack([imgs[j] for j in partner[idx]])
        xa, xb = to_model(a_u8), to_model(b_u8)
        ca, cb = bundle.encode_content(xa), bundle.encode_content(xb)
        za, zb = bundle.encode_class(xa[:, None]), bundle.encode_class(xb[:, None])
        self_u8 = to_uint8(bundle.decode(ca, za))
        x_ab, x_ba = bundle.decode(ca, zb), bundle.decode(cb, za)
        cyc = bundle.decode(bundle.encode_content(x_ab), bundle.encode_class(x_ba[:, None]))
        cyc_u8 = to_uint8(cyc)
        t2 = time.perf_counter()
        lp = {}
        if lpips_fn is not None:
            lp = {"self": lpips_fn(self_u8, a_u8), "cycle": lpips_fn(cyc_u8, a_u8), "floor": lpips_fn(b_u8, a_u8)}
        t_gen, t_lpips = t_gen + t2 - t1, t_lpips + time.perf_counter() - t2
        for k, i in enumerate(idx):
            row = {"image": rels[i], "identity": names[i], "partner": rels[partner[i]]}
            for kind, img in (("self", self_u8[k]), ("cycle", cyc_u8[k]), ("floor", b_u8[k])):
                if kind != "self" and not cycle_ok:
                    continue
                row[f"{kind}_psnr"] = M.psnr(img, a_u8[k])
                row[f"{kind}_ssim"] = M.ssim(img, a_u8[k])
                if lp:
                    row[f"{kind}_lpips"] = float(lp[kind][k])
            per.append(row)
            if len(sheet_rows) < 2 * cfg.examples:
                sheet_rows.append([a_u8[k], b_u8[k], self_u8[k], to_uint8(x_ab[k : k + 1])[0], cyc_u8[k]])
    report.timings.update({"recon:generator": t_gen, "recon:lpips": t_lpips})
    write_csv(out_dir / "recon_per_image.csv", per)
    report.files["recon_csv"] = str(out_dir / "recon_per_image.csv")
    if sheet_rows:
        from g2g.fsutil import atomic_save_image
        from g2g.sheets import contact_sheet

        sheet = contact_sheet(sheet_rows, None, ["a", "b", "self G(a,a)", "mix G(a,b)", "cycle a'"], cell=min(size, 128))
        atomic_save_image(out_dir / "recon_examples.png", sheet)
        report.files["recon_examples"] = str(out_dir / "recon_examples.png")

    def col(name: str) -> dict[str, Any]:
        return M.stats([r[name] for r in per if name in r])

    res: dict[str, Any] = {
        "model_dir": str(model_dir), "held_out": held_note, "n_images": n, "lpips": lpips_note,
        "psnr_capped": sum(r.get(f"{k}_psnr") == M.PSNR_CAP_DB for r in per for k in ("self", "cycle")),
    }
    for kind in ("self", "cycle", "floor"):
        res[kind] = {m: col(f"{kind}_{m}") for m in ("psnr", "ssim", "lpips")} if (kind == "self" or cycle_ok) else None
    if not cycle_ok:
        report.notes.append("recon: only one held-out identity, so no cycle reconstruction (it needs a second person)")
    if lpips_fn is None:
        report.warnings.append(lpips_note)
    return res


# --- entry point --------------------------------------------------------------------------------------------------


def parse_metrics(items: Sequence[str]) -> list[str]:
    """``["id-sim,pose", "recon"]`` -> metric names in canonical order; ``all`` expands later."""
    names = [m.strip() for it in items for m in str(it).split(",") if m.strip()] or ["all"]
    for m in names:
        if m != "all" and m not in METRICS:
            raise EvalError(f"unknown --metric {m!r}; choose from {', '.join(METRICS)}, all")
    return names


def evaluate(target: Path, metrics: Sequence[str], cfg: EvalConfig, data: Path | None = None) -> EvalReport:
    """Evaluate a mix output folder (id-sim, id-retrieval, pose) and/or a model bundle on DATA (recon).

    ``target`` is a mix OUT (its run.json names the model) or a MODEL_DIR.
    ``metrics`` may hold ``all``: every metric the inputs allow (recon needs DATA).
    """
    t0 = time.perf_counter()
    target = Path(target)
    wanted = parse_metrics(metrics)
    is_mix = (target / "manifest.jsonl").is_file()
    is_model = (target / "g2g_model.json").is_file()
    if not target.is_dir() or not (is_mix or is_model):
        raise EvalError(f"{target} is neither a g2g mix output (manifest.jsonl) nor an exported model (g2g_model.json)")
    if "all" in wanted:
        chosen = (list(MIX_METRICS) if is_mix else []) + (["recon"] if data is not None else [])
        if not chosen:
            raise EvalError(f"nothing to evaluate: {target} is a model; give DATA for --metric recon")
    else:
        chosen = [m for m in METRICS if m in wanted]
    if any(m in MIX_METRICS for m in chosen) and not is_mix:
        raise EvalError(f"--metric {','.join(m for m in chosen if m in MIX_METRICS)} needs a g2g mix output folder; "
                        f"{target} is a model")
    if "recon" in chosen and data is None:
        raise EvalError("--metric recon needs DATA (a g2g prepare folder): g2g eval --metric recon MODEL DATA")
    if cfg.batch_size < 1 or cfg.max_pairs < 1 or cfg.max_images < 1:
        raise EvalError("--batch-size, max_pairs and max_images must be >= 1")
    nets = parse_nets(cfg.eval_net)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else target / "eval"
    report = EvalReport(target=str(target), metrics=chosen, out_dir=str(out_dir), device=cfg.device)

    run = load_mix(target) if is_mix else None
    model_dir = target if is_model else (run.model_dir if run else None)
    facts = _model_facts(model_dir)
    trained_net, trained_why = trained_against(facts)
    if facts is not None and int(facts.get("step") or 0) == 0:
        report.notes.append(f"the model in {model_dir} is at training step 0 (untrained): expect different-person "
                            "identity scores and no faces in the outputs")

    if run is not None:
        report.counts = {"planned": run.planned, "ok": len(run.ok), "skipped": dict(sorted(run.skipped.items())),
                         "n_skipped": sum(run.skipped.values()), "identities": len(run.gallery)}
        if run.skipped:
            report.notes.append(f"{sum(run.skipped.values())} of {run.planned} planned outputs skipped and not "
                                f"evaluated ({', '.join(f'{k}: {v}' for k, v in sorted(run.skipped.items()))})")
        if not run.run:
            report.warnings.append("no run.json in the mix output: crop size taken from the files, zoom assumed 1.3")
        rows = {id(r): {"pose": r.get("pose"), "identity": r.get("identity"), "status": "ok",
                        "mixed_crop": _mixed_crop(r), "output": r.get("output")} for r in run.ok}
        id_metrics = [m for m in chosen if m in ("id-sim", "id-retrieval")]
        if id_metrics and trained_net is None and facts is None:
            report.warnings.append(f"cannot tell which identity network the model was trained against "
                                   f"({trained_why}); dlib is the trainer's default")
        if id_metrics:
            for name in nets:
                net = open_identity_net(name, run.align, cfg.device, cfg.batch_size, model_dir)
                same = trained_net == name
                report.networks.append({"name": name, "distance": net.metric, "threshold": net.threshold,
                                        "providers": list(net.info.providers), "trained_against": same,
                                        "training": trained_why})
                if same:
                    report.warnings.append(
                        f"{name} is the identity network this model was trained against ({trained_why}): its scores "
                        f"overstate identity transfer; check with a second network ({', '.join(n for n in IDENTITY_NETS if n != name)}) "
                        f"where its weights are available")
                t1 = time.perf_counter()
                sim, retr, arrays = identity_metrics(run, net, cfg, rows)
                report.timings[f"identity:{name}"] = time.perf_counter() - t1
                if "id-sim" in chosen:
                    report.results.setdefault("id-sim", {})[name] = sim
                    if sim["reference"]["note"]:
                        report.notes.append(f"id-sim ({name}): {sim['reference']['note']}")
                if "id-retrieval" in chosen:
                    report.results.setdefault("id-retrieval", {})[name] = retr
                    if len(run.gallery) <= 5:
                        report.notes.append(f"id-retrieval: only {len(run.gallery)} identities, so top-5 is trivially 1")
                if name == nets[0]:
                    plot_id_hist(out_dir / "id_sim_hist.png", arrays, net)
                    examples_sheet(out_dir / "examples.png", run, arrays, cfg.examples)
                    report.files["id_sim_hist"] = str(out_dir / "id_sim_hist.png")
                    if (out_dir / "examples.png").exists():
                        report.files["examples"] = str(out_dir / "examples.png")
        if "pose" in chosen:
            from g2g.detect import FaceDetector

            t1 = time.perf_counter()
            detector = FaceDetector(cfg.device, min_face=max(12, run.align.size // 6))
            report.results["pose"] = pose_metrics(run, detector, cfg, rows)
            report.timings["pose"] = time.perf_counter() - t1
        skipped_rows = [{"pose": r.get("pose"), "identity": r.get("identity"), "status": "skipped",
                         "reason": r["reason"]} for r in run.skipped_recs]  # in the CSV with their reason
        report.images += len(run.ok)
        if any(m in MIX_METRICS for m in chosen):
            write_csv(out_dir / "per_image.csv", [*rows.values(), *skipped_rows])
            report.files["per_image_csv"] = str(out_dir / "per_image.csv")
    if "recon" in chosen:
        assert data is not None
        if model_dir is None or facts is None:
            raise EvalError(f"no model to reconstruct with: {target} names no readable exported model")
        t1 = time.perf_counter()
        report.results["recon"] = recon_metrics(model_dir, Path(data), cfg, report, out_dir)
        report.images += report.results["recon"]["n_images"]
        report.timings["recon"] = time.perf_counter() - t1
    report.elapsed_s = time.perf_counter() - t0
    atomic_write_json(out_dir / "report.json", report.to_dict())
    report.files["report"] = str(out_dir / "report.json")
    if cfg.json:
        atomic_write_json(Path(cfg.json), report.to_dict())
        report.files["json"] = str(cfg.json)
    return report


# --- table --------------------------------------------------------------------------------------------------------


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table_rows(r: EvalReport) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    c = r.counts
    if c:
        rows.append(("outputs", "evaluated / planned", f"{c['ok']} / {c['planned']}",
                     f"{c['n_skipped']} skipped" + (f" ({', '.join(f'{k}: {v}' for k, v in c['skipped'].items())})"
                                                     if c["skipped"] else "")))
    for name, s in (r.results.get("id-sim") or {}).items():
        ref, unit = s["reference"], ("dist" if s["distance"] == "euclidean" else "cos dist")
        rows += [
            (f"id-sim [{name}]", f"{unit} to identity (mean)", _f(s["dist_to_identity"]["mean"]),
             f"real same {_f(ref['same_person']['mean'])} / different {_f(ref['different_person']['mean'])}"),
            (f"id-sim [{name}]", f"{unit} to pose source", _f(s["dist_to_pose"]["mean"]), "baseline to beat (higher is better)"),
            (f"id-sim [{name}]", "cosine to identity", _f(s["cos_to_identity"]["mean"]),
             f"real same {_f(ref['same_person_cos']['mean'])} / different {_f(ref['different_person_cos']['mean'])}"),
            (f"id-sim [{name}]", f"verified (< {s['threshold']:g})", _pct(s["verified_at_threshold"]),
             f"real same {_pct(ref['same_verified_at_threshold'])} / different {_pct(ref['different_verified_at_threshold'])}"),
            (f"id-sim [{name}]", "identity level", _f(s["identity_level"], "{:.2f}"), "0 = different-person, 1 = same-person"),
            (f"id-sim [{name}]", "nearest identity right", _pct(s["nearest_identity_accuracy"]),
             f"of {s['n_identities']} identities"),
            (f"id-sim [{name}]", "closer to identity than pose", _pct(s["closer_to_identity_than_pose"]), ""),
        ]
    for name, s in (r.results.get("id-retrieval") or {}).items():
        rows += [
            (f"id-retrieval [{name}]", "top-1", _pct(s["top1"]), f"chance {_pct(s['chance_top1'])}; pose photo {_pct(s['pose_photo_top1'])}"),
            (f"id-retrieval [{name}]", "top-5", _pct(s["top5"]), f"chance {_pct(s['chance_top5'])}"),
        ]
    p = r.results.get("pose")
    if p:
        b = p["baseline_identity_photo"]
        rows += [
            ("pose", "face found in output", _pct(p["face_found_in_output"]), f"{p['n_measured']} measured"),
            ("pose", "landmark error / IOD", _f(p["landmark_error"]["mean"]), f"identity photo {_f(b['landmark_error']['mean'])}"),
            ("pose", "|d yaw| / |d pitch| / |d roll| deg",
             " / ".join(_f(p[k]["mean"], "{:.1f}") for k in ("d_yaw", "d_pitch", "d_roll")),
             "identity photo " + " / ".join(_f(b[k]["mean"], "{:.1f}") for k in ("d_yaw", "d_pitch", "d_roll"))),
        ]
    rc = r.results.get("recon")
    if rc:
        for kind in ("self", "cycle"):
            if rc[kind] is None:
                continue
            fl = rc["floor"] or {}
            for m, fmt in (("psnr", "{:.2f} dB"), ("ssim", "{:.3f}"), ("lpips", "{:.3f}")):
                rows.append((f"recon {kind}", m.upper(), _f(rc[kind][m]["mean"], fmt),
                             f"unrelated face {_f((fl.get(m) or {}).get('mean'), fmt)}" if fl else ""))
        rows.append(("recon", "held-out", str(rc["n_images"]), rc["held_out"]))
    nets = ", ".join(f"{n['name']}" + (" (trained against)" if n["trained_against"] else "") for n in r.networks)
    if nets:
        rows.append(("network", "identity", nets, "distance to the identity's mean embedding"))
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items())
    rows.append(("speed", "images/s", f"{r.images_per_s:.1f}",
                 f"{r.images} images in {r.elapsed_s:.1f} s" + (f" ({stages})" if stages else "")))
    return rows
