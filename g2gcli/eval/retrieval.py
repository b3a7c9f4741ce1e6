"""``id-sim`` and ``id-retrieval``: does each mixed crop look like its identity source, and not like its pose source?

Each output is compared with the mean embedding of its identity's aligned crops
in the identity network's own distance (dlib: Euclidean, threshold 0.6), and
with its pose crop (the baseline it must beat). Reference distributions come
from the run's real crops, measured the same way (one image vs an identity's
mean): same-person = an identity crop vs the mean of the *other* crops of its
identity; different-person = an identity crop (or a pose crop, when poses sit
in per-person folders) vs another identity's mean. Folders are taken as people.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from g2g.eval import metrics as M
from g2g.config import AlignConfig, EvalConfig
from g2g.eval.runs import MixRun, map_crops, mixed_crop
from g2g.eval.report import EvalError
from g2g.faces.preprocess import same_zoom

IDENTITY_NETS = ("dlib", "facenet-vggface2", "facenet-casia-webface")


# --- networks -----------------------------------------------------------------------------------------------------


def trained_against(facts: dict[str, Any] | None) -> tuple[str | None, str]:
    """(identity net the model's ID loss used or None, explanation) from g2g_model.json's "train" config."""
    if facts is None:
        return None, "unknown (no readable g2g_model.json)"
    train = facts.get("train") or {}
    net = "dlib"  # the only identity network the trainer's L_id uses
    if float(train.get("delta_id", 1.0) or 0.0) <= 0.0:
        return None, "no identity loss (delta_id = 0)"
    return str(net), f"identity loss delta_id = {train.get('delta_id', 1.0)}"


def parse_nets(spec: str) -> list[str]:
    """``"dlib,facenet-vggface2"`` -> known network names, in order, without repeats."""
    names = [n.strip() for n in str(spec).split(",") if n.strip()]
    if not names:
        raise EvalError("--eval-net is empty; use dlib", usage=True)
    for n in names:
        if n not in IDENTITY_NETS:
            raise EvalError(f"unknown --eval-net {n!r}; choose from {', '.join(IDENTITY_NETS)}", usage=True)
    return list(dict.fromkeys(names))


def open_identity_net(name: str, align: AlignConfig, device: str, batch_size: int, model_dir: Path | None = None):
    """An :class:`g2g.faces.embedder.IdentityEmbedder` for ``name`` at the run's crop size and zoom.

    dlib reuses MODEL_DIR/identity.onnx when its metadata matches; otherwise its
    network is built once into the user cache from dlib's weights (numpy, no torch).
    facenet variants need their weights on disk already (no download here) and their
    network exported into the cache by the training install: a one-line error otherwise.
    """
    from g2g.faces.embedder import IdentityEmbedder
    from g2g.runtime import read_metadata

    if name != "dlib":
        from g2g.weights import WeightsError, locate

        try:
            locate(name)
        except WeightsError as e:
            raise EvalError(f"--eval-net {name}: weights not available ({e})") from None
    cand = Path(model_dir) / "identity.onnx" if model_dir is not None and name == "dlib" else None
    if cand is not None and cand.is_file():
        try:
            meta = read_metadata(cand)
            if (meta.get("identity_net") == name and int(meta.get("input_size", 0)) == align.size
                    and same_zoom(meta.get("zoom", "nan"), align.zoom)):
                return IdentityEmbedder(cand, device=device, batch_size=batch_size)
        except Exception:  # unreadable or foreign file: use the cached one below
            pass
    try:
        from g2g.faces.embedder import cached_identity_onnx

        path = cached_identity_onnx(name, zoom=align.zoom, size=align.size)
    except Exception as e:  # a facenet net not exported, missing weights, unsupported size: one line
        raise EvalError(f"cannot open the {name} identity network: {e}") from None
    return IdentityEmbedder(path, device=device, batch_size=batch_size)


def embed_paths(net, root: Path, rels: Sequence[str], size: int, batch: int) -> dict[str, np.ndarray]:
    """Embeddings of the crops at ``root/rel`` (unreadable crops are left out), read in batches."""
    return map_crops(net.embed, root, rels, size, batch, f"eval {net.name}")


# --- distances ----------------------------------------------------------------------------------------------------


def _rowwise(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Distance of matching rows, (N, D) x (N, D) -> (N,)."""
    return M.rowwise_euclidean if metric == "euclidean" else (lambda a, b: 1.0 - M.rowwise_cosine(a, b))


def _distance(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Distance of every pair of rows, (N, D) x (M, D) -> (N, M)."""
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


# --- metrics ------------------------------------------------------------------------------------------------------


def _pose_people(run: MixRun, emb: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(person folder, embedding) of each pose crop, when poses sit in per-person folders."""
    extra: dict[str, tuple[str, np.ndarray]] = {}
    for r in run.ok:
        parts = Path(str(r["pose"])).parts
        if len(parts) > 1 and r["pose_crop"] in emb:
            extra[r["pose_crop"]] = (parts[0], emb[r["pose_crop"]])
    return list(extra.values())


def identity_metrics(run: MixRun, net, cfg: EvalConfig, rows: dict[int, dict[str, Any]]) -> tuple[dict, dict, dict]:
    """(id-sim numbers, id-retrieval numbers, arrays for plots) for one network; fills per-image ``rows``."""
    tag, metric, thr = net.name, net.metric, net.threshold
    dist = _distance(metric)
    gallery_rels = [c for cs in run.gallery.values() for c in cs]
    rels = gallery_rels + [r["pose_crop"] for r in run.ok] + [mixed_crop(r) for r in run.ok]
    emb = embed_paths(net, run.out, rels, run.align.size, cfg.batch_size)
    crops = {n: [emb[c] for c in cs if c in emb] for n, cs in run.gallery.items()}
    crops = {n: v for n, v in crops.items() if v}
    names = list(crops)
    index = {n: i for i, n in enumerate(names)}
    means = np.stack([np.mean(crops[n], axis=0) for n in names]) if names else np.zeros((0, 1))  # (identities, D)
    extra = _pose_people(run, emb)
    ref = reference_distributions(crops, extra, metric, cfg.max_pairs, cfg.seed)

    ev = [r for r in run.ok if r["identity"] in index and mixed_crop(r) in emb and r["pose_crop"] in emb]
    e_out = np.stack([emb[mixed_crop(r)] for r in ev]) if ev else np.zeros((0, means.shape[1]))  # (N, D)
    e_pose = np.stack([emb[r["pose_crop"]] for r in ev]) if ev else np.zeros((0, means.shape[1]))  # (N, D)
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
        rows[id(r)].update({
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
    pose_people = {lab for lab, _ in extra}
    sim = {
        "network": tag, "distance": metric, "threshold": thr, "n_outputs": len(ev), "n_unscored": len(run.ok) - len(ev),
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
    retr.update(pose_leak(ev, index, nearest, ranks))
    arrays = {"d_id": d_id, "d_pose": d_pose, "same": ref["same"], "diff": ref["diff"], "ev": ev}
    return sim, retr, arrays


def pose_person(rec: dict[str, Any], index: dict[str, int]) -> str | None:
    """The identity of a pose photo, where the run names it: its first folder, or its stem, is an identity."""
    parts = Path(str(rec["pose"])).parts
    for name in (parts[0] if len(parts) > 1 else None, Path(str(rec["pose"])).stem):
        if name is not None and name in index:
            return name
    return None


def pose_leak(ev: list[dict[str, Any]], index: dict[str, int], nearest: np.ndarray, ranks: np.ndarray) -> dict[str, Any]:
    """On pairs whose pose person is a known identity other than the target: how often the output is nearest to
    the pose person (what the rest leaks), and top-1/top-5 on those cross pairs alone."""
    cross = [(k, pose_person(r, index)) for k, r in enumerate(ev)]
    cross = [(k, p) for k, p in cross if p is not None and p != ev[k]["identity"]]
    if not cross:
        return {"pose_leak": None, "n_cross": 0, "top1_cross": None, "top5_cross": None}
    ks = np.array([k for k, _ in cross])
    leak = float(np.mean([nearest[k] == index[p] for k, p in cross]))
    return {"pose_leak": leak, "n_cross": len(cross), "top1_cross": M.top_k_accuracy(ranks[ks], 1),
            "top5_cross": M.top_k_accuracy(ranks[ks], 5)}
