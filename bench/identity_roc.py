"""How well the identity network separates people on g2g's own aligned crops.

    python bench/identity_roc.py DATA [--pairs 2000] [--net dlib] [--device auto]

DATA is a ``g2g prepare`` output folder (manifest.jsonl + crops). Every aligned crop
is embedded with the exported identity ONNX model on ONNX Runtime (the path
``g2g eval`` uses), then seeded random same-person and different-person pairs are
scored: ROC AUC for the Euclidean distance and for the cosine similarity, distance
statistics, accuracy at the net's threshold, and embedding speed (images/s), with
PyTorch eager on the same crops as the in-process baseline.

``--aligned-src FOLDER`` instead reads CelebA's aligned release (178x218, one
folder per identity) and re-aligns it geometrically to g2g's template (no detector;
a fallback for when no prepared DATA folder is at hand).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from g2g.io.files import read_jsonl
from g2g.faces.distances import cosine, euclidean
from g2g.faces.embedder import IdentityEmbedder
from g2g.eval.metrics import roc_auc, stats


def load_prepared(data: Path, limit: int = 0) -> tuple[np.ndarray, list[str], int, float]:
    """Crops (N, S, S, 3) uint8, their identities, and the size and zoom they were aligned at."""
    cfg_path = data / "prepare_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    rows = [r for r in read_jsonl(data / "manifest.jsonl") if r.get("status") == "ok" and r.get("output")]
    rows = list({r["output"]: r for r in rows}.values())  # a resumed run may repeat rows
    rows.sort(key=lambda r: r["output"])
    if limit:
        rows = rows[:limit]
    if not rows:
        sys.exit(f"no aligned crops (status ok) in {data / 'manifest.jsonl'}")
    size = int(cfg.get("size", rows[0].get("size", 128)))
    zoom = float(cfg.get("zoom", rows[0].get("zoom", 1.3)))
    crops = np.stack([np.asarray(Image.open(data / r["output"]).convert("RGB")) for r in rows])
    return crops, [str(r["identity"]) for r in rows], size, zoom


def load_celeba_aligned(src: Path, size: int, zoom: float, per_id: int = 12) -> tuple[np.ndarray, list[str]]:
    """CelebA aligned photos warped to g2g's template from CelebA's fixed landmark layout (no detection)."""
    import cv2

    from g2g.faces.align import estimate_similarity, warp_face
    from g2g.config import AlignConfig

    # CelebA's aligned release puts every face's 5 landmarks near these fixed points (178x218 frame)
    celeba_5pt = np.array([[69.0, 111.0], [108.0, 111.0], [88.0, 136.0], [72.0, 152.0], [105.0, 152.0]])
    M = estimate_similarity(celeba_5pt, np.asarray(AlignConfig(size, zoom).template()))
    crops, ids = [], []
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.jpg"))[:per_id]:
            img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            crops.append(warp_face(img, M, size))
            ids.append(d.name)
    return np.stack(crops), ids


def sample_pairs(ids: list[str], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` distinct same-person and ``n`` distinct different-person index pairs (seeded)."""
    rng = np.random.default_rng(seed)
    ids_arr = np.asarray(ids)
    groups = [np.flatnonzero(ids_arr == u) for u in np.unique(ids_arr)]
    groups = [g for g in groups if len(g) >= 2]
    all_same = [(int(a), int(b)) for g in groups for i, a in enumerate(g) for b in g[i + 1 :]]
    pick = rng.choice(len(all_same), size=min(n, len(all_same)), replace=False)
    same = np.array([all_same[i] for i in pick], np.int64).reshape(-1, 2)
    diff: set[tuple[int, int]] = set()
    limit = len(ids) * (len(ids) - 1) // 2
    while len(diff) < n and len(diff) < limit:
        a, b = rng.integers(0, len(ids), size=2)
        if ids[a] != ids[b]:
            diff.add((int(min(a, b)), int(max(a, b))))
    return same, np.array(sorted(diff), np.int64).reshape(-1, 2)


