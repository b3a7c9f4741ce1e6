"""Where a mixed face's give-away comes from, by the realism test of ``g2g eval --metric realism`` on three sets.

From a prepared DATA folder and a split's held-out people (``val``), each person's
first four crops are pose photos (``POSES/<person>/<k>.png``), then:

- ``null``: the identity photos are those same four crops, so each pose is mixed
  with itself (the default picks the closest photo in shape: the pose's own). What
  the classifier finds is the processing alone (warps, colour and tone, blend).
- ``self``: the identity photos are the person's next three crops. Two photos of
  one person: light, pose and expression differ, the person does not.
- ``cross``: ``bench/heldout_sets.py``'s set (one pose photo and three identity
  photos per person) with ``--pairs random --per-pose 10``, as in docs/realism.md.

``null`` and ``self`` pair by name (a pose with its own person). ``--region R``
describes R times the brows-to-chin hull instead of the measure's 1.35 (a diagnosis:
at 0.8 no seam is in it). The numbers go to stdout; nothing is written outside WORK.

    python bench/realism_sources.py DATA bench/default_model_split.json WORK [--method paste] [--fixes none]
    python bench/realism_sources.py DATA bench/default_model_split.json WORK --region 0.8 --sets self
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from g2g.io.files import read_jsonl, safe_join


def build(data: Path, val: set[str], work: Path) -> None:
    """WORK/null and WORK/self (poses/ and ids/ of each held-out person with seven crops or more)."""
    crops: dict[str, list[str]] = defaultdict(list)
    for rec in read_jsonl(data / "manifest.jsonl"):
        if rec.get("status") == "ok" and rec["identity"] in val:
            crops[rec["identity"]].append(rec["output"])
    for person in [p for p in sorted(crops) if len(crops[p]) >= 7]:
        first = sorted(crops[person])
        copies = [(rel, f"{name}/poses/{person}/{k}.png") for k, rel in enumerate(first[:4]) for name in ("null", "self")]
        copies += [(rel, f"null/ids/{person}/{k}.png") for k, rel in enumerate(first[:4])]
        copies += [(rel, f"self/ids/{person}/{Path(rel).name}") for rel in first[4:7]]
        for rel, to in copies:
            dst = safe_join(work, to)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / rel, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("split", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--method", default="auto", help="g2g mix --method (auto: the default)")
    ap.add_argument("--fixes", default=None, help="g2g mix --fixes (default: the method's own)")
    ap.add_argument("--region", type=float, default=None, help="the face region described, x the hull (1.35)")
    ap.add_argument("--sets", default="null,self,cross", help="comma list of null, self, cross")
    args = ap.parse_args()
    import g2g.eval.texture as texture
    from g2g.config import EvalConfig, MixConfig
    from g2g.eval import evaluate
    from g2g.mix import mix_folders

    if args.region:
        texture.REALISM_SCALE = args.region

    val = set(json.loads(args.split.read_text())["val"])
    if not (args.work / "self").is_dir():
        build(args.data, val, args.work)
    if not (args.work / "cross").is_dir():
        subprocess.run([sys.executable, str(Path(__file__).with_name("heldout_sets.py")), str(args.data),
                        str(args.split), str(args.work / "cross"), "--k", "3", "--max-ids", "40"], check=True)
    for name in args.sets.split(","):
        pairs = dict(pairs="random", per_pose=10, seed=0) if name == "cross" else dict(pairs="by-name")
        out = args.work / f"out-{name}-{args.method}-{(args.fixes or 'own').replace(',', '_')}"
        mix = mix_folders(args.work / name / "poses", args.work / name / "ids", out,
                          MixConfig(aligned=True, method=args.method, fixes=args.fixes, **pairs), progress=False)
        ev = out / f"eval-{texture.REALISM_SCALE}"
        r = evaluate(out, ["realism"], EvalConfig(device="cpu", out_dir=str(ev))).results["realism"]
        print(f"{name}, region {texture.REALISM_SCALE}: {mix.planned} pairs, realism AUC {r['auc']:.3f} ± {r['auc_std']:.3f} "
              f"(real vs real {r['control_auc']:.2f}), FD {r['fd']:.0f} ({r['fd_control']:.0f})", flush=True)


if __name__ == "__main__":
    main()
