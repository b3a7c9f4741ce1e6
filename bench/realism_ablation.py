"""The realism ablation of docs/realism.md: each fix of ``g2g mix --fixes`` on and off, on held-out people.

Every row mixes the same pairs of ``HELDOUT`` (``bench/heldout_sets.py`` output: ``poses/`` and
``ids/<person>/``) with ``--aligned --pairs random --per-pose 10 --seed 0``, then runs ``g2g eval
--metric id-retrieval,expression,realism``; the table (markdown) goes to stdout and WORK/table.md. Rows already
evaluated in WORK are read back, so a rerun resumes. Speed is each mix's own pairs/s (landmarks included):
run nothing else on the machine for comparable figures.

    python bench/realism_ablation.py HELDOUT WORK [--rows default,today,...] [--per-pose 10]
    python bench/realism_ablation.py HELDOUT WORK --rows default --model "refiner, 600 steps=models/ref"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# name -> (label, MixConfig fields)
ROWS: dict[str, tuple[str, dict]] = {
    "paste": ("`--method paste`", dict(method="paste")),
    "warp-paste": ("`--method warp-paste`", dict(method="warp-paste")),
    "none": ("`--method expression-paste` (no fixes)", dict(method="expression-paste")),
    "today": ("previous default: `expression-paste --keep-mouth`", dict(method="expression-paste", keep_mouth=True)),
    "default": ("**default** (`--fixes default` = mouth, sharp, tone)", dict()),
    **{f"d-{f}": (f"default − {f}", dict(method="expression-paste", fixes=f"default,-{f}"))
       for f in ("mouth", "sharp", "tone")},
    **{f"d+{f}": (f"default + {f}", dict(method="expression-paste", fixes=f"default,{f}"))
       for f in ("eyes", "skin", "pose-occluders", "occlusion", "seam", "quality")},
    **{f"only-{f}": (f"expression-paste + {f} only", dict(method="expression-paste", fixes=f))
       for f in ("mouth", "sharp", "tone", "eyes", "skin", "pose-occluders", "occlusion", "seam", "quality")},
    "all": ("`--fixes all`", dict(method="expression-paste", fixes="all")),
    "model": ("shipped model (64 px, no realism term)", dict(method="model")),
}


def run_row(name: str, heldout: Path, work: Path, per_pose: int, model_dir: Path | None = None) -> dict:
    """Mix and evaluate one row (or read its earlier results); -> the numbers of the table. ``model_dir``: the
    row is ``--method model`` with that bundle."""
    import hashlib

    from g2g.config import EvalConfig, MixConfig
    from g2g.eval import evaluate
    from g2g.mix import mix_folders

    key = name if model_dir is None else "model-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    out, saved = work / key, work / f"{key}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    fields = ROWS[name][1] if model_dir is None else dict(method="model")
    cfg = MixConfig(aligned=True, pairs="random", per_pose=per_pose, seed=0, **fields)
    mix = mix_folders(heldout / "poses", heldout / "ids", out, cfg, progress=False, model_dir=model_dir)
    rep = evaluate(out, ["id-retrieval", "expression", "realism"], EvalConfig(device="cpu"))
    ident, expr, real = rep.results["id-retrieval"]["dlib"], rep.results["expression"], rep.results["realism"]
    row = {"top1_cross": ident["top1_cross"], "pose_leak": ident["pose_leak"], "expression": expr["error"]["mean"],
           "auc": real["auc"], "auc_std": real["auc_std"], "control": real["control_auc"], "fd": real["fd"],
           "fd_control": real["fd_control"], "pairs_per_s": mix.pairs_per_s if not mix.resumed else None}
    saved.write_text(json.dumps(row))
    return row


def table(rows: dict[str, dict]) -> str:
    lines = ["| method | identity top-1 (cross) | pose leak | expression error | realism AUC (real vs real) "
             "| FD (real vs real) | pairs/s |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        speed = f"{r['pairs_per_s']:.0f}" if r.get("pairs_per_s") else "–"
        lines.append(f"| {ROWS[name][0] if name in ROWS else name} | {100 * r['top1_cross']:.1f}% | {100 * r['pose_leak']:.1f}% | "
                     f"{r['expression']:.3f} | {r['auc']:.3f} ± {r['auc_std']:.3f} ({r['control']:.2f}) | "
                     f"{r['fd']:.0f} ({r['fd_control']:.0f}) | {speed} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("heldout", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma list of " + ", ".join(ROWS))
    ap.add_argument("--per-pose", type=int, default=10)
    ap.add_argument("--model", action="append", default=[], metavar="LABEL=DIR",
                    help="a row more: --method model with the bundle DIR, labelled LABEL (repeatable)")
    args = ap.parse_args()
    names = [n for n in args.rows.split(",") if n]
    models = dict(m.rsplit("=", 1) for m in args.model if "=" in m)
    if len(models) != len(args.model):
        raise SystemExit("error: --model takes LABEL=DIR")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    rows = {}
    for n in names + list(models):
        rows[n] = run_row(n, args.heldout, args.work, args.per_pose, Path(models[n]) if n in models else None)
        print(f"{n}: AUC {rows[n]['auc']:.3f}, top-1 {100 * rows[n]['top1_cross']:.1f}%", flush=True)
    text = table(rows)
    (args.work / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