def torch_baseline(crops: np.ndarray, net_name: str, zoom: float, n: int = 128) -> float:
    """PyTorch eager images/s on the first ``n`` crops (the in-process baseline)."""
    import torch

    from g2g.train.identity_net import load_identity_net

    net = load_identity_net(net_name, zoom)
    x = torch.from_numpy(crops[:n]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.inference_mode():
        net(x[:32])  # warm-up (oneDNN picks its kernels on the first calls)
        t = time.perf_counter()
        for i in range(0, len(x), 32):
            net(x[i : i + 32])
    return len(x) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?", help="g2g prepare output folder")
    ap.add_argument("--aligned-src", type=Path, help="fallback: CelebA aligned folder instead of DATA")
    ap.add_argument("--net", default="dlib")
    ap.add_argument("--pairs", type=int, default=2000, help="same-person and different-person pairs, each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N crops (0: all)")
    ap.add_argument("--size", type=int, default=128, help="crop size for --aligned-src")
    ap.add_argument("--zoom", type=float, default=1.3, help="alignment zoom for --aligned-src")
    args = ap.parse_args()

    from g2g.faces.embedder import cached_identity_onnx

    t0 = time.perf_counter()
    if args.aligned_src:
        crops, ids = load_celeba_aligned(args.aligned_src, args.size, args.zoom)
        size, zoom, source = args.size, args.zoom, f"{args.aligned_src} (geometric re-alignment, no detector)"
    elif args.data:
        crops, ids, size, zoom = load_prepared(args.data, args.limit)
        source = str(args.data)
    else:
        ap.error("give DATA or --aligned-src")
    load_s = time.perf_counter() - t0
    model = cached_identity_onnx(args.net, zoom, size)
    base = torch_baseline(crops, args.net, zoom)  # first: ORT's spinning worker threads would slow it down
    emb = IdentityEmbedder(model, args.device, args.batch)
    emb.embed(crops[:2])  # warm-up
    t = time.perf_counter()
    e = emb.embed(crops)
    ips = len(crops) / (time.perf_counter() - t)

    same, diff = sample_pairs(ids, args.pairs, args.seed)
    d_same, d_diff = euclidean(e[same[:, 0]], e[same[:, 1]]), euclidean(e[diff[:, 0]], e[diff[:, 1]])
    c_same, c_diff = cosine(e[same[:, 0]], e[same[:, 1]]), cosine(e[diff[:, 0]], e[diff[:, 1]])
    auc_e, auc_c = roc_auc(-d_same, -d_diff), roc_auc(c_same, c_diff)
    acc = (np.sum(d_same < emb.threshold) + np.sum(d_diff >= emb.threshold)) / (len(d_same) + len(d_diff))

    def fmt(s: dict) -> str:
        return f"mean {s['mean']:.3f} ± {s['std']:.3f}, median {s['median']:.3f}, p05 {s['p05']:.3f}, p95 {s['p95']:.3f}"

    print(f"data: {source}: {len(crops)} crops of {len(set(ids))} people, {size} px, zoom {zoom} (loaded in {load_s:.1f} s)")
    print(f"net: {emb.name} ({model.name}) on {emb.info.providers[0]} {emb.info.note}")
    print(f"pairs: {len(same)} same-person, {len(diff)} different-person (seed {args.seed})")
    print(f"ROC AUC  euclidean {auc_e:.4f}   cosine {auc_c:.4f}")
    print(f"euclidean same: {fmt(stats(d_same))}")
    print(f"euclidean diff: {fmt(stats(d_diff))}")
    print(f"cosine    same: {fmt(stats(c_same))}")
    print(f"cosine    diff: {fmt(stats(c_diff))}")
    print(f"accuracy at the net's threshold {emb.threshold}: {acc:.4f}")
    print(f"speed: ONNX Runtime {ips:.1f} images/s, PyTorch eager {base:.1f} images/s (x{ips / base:.2f})")


if __name__ == "__main__":
    main()
