"""The files ``g2g eval`` writes beside report.json: id-sim histogram, example sheets and per-image CSVs (atomic)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from g2g.eval.runs import MixRun, mixed_crop, read_crop
from g2g.io.files import atomic_save_image, atomic_write_text


def plot_id_hist(path: Path, arrays: dict[str, Any], net) -> None:
    """Distances of outputs to their identity and pose photo over the real same/different-person distributions."""
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend or figure registry

    from g2g.io.sheets import save_figure

    vals = [a for a in (arrays["d_id"], arrays["same"], arrays["diff"], arrays["d_pose"]) if len(a)]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    if vals:
        lo, hi = float(min(v.min() for v in vals)), float(max(v.max() for v in vals))
        bins = np.linspace(lo, hi + 1e-9, 40)
        for a, label, kw in [
            (arrays["same"], "real same-person", dict(color="tab:green", alpha=0.35)),
            (arrays["diff"], "real different-person", dict(color="tab:red", alpha=0.35)),
            (arrays["d_id"], "output vs its identity", dict(histtype="step", color="k", linewidth=2)),
            (arrays["d_pose"], "output vs its pose photo", dict(histtype="step", color="tab:blue", linestyle="--")),
        ]:
            if len(a):
                ax.hist(a, bins=bins, density=True, label=f"{label} (n={len(a)})", **kw)
    if np.isfinite(net.threshold):
        ax.axvline(net.threshold, color="grey", linestyle=":", label=f"{net.name} threshold {net.threshold:g}")
    ax.set_xlabel(f"{net.name} {'Euclidean distance' if net.metric == 'euclidean' else 'cosine distance'} "
                  "(image vs identity mean)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def examples_sheet(path: Path, run: MixRun, arrays: dict[str, Any], k: int) -> None:
    """Best and worst outputs by distance to their identity: pose | identity | output (nothing when none scored)."""
    from g2g.io.sheets import contact_sheet

    ev, d = arrays["ev"], arrays["d_id"]
    if not ev:
        return
    order = np.argsort(d)
    best = set(order[:k])
    pick = list(order[:k]) + [i for i in order[::-1][:k] if i not in best]
    rows, labels = [], []
    size = run.align.size
    for i in pick:
        r = ev[int(i)]
        ids = run.gallery.get(r["identity"]) or []
        rows.append([read_crop(run.out / r["pose_crop"], size), read_crop(run.out / ids[0], size) if ids else None,
                     read_crop(run.out / mixed_crop(r), size)])
        labels.append(f"{'best' if i in best else 'worst'} {d[int(i)]:.3f}")
    atomic_save_image(path, contact_sheet(rows, labels, ["pose", "identity", "output"], cell=min(size, 128)))


def recon_sheet(path: Path, rows: Sequence[Sequence[np.ndarray]], columns: Sequence[str]) -> None:
    """Reconstruction examples, one held-out crop a per row, one column per name in ``columns`` (128 px cells)."""
    from g2g.io.sheets import contact_sheet

    sheet = contact_sheet(rows, None, list(columns), cell=128)
    atomic_save_image(path, sheet)


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One line per dict; columns in order of first appearance, floats to 6 significant digits, None empty."""
    rows = list(rows)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])) for c in cols})
    atomic_write_text(path, buf.getvalue())
