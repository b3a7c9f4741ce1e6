"""Mix throughput: ONNX Runtime vs PyTorch eager on the same model and inputs, in one process.

The workload is what ``g2g mix`` does for P poses x I identities: encode each
pose once (E_A), each identity once (E_B), then decode every pair, all in
batches of B. Both backends get the same crops, the same batching and the same
thread count; the printed ratio is ORT pairs/s over PyTorch pairs/s at the same
batch size (no absolute numbers are asserted anywhere).

CPU: B = 1, 8, 32. CUDA (when a GPU and onnxruntime's CUDA provider are usable):
ORT fp32, ORT fp32 + IO binding, ORT fp16 + IO binding against PyTorch eager
fp32 and fp16 (autocast); otherwise it says why those rows are skipped.

    python bench/mix_speed.py                      # funit preset (128 px), untrained weights
    python bench/mix_speed.py --preset funit-tiny  # quick check
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def build_bundle(preset: str, root: Path) -> tuple[object, Path]:
    """An untrained generator, its checkpoint root/ck.pt and its fp32 ONNX bundle root/fp32."""
    import torch

    from g2g.config import TrainConfig, model_preset
    from g2g.export.onnx_export import export_bundle
    from g2g.train.checkpoint import save_checkpoint
    from g2g.train.model import Generator

    torch.manual_seed(0)
    cfg = model_preset(preset)
    gen = Generator(cfg).eval()
    sd = gen.state_dict()
    save_checkpoint(root / "ck.pt", {"config": asdict(TrainConfig(model=cfg)), "step": 0, "generator": sd, "generator_ema": sd})
    t = time.perf_counter()
    rep = export_bundle(root / "ck.pt", root / "fp32", identity=False)
    print(f"export fp32: {time.perf_counter() - t:.1f} s, parity {max(rep.parity.values()):.1e} ({rep.parity_source})")
    return gen, root / "fp32"


def build_fp16(root: Path) -> Path:
    from g2g.export.onnx_export import export_bundle

    rep = export_bundle(root / "ck.pt", root / "fp16", fp16=True, identity=False)
    print(f"export fp16: parity {max(rep.parity.values()):.1e}")
    return root / "fp16"


def plan_indices(poses: int, ids: int) -> tuple[np.ndarray, np.ndarray]:
    pi, ii = np.meshgrid(np.arange(poses), np.arange(ids), indexing="ij")
    return pi.ravel(), ii.ravel()


def run_ort(bundle, poses: np.ndarray, ids: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds for the whole mix on a Bundle (its batch_size), and the last decoded batch."""
    pi, ii = plan_indices(len(poses), len(ids))
    B = bundle.batch_size
    t = time.perf_counter()
    content = bundle.encode_content(poses)  # (P, C, h, w)
    codes = bundle.encode_class(ids[:, None])  # (I, code), K = 1
    out = None
    for s in range(0, len(pi), B):
        out = bundle.decode(content[pi[s : s + B]], codes[ii[s : s + B]])
    return time.perf_counter() - t, out


def run_torch(gen, poses: np.ndarray, ids: np.ndarray, B: int, device: str, half: bool) -> tuple[float, np.ndarray]:
    """The same mix in PyTorch eager (numpy in, numpy out, like ORT)."""
    import torch

    pi, ii = plan_indices(len(poses), len(ids))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    ctx = torch.autocast("cuda", dtype=torch.float16) if half else torch.autocast("cpu", enabled=False)
    t = time.perf_counter()
    with torch.inference_mode(), ctx:
        def batched(fn, x):
            return torch.cat([fn(torch.from_numpy(x[s : s + B]).to(device)) for s in range(0, len(x), B)])

        content = batched(gen.content_encoder, poses)
        codes = batched(gen.class_encoder, ids)
        out = None
        for s in range(0, len(pi), B):
            out = gen.decoder(content[pi[s : s + B]], codes[ii[s : s + B]]).float().cpu().numpy()
        sync()
    return time.perf_counter() - t, out


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    fn()  # warm-up (allocations, kernel selection)
    best, out = min((fn() for _ in range(repeats)), key=lambda r: r[0])
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="funit", help="a funit preset (funit: FUNIT's size, 128 px)")
    ap.add_argument("--poses", type=int, default=16)
    ap.add_argument("--ids", type=int, default=4)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per row (best is kept)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for both backends")
    args = ap.parse_args()

    import torch

    from g2g.bundle import open_bundle
    from g2g.runtime import open_session

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="g2g-bench-") as tmp:
        gen, fp32_dir = build_bundle(args.preset, Path(tmp))
        cuda_probe = open_session(fp32_dir / "decoder.onnx", device="cuda")
        has_cuda = cuda_probe.device.startswith("cuda") and torch.cuda.is_available()
        fp16_dir = build_fp16(Path(tmp)) if has_cuda else None
        S = gen.cfg.image_size
        rng = np.random.default_rng(0)
        poses = rng.uniform(-1, 1, (args.poses, 3, S, S)).astype(np.float32)
        ids = rng.uniform(-1, 1, (args.ids, 3, S, S)).astype(np.float32)
        n_pairs = args.poses * args.ids
        print(f"\nmix of {args.poses} poses x {args.ids} identities = {n_pairs} pairs, {args.preset} preset "
              f"({S} px), untrained weights, {args.threads} CPU threads, torch {torch.__version__}")
        print(f"{'device':6} {'batch':>5}  {'backend':34} {'pairs/s':>9}  {'vs torch':>8}  {'max|diff|':>9}")

        def row(dev, B, name, secs, out, ref_secs, ref_out):
            diff = float(np.abs(out - ref_out).max()) if ref_out is not None else 0.0
            ratio = f"{ref_secs / secs:7.2f}x" if ref_secs else "      -"
            print(f"{dev:6} {B:5d}  {name:34} {n_pairs / secs:9.1f}  {ratio}  {diff:9.1e}", flush=True)

        for B in batches:
            t_secs, t_out = timed(lambda: run_torch(gen, poses, ids, B, "cpu", False), args.repeats)
            row("cpu", B, "pytorch eager fp32", t_secs, t_out, None, None)
            b = open_bundle(fp32_dir, "cpu", batch_size=B, threads=args.threads)
            o_secs, o_out = timed(lambda: run_ort(b, poses, ids), args.repeats)
            row("cpu", B, "onnxruntime fp32", o_secs, o_out, t_secs, t_out)

        if not has_cuda:
            why = cuda_probe.note or ("torch sees no CUDA GPU" if not torch.cuda.is_available() else "")
            print(f"\ncuda rows skipped: {why or 'no usable GPU'}")
            return 0
        gen_cuda = gen.to("cuda")
        for B in batches:
            t_secs, t_out = timed(lambda: run_torch(gen_cuda, poses, ids, B, "cuda", False), args.repeats)
            row("cuda", B, "pytorch eager fp32", t_secs, t_out, None, None)
            h_secs, h_out = timed(lambda: run_torch(gen_cuda, poses, ids, B, "cuda", True), args.repeats)
            row("cuda", B, "pytorch eager fp16 (autocast)", h_secs, h_out, t_secs, t_out)
            for name, d, bind in (("onnxruntime fp32", fp32_dir, False), ("onnxruntime fp32 + IO binding", fp32_dir, True),
                                  ("onnxruntime fp16 + IO binding", fp16_dir, True)):
                b = open_bundle(d, "cuda", batch_size=B, io_binding=bind)
                o_secs, o_out = timed(lambda: run_ort(b, poses, ids), args.repeats)
                row("cuda", B, f"{name} [{b.providers[0][:4]}]", o_secs, o_out, t_secs, t_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
