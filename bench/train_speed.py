"""Training throughput of ``g2g train``: images/s and time per step split into G/D forward/backward.

    python bench/train_speed.py                       # funit and funit-small at 128 px, batch 4, CPU (+ GPU if any)
    python bench/train_speed.py --presets funit-small --steps 5 --batch-size 8 --threads 1

Each step is the real cross-training step (CrossTrainer.step: ST-LPIPS, the dlib
identity net, hinge GAN, RMSprop, EMA: each preset's own recipe) on synthetic batches
with the alignment template's landmarks, so only compute is measured. Ratios are against
the funit-tiny preset at 64 px measured in the same process on the same device (the test-suite
model). "images" = the 2·batch real images a and b of each step.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from g2g.config import AlignConfig, get_preset
from g2g.train.step import CrossTrainer


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} torch threads)"


def synthetic_batch(n: int, k: int, size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lm = torch.tensor(AlignConfig(size=size).template(), dtype=torch.float32)[None].repeat(n, 1, 1)
    return {"a_k": torch.rand(n, k, 3, size, size, generator=g) * 2 - 1,
            "b_k": torch.rand(n, k, 3, size, size, generator=g) * 2 - 1, "lm_a": lm, "lm_b": lm.clone()}


def measure(preset: str, size: int, batch: int, steps: int, dev: torch.device, aux: bool) -> dict[str, float]:
    cfg = get_preset(preset).config({"image_size": size}, batch_size=batch, device=str(dev),
                                    alpha_vgg=1.0 if aux else 0.0, delta_id=1.0 if aux else 0.0)
    tr = CrossTrainer(cfg, dev)
    b = synthetic_batch(batch, 1, size)
    tr.step(b, 0)  # warm-up: allocations, oneDNN/cuDNN plans
    tr.timing.clear()
    t0 = time.perf_counter()
    for i in range(steps):
        tr.step(b, i + 1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per = (time.perf_counter() - t0) / steps
    out = {"s_per_step": per, "images_per_s": 2 * batch / per}
    out.update({k: v / steps for k, v in tr.timing.items()})
    out["params_g_M"] = sum(p.numel() for p in tr.gen.parameters()) / 1e6
    out["params_d_M"] = sum(p.numel() for p in tr.dis.parameters()) / 1e6 if tr.dis is not None else 0.0
    return out


def report(label: str, r: dict[str, float], base: dict[str, float] | None) -> None:
    parts = " ".join(f"{k} {1000 * r[k]:.0f} ms ({100 * r[k] / r['s_per_step']:.0f}%)"
                     for k in ("forward_g", "backward_g", "forward_d", "backward_d"))
    ratio = f", {r['s_per_step'] / base['s_per_step']:.1f}x the funit-tiny 64px step" if base else ""
    print(f"{label:<28} {r['s_per_step']:.3f} s/step, {r['images_per_s']:.1f} images/s{ratio}  "
          f"[G {r['params_g_M']:.1f}M, D {r['params_d_M']:.1f}M params]\n{'':<28} {parts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="funit,funit-small", help="comma list of funit presets to time at --size")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per step on the CPU")
    ap.add_argument("--gpu-batch-size", type=int, default=16, help="pairs per step on a GPU")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-aux", action="store_true", help="leave out the perceptual and identity networks")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    for dev in devices:
        batch = args.batch_size if dev.type == "cpu" else args.gpu_batch_size
        print(f"device: {device_name(dev)}; torch {torch.__version__}; batch {batch} pairs; "
              f"{'no aux nets' if args.no_aux else 'ST-LPIPS + dlib identity net included'}")
        base = measure("funit-tiny", 64, batch, args.steps, dev, not args.no_aux)
        report("funit-tiny 64px (baseline)", base, None)
        for preset in args.presets.split(","):
            r = measure(preset, args.size, batch, args.steps, dev, not args.no_aux)
            report(f"{preset} {args.size}px", r, base)


if __name__ == "__main__":
    main()
