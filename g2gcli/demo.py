"""The main job on the bundled example photos: what README's first command runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from g2g.bundle import BundleError, default_model_dir
from g2g.config import MixConfig, PrepareConfig
from g2g.examples import write_examples
from g2g.io.files import atomic_save_image, read_jsonl


@dataclass
class DemoResult:
    out: Path
    grid: Path | None  # the picture to open
    mixed: bool  # True: identities mixed into poses by the default model
    notes: list[str] = field(default_factory=list)
    report: object | None = None  # MixReport or PrepareReport


def run_demo(out: Path, device: str = "auto", progress: bool = True, method: str = "auto") -> DemoResult:
    """Write the example photos under ``out`` and mix every identity into every pose.

    Without a shipped default model, it aligns the examples with ``g2g prepare``
    instead and writes a sheet of the aligned faces, and says so.
    """
    out = Path(out)
    poses, ids = write_examples(out)
    if method == "model":
        try:
            default_model_dir()
        except BundleError as e:
            return _prepare_only(out, poses, device, progress, note=str(e))
    from g2g.mix import mix_folders

    report = mix_folders(poses, ids, out / "mixed", MixConfig(grid=True, device=device, method=method, overwrite=True),
                         progress=progress)
    notes = list(report.notes) + column_check(out / "mixed")
    return DemoResult(out=out, grid=report.grid, mixed=True, report=report, notes=notes)


def column_check(mix_out: Path) -> list[str]:
    """Does the face change with the identity column, and keep the pose's expression? One line per pose.

    The mean absolute difference (0-255) inside the pose's face mask between the
    outputs of different identities (0 would mean the identity input is ignored),
    and the expression error (g2g eval's, over the IOD) of each output vs its pose.
    """
    from g2g.eval.expression import expression_error
    from g2g.mix import latest_records
    from g2g.methods.base import faces_of

    def read(rel: str) -> np.ndarray:
        with Image.open(mix_out / rel) as im:
            return np.asarray(im.convert("RGB"))

    zoom = float(json.loads((mix_out / "run.json").read_text())["align"]["zoom"])
    by_pose: dict[str, list[dict]] = {}
    for (pose, _), r in latest_records(mix_out).items():
        if r.get("status") == "ok" and r.get("mixed_crop") and r.get("pose_crop"):
            by_pose.setdefault(pose, []).append(r)
    lines = []
    for pose, recs in sorted(by_pose.items()):
        crop = read(recs[0]["pose_crop"])
        outs = np.stack([read(r["mixed_crop"]) for r in recs])
        (lm,), (mask,) = faces_of(crop[None], zoom)
        inside = mask > 0.5
        diffs = [np.abs(outs[i].astype(int) - outs[j].astype(int))[inside].mean()
                 for i in range(len(outs)) for j in range(i + 1, len(outs))]
        lm_out, _ = faces_of(outs, zoom)
        expr = expression_error(lm_out, lm[None]).mean()
        change = f"{np.mean(diffs):.1f}/255 mean change inside the face between identity columns" if diffs else \
            "one identity only"
        lines.append(f"pose {pose}: {change}; expression error vs the pose {expr:.3f} IOD")
    return lines


def _prepare_only(out: Path, poses: Path, device: str, progress: bool, note: str) -> DemoResult:
    from g2g.prepare import prepare_folder

    data = out / "aligned"
    report = prepare_folder(poses, data, PrepareConfig(device=device), progress=progress)
    crops, labels = [], []
    for rec in read_jsonl(data / "manifest.jsonl"):
        if rec.get("status") == "ok":
            crops.append(np.asarray(Image.open(data / rec["output"]).convert("RGB")))
            labels.append(Path(rec["source"]).stem)
    from g2g.io.sheets import contact_sheet

    grid = out / "aligned_faces.jpg"
    atomic_save_image(grid, contact_sheet([crops], col_labels=labels))
    return DemoResult(out=out, grid=grid, mixed=False, report=report,
                      notes=[note, "aligned the example faces instead (g2g prepare); see the sheet"])
