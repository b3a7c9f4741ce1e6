"""``g2g eval OUT --baselines``: the non-learned frontier on the very pairs of a mix run, scored the same way.

A model is worth using only where it beats what needs no model. For every ok
pair of the run, ``paste``, ``warp-paste`` and ``expression-paste`` (g2g.methods)
are run on the aligned pose and identity crops the mix kept (``OUT/aligned/``),
written under ``EVAL_DIR/baselines/<method>/`` (a mix output of its own,
resumable), and evaluated with the same metrics as the run (realism included). The report carries their numbers next
to the model's.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from g2g.eval.runs import MixRun
from g2g.io.files import atomic_write_text
from g2g.methods import BASELINES



def baseline_runs(run: MixRun, out_dir: Path) -> dict[str, Path]:
    """Mix every ok pair of ``run`` with each baseline method; -> {method: its mix output folder}."""
    from g2g.config import MixConfig
    from g2g.mix import mix_folders

    poses_dir, ids_dir = run.out / "aligned" / "poses", run.out / "aligned" / "ids"
    prefix = "aligned/poses/"
    rows = sorted({(r["pose_crop"][len(prefix):], r["identity"]) for r in run.ok
                   if str(r.get("pose_crop") or "").startswith(prefix)})
    root = Path(out_dir) / "baselines"
    buf = io.StringIO()
    csv.writer(buf).writerows([("pose", "identity"), *rows])
    atomic_write_text(root / "pairs.csv", buf.getvalue())
    outs = {}
    for method in BASELINES:
        cfg = MixConfig(method=method, aligned=True, size=run.align.size, pairs=str(root / "pairs.csv"), fmt="png",
                        overwrite=True)  # the baselines follow the run
        mix_folders(poses_dir, ids_dir, root / method, cfg, progress=False)
        outs[method] = root / method
    return outs


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a baseline that sit next to the model's in the report."""
    r = next(iter((results.get("id-retrieval") or {}).values()), {})
    e, p, re = results.get("expression") or {}, results.get("pose") or {}, results.get("realism") or {}
    return {"top1": r.get("top1"), "top1_cross": r.get("top1_cross"), "pose_leak": r.get("pose_leak"),
            "expression_error": (e.get("error") or {}).get("mean"),
            "landmark_error": (p.get("landmark_error") or {}).get("mean"),
            "realism_auc": re.get("auc"), "realism_control_auc": re.get("control_auc")}
