"""Eval throughput on CPU: ``g2g eval`` images/s against the bare networks it runs.

Builds a mix OUT folder (the layout g2g mix writes: g2gcli/mix/) from real aligned crops,
with other photos of the identities standing in for mixed outputs (eval's cost
does not depend on who made the pixels), then times ``evaluate`` per metric and,
in the same process, the bare identity network (ONNX Runtime on in-memory
crops) and bare MTCNN: the ratios say how much eval adds on top (file reads,
reference distributions, CSV, plots).

    python bench/eval_speed.py                 # prepares a few ../shared photos into a temp dir
    python bench/eval_speed.py --data /tmp/g2g-prep-wild --identities 16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "celeba-wild"


def prepared_data(tmp: Path, identities: int, per_identity: int) -> Path:
    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder

    if not SHARED.is_dir():
        sys.exit(f"no --data given and no real photos at {SHARED}")
    raw = tmp / "raw"
    for d in sorted(p for p in SHARED.iterdir() if p.is_dir())[:identities]:
        (raw / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.jpg"))[:per_identity]:
            shutil.copy(f, raw / d.name / f.name)
    prepare_folder(raw, tmp / "data", PrepareConfig(size=128), progress=False)
    return tmp / "data"


def build_out(data: Path, out: Path, identities: int) -> int:
    """OUT with identities x (identities - 1) outputs; returns the number of ok outputs."""
    from g2g.io.files import append_jsonl, atomic_write_json
    from g2g.prepare import read_manifest

    by: dict[str, list[str]] = {}
    size, zoom = 128, 1.3
    for r in read_manifest(data):
        by.setdefault(r["identity"], []).append(r["output"])
        size, zoom = r["size"], r["zoom"]
    names = [n for n in sorted(by) if len(by[n]) >= 5][:identities]
    if len(names) < 2:
        sys.exit(f"{data}: need 2 or more identities with 5 aligned crops")
    atomic_write_json(out / "run.json", {"align": {"size": size, "zoom": zoom}, "model_dir": None, "version": "bench"})

    from PIL import Image

    rng = np.random.default_rng(0)

    def put(src: str, rel: str, jitter: bool = False) -> str:
        """Copy a crop; ``jitter`` adds +-1 noise so no two outputs share pixels (as in a real run)."""
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if jitter:
            a = np.asarray(Image.open(data / src).convert("RGB")).astype(np.int16) + rng.integers(-1, 2, (size, size, 3))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(out / rel)
        else:
            shutil.copy(data / src, out / rel)
        return rel

    gallery = {n: [put(c, f"aligned/ids/{n}/{Path(c).stem}.png") for c in sorted(by[n])[:3]] for n in names}
    recs = []
    for x in names:
        pose = sorted(by[x])[4]
        pc = put(pose, f"aligned/poses/{x}/{Path(pose).stem}.png")
        for y in names:
            if x != y:
                mc = put(sorted(by[y])[3], f"{x}/{Path(pose).stem}__{y}.png", jitter=True)
                recs.append({"status": "ok", "reason": None, "pose": f"{x}/{Path(pose).name}", "identity": y,
                             "output": mc, "mixed_crop": mc, "pose_crop": pc, "identity_crops": gallery[y]})
    append_jsonl(out / "manifest.jsonl", recs)
    return len(recs)


def crops_of(out: Path, n: int) -> np.ndarray:
    from g2g.eval import read_crop

    paths = sorted(p for p in out.glob("*/*__*.png"))[:n]  # mixed outputs: all distinct
    return np.stack([read_crop(p) for p in paths])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a g2g prepare folder (default: prepare a few ../shared photos)")
    ap.add_argument("--identities", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from g2g.config import AlignConfig, EvalConfig
    from g2g.faces.detect import FaceDetector
    from g2g.eval import evaluate, open_identity_net

    tmp = Path(tempfile.mkdtemp(prefix="g2g-eval-bench-"))
    try:
        data = args.data or prepared_data(tmp, args.identities, 6)
        out = tmp / "out"
        n = build_out(data, out, args.identities)
        cfg = EvalConfig(device="cpu", batch_size=args.batch_size, out_dir=str(tmp / "eval"))
        evaluate(out, ["id-sim"], cfg)  # warm-up: identity ONNX export into the cache, session start
        run = json.loads((out / "run.json").read_text())["align"]
        align = AlignConfig(size=run["size"], zoom=run["zoom"])
        crops = crops_of(out, 64)

        net = open_identity_net("dlib", align, "cpu", args.batch_size)
        net.embed(crops[:4])
        t = time.perf_counter()
        net.embed(crops)
        embed_ips = len(crops) / (time.perf_counter() - t)
        det = FaceDetector("cpu", min_face=max(12, align.size // 6))
        det.detect_batch(list(crops[:2]))
        t = time.perf_counter()
        for i in range(0, len(crops), args.batch_size):
            det.detect_batch(list(crops[i : i + args.batch_size]))
        det_ips = len(crops) / (time.perf_counter() - t)

        print(f"{n} outputs, {len(crops)} crops for the bare baselines, {align.size} px, CPU")
        print(f"bare dlib ResNet (ORT):   {embed_ips:7.1f} crops/s")
        print(f"bare MTCNN:               {det_ips:7.1f} crops/s")
        for metrics, base in ((["id-sim", "id-retrieval"], embed_ips), (["pose"], det_ips)):
            rep = evaluate(out, metrics, cfg)
            ips = rep.images_per_s
            # each output sends ~1 new crop through the network (pose and identity crops are shared by many
            # outputs), so the bare network's crop rate bounds eval's output rate: ratio 1.0 = no overhead
            print(f"eval {','.join(metrics):22s} {ips:7.1f} outputs/s = {ips / base:.2f}x the bare network's crop rate")
        rep = evaluate(out, ["all"], cfg)
        print(f"eval all                  {rep.images_per_s:7.1f} outputs/s  ({rep.elapsed_s:.1f} s; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in rep.timings.items()) + ")")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
