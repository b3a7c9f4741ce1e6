"""Merge several ``g2g prepare`` folders into one DATA folder for training (people merged by folder name).

The crops are linked, not copied (hard links, or symlinks across file systems);
manifest lines keep everything, with ``output`` pointing into the new folder. The
prepare settings (size, zoom) must agree. Crops of folders prepared before g2g stored
68-point landmarks get them now (``crop_landmarks68``, as ``g2g prepare`` writes them). Used for the default model: the two
CelebA sets in ../shared share five people, who become one identity each.

    python bench/merge_data.py OUT DATA1 DATA2 ...
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from g2g.io.files import atomic_write_json, atomic_write_text, read_jsonl, safe_join
from g2g.faces.landmarks import landmarks68


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("data", type=Path, nargs="+")
    args = ap.parse_args()
    configs = [json.loads((d / "prepare_config.json").read_text()) for d in args.data]
    keys = ("size", "zoom")
    if any({k: c.get(k) for k in keys} != {k: configs[0].get(k) for k in keys} for c in configs):
        raise SystemExit(f"the folders were prepared with different {', '.join(keys)}: {[c.get('size') for c in configs]}")
    args.out.mkdir(parents=True, exist_ok=True)
    lines, n = [], 0
    for j, d in enumerate(args.data):
        for rec in read_jsonl(d / "manifest.jsonl"):
            if rec.get("status") == "ok" and rec.get("output"):
                src = d / rec["output"]
                rel = Path(str(rec["identity"])) / f"d{j}_{Path(rec['output']).name}"
                dst = safe_join(args.out, rel.as_posix())
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    try:
                        os.link(src, dst)
                    except OSError:
                        os.symlink(src.resolve(), dst)
                rec = {**rec, "output": rel.as_posix(), "source": f"{d.name}/{rec['source']}"}
                if not rec.get("crop_landmarks68"):
                    with Image.open(src) as im:
                        lm = landmarks68(np.asarray(im.convert("RGB")), float(configs[j]["zoom"]))[0]
                    rec["crop_landmarks68"] = np.round(lm.astype(np.float64), 1).tolist()
                n += 1
            lines.append(json.dumps(rec, sort_keys=True))
    atomic_write_text(args.out / "manifest.jsonl", "\n".join(lines) + "\n")
    atomic_write_json(args.out / "prepare_config.json", {**configs[0], "merged_from": [str(d) for d in args.data]})
    people = {json.loads(line)["identity"] for line in lines}
    print(f"{n} crops of {len(people)} people -> {args.out}")


if __name__ == "__main__":
    main()
