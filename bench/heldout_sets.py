"""Build the held-out mix inputs for bench/quality.sh from a prepare DATA folder and a run's split.

For each validation identity (unseen in training): its first crop becomes a pose
photo (``POSES/<id>.png``) and its next ``--k`` crops the identity's photos
(``IDS/<id>/``), so every output is judged against photos the pose did not come from.
Nothing is written outside OUT.

    python bench/heldout_sets.py DATA RUN/split.json OUT [--k 3] [--max-ids 24]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

from g2g.io.files import read_jsonl, safe_join


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("split", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--k", type=int, default=3, help="identity photos per person (K-shot)")
    ap.add_argument("--max-ids", type=int, default=24, help="held-out people used")
    args = ap.parse_args()

    val = set(json.loads(args.split.read_text())["val"])
    crops: dict[str, list[str]] = defaultdict(list)
    for rec in read_jsonl(args.data / "manifest.jsonl"):
        if rec.get("status") == "ok" and rec["identity"] in val:
            crops[rec["identity"]].append(rec["output"])
    people = [p for p in sorted(crops) if len(crops[p]) > args.k][: args.max_ids]
    (args.out / "poses").mkdir(parents=True, exist_ok=True)
    for person in people:
        first, *rest = sorted(crops[person])
        shutil.copy(args.data / first, safe_join(args.out, f"poses/{person}.png"))
        for rel in rest[: args.k]:
            dst = safe_join(args.out, f"ids/{person}/{Path(rel).name}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(args.data / rel, dst)
    print(f"{len(people)} held-out people -> {args.out}/poses ({len(people)} photos), {args.out}/ids (K={args.k})")


if __name__ == "__main__":
    main()
