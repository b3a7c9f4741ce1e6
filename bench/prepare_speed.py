"""Throughput of ``g2g prepare`` on CPU (or --device), split into decode, detect and align+write.

    python bench/prepare_speed.py ../shared/faces/celeba-wild --limit 200

Baseline, measured in the same process on the same photos: a plain sequential
loop (decode, detect one photo, align, write) without the decode thread pool or
batched detection. The pipeline's speed is printed as a ratio to it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from g2g.faces.align import align_face
from g2g.config import PrepareConfig
from g2g.faces.detect import FaceDetector
from g2g.io.files import atomic_save_image
from g2g.io.images import SkipImage, list_images, load_rgb
from g2g.photos import FacePolicy, select_faces
from g2g.prepare import prepare_folder


def subset(src: Path, limit: int, dst: Path) -> list[Path]:
    """Symlink the first ``limit`` photos (identity folders kept) into ``dst``."""
    photos = list_images(src)[:limit]
    for p in photos:
        link = dst / p.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(p.resolve(), link)
    return photos


def sequential(photos: list[Path], cfg: PrepareConfig, det: FaceDetector, out: Path) -> dict[str, float]:
    t = {"decode": 0.0, "detect": 0.0, "align_write": 0.0}
    for i, p in enumerate(photos):
        t0 = time.perf_counter()
        try:
            im = load_rgb(p, cfg.max_pixels, cfg.min_face)
        except SkipImage:
            continue
        t1 = time.perf_counter()
        faces = det.detect(im.rgb)
        t2 = time.perf_counter()
        chosen, _, _ = select_faces(faces, FacePolicy.of(cfg))
        for face in chosen:
            crop, _ = align_face(im.rgb, face.landmarks, cfg.align())
            atomic_save_image(out / f"{i}.{cfg.fmt}", Image.fromarray(crop))
        t3 = time.perf_counter()
        t["decode"] += t1 - t0
        t["detect"] += t2 - t1
        t["align_write"] += t3 - t2
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="folder of photos (identity subfolders)")
    ap.add_argument("--limit", type=int, default=200, help="photos to time")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()

    import torch

    cfg = PrepareConfig(device=args.device, batch_size=args.batch_size, workers=args.workers)
    det = FaceDetector(args.device, min_face=max(12, cfg.min_face // 2))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = subset(args.src, args.limit, tmp / "src")
        n = len(photos)
        det.detect(load_rgb(photos[0]).rgb)  # warm-up
        print(f"{n} photos from {args.src}, device {det.device}, torch threads {torch.get_num_threads()}, "
              f"batch {cfg.batch_size}, workers {cfg.workers}")

        (tmp / "seq").mkdir()
        t0 = time.perf_counter()
        st = sequential(photos, cfg, det, tmp / "seq")
        seq = time.perf_counter() - t0
        print(f"baseline (sequential loop): {n / seq:6.1f} img/s   per photo: decode {1e3 * st['decode'] / n:.1f} ms, "
              f"detect {1e3 * st['detect'] / n:.1f} ms, align+write {1e3 * st['align_write'] / n:.1f} ms")

        r = prepare_folder(tmp / "src", tmp / "out", cfg, progress=False, detector=det)
        t = r.timings
        print(f"prepare_folder:             {r.images_per_s:6.1f} img/s   per photo: decode {1e3 * t['decode'] / n:.1f} ms "
              f"(in {cfg.workers} threads; main thread waited {1e3 * t['wait'] / n:.1f} ms), "
              f"detect {1e3 * t['detect'] / n:.1f} ms, align+write {1e3 * t['align_write'] / n:.1f} ms")
        print(f"ratio prepare_folder / baseline: {r.images_per_s / (n / seq):.2f}x   "
              f"({r.n_ok}/{n} aligned, {r.elapsed:.1f} s)")


if __name__ == "__main__":
    main()
