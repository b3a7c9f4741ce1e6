"""The 6 x 5 grid of docs/realism.md, before and after, side by side, from the real photos in ../shared.

Six pose photos and five people (three photos each) of ``celeba-wild``, mixed by the
method that was the default before the realism mechanisms (expression-paste with the
pose's mouth, 128 px crops) and by today's default, each written by ``g2g mix --grid``,
then put side by side in ``OUT/before_after.jpg``. The photos are CelebA's
(non-commercial research use): the picture stays in OUT, outside the project.

    python bench/realism_grid.py OUT [--shared ../shared]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

POSES = ("7224/010237", "7226/182818", "7227/000772", "7228/006497", "7229/011321", "7231/007053")
PEOPLE = ("7201", "7203", "7204", "7206", "7207")
RUNS = {  # name -> MixConfig fields
    "before": dict(method="expression-paste", keep_mouth=True, size=128),
    "after": dict(),  # the default
}


def inputs(shared: Path, out: Path) -> tuple[Path, Path]:
    """OUT/inputs/poses and OUT/inputs/ids, copied from ``shared``/faces/celeba-wild."""
    wild = shared / "faces" / "celeba-wild"
    poses, ids = out / "inputs" / "poses", out / "inputs" / "ids"
    poses.mkdir(parents=True, exist_ok=True)
    for p in POSES:
        shutil.copy(wild / f"{p}.jpg", poses / f"{p.replace('/', '_')}.jpg")
    for person in PEOPLE:
        (ids / person).mkdir(parents=True, exist_ok=True)
        for f in sorted((wild / person).glob("*.jpg"))[:3]:
            shutil.copy(f, ids / person / f.name)
    return poses, ids


def main() -> None:
    from PIL import Image

    from g2g.config import MixConfig
    from g2g.io.files import atomic_save_image
    from g2g.mix import mix_folders

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = ap.parse_args()
    poses, ids = inputs(args.shared, args.out)
    grids = []
    for name, fields in RUNS.items():
        report = mix_folders(poses, ids, args.out / name, MixConfig(grid=True, crop_only=True, **fields),
                             progress=False)
        print(f"{name}: {report.written + report.resumed} pairs, {report.pairs_per_s:.1f} pairs/s; "
              + "; ".join(report.notes))
        grids.append(Image.open(report.grid).convert("RGB"))
    h = max(g.height for g in grids)
    sheet = Image.new("RGB", (sum(g.width for g in grids) + 16 * (len(grids) - 1), h), "white")
    x = 0
    for g in grids:
        sheet.paste(g, (x, 0))
        x += g.width + 16
    atomic_save_image(args.out / "before_after.jpg", sheet)
    print(f"before (left) and after (right): {args.out / 'before_after.jpg'}")


if __name__ == "__main__":
    main()
