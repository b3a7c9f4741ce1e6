"""The main job on the bundled example photos: what README's first command runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from g2g.bundle import BundleError, default_model_dir
from g2g.config import MixConfig, PrepareConfig
from g2g.examples import write_examples
from g2g.fsutil import atomic_save_image, read_jsonl


@dataclass
class DemoResult:
    out: Path
    grid: Path | None  # the picture to open
    mixed: bool  # True: identities mixed into poses by the default model
    notes: list[str] = field(default_factory=list)
    report: object | None = None  # MixReport or PrepareReport


def run_demo(out: Path, device: str = "auto", progress: bool = True) -> DemoResult:
    """Write the example photos under ``out`` and mix every identity into every pose.

    Without a shipped default model, it aligns the examples with ``g2g prepare``
    instead and writes a sheet of the aligned faces, and says so.
    """
    out = Path(out)
    poses, ids = write_examples(out)
    try:
        default_model_dir()
    except BundleError as e:
        return _prepare_only(out, poses, device, progress, note=str(e))
    from g2g.mix import mix_folders

    report = mix_folders(poses, ids, out / "mixed", MixConfig(grid=True, device=device), progress=progress)
    return DemoResult(out=out, grid=report.grid, mixed=True, report=report, notes=list(report.notes))


def _prepare_only(out: Path, poses: Path, device: str, progress: bool, note: str) -> DemoResult:
    from g2g.prepare import prepare_folder

    data = out / "aligned"
    report = prepare_folder(poses, data, PrepareConfig(device=device), progress=progress)
    crops, labels = [], []
    for rec in read_jsonl(data / "manifest.jsonl"):
        if rec.get("status") == "ok":
            crops.append(np.asarray(Image.open(data / rec["output"]).convert("RGB")))
            labels.append(Path(rec["source"]).stem)
    from g2g.sheets import contact_sheet

    grid = out / "aligned_faces.jpg"
    atomic_save_image(grid, contact_sheet([crops], col_labels=labels))
    return DemoResult(out=out, grid=grid, mixed=False, report=report,
                      notes=[note, "aligned the example faces instead (g2g prepare); see the sheet"])
