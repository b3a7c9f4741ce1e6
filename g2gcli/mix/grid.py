"""``OUT/grid.jpg``: the contact sheet of a mix run, read back from the files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from g2g.io.files import atomic_save_image, safe_join
from g2g.mix.resume import latest_records

GRID_FILE = "grid.jpg"


def write_grid(out: Path, pairs: list[tuple[str, str]], limit: int, size: int) -> Path | None:
    """OUT/grid.jpg: poses as rows, identities as columns (first ``limit`` of each), from the files on disk.

    The first column is the aligned pose, the first row an aligned photo of each
    identity; a skipped pair is a grey crossed cell, a pair not in the plan a blank one.
    """
    from PIL import Image

    from g2g.io.sheets import contact_sheet

    recs = latest_records(out)
    pose_rows = list(dict.fromkeys(p for p, _ in pairs))[:limit]
    id_cols = list(dict.fromkeys(i for _, i in pairs))[:limit]
    if not pose_rows:
        return None
    planned = set(pairs)
    blank = np.full((size, size, 3), 255, np.uint8)

    def read(rel: str | None) -> np.ndarray | None:
        if not rel or not (out / rel).is_file():
            return None
        with Image.open(out / rel) as im:
            return np.asarray(im.convert("RGB"))

    first_pose: dict[str, str] = {}
    first_id: dict[str, str] = {}
    for (p, i), r in recs.items():  # one pass: an aligned crop of each shown pose and identity
        if r.get("pose_crop"):
            first_pose.setdefault(p, r["pose_crop"])
        if r.get("identity_crops"):
            first_id.setdefault(i, r["identity_crops"][0])
    rows: list[list[np.ndarray | None]] = [[blank] + [read(first_id.get(i)) for i in id_cols]]
    for p in pose_rows:
        pose_crop = read(first_pose.get(p))
        row: list[np.ndarray | None] = [pose_crop]
        for i in id_cols:
            r = recs.get((p, i))
            if (p, i) not in planned:
                row.append(blank)
            elif r and r.get("status") == "ok":
                row.append(read(r.get("mixed_crop") or r.get("output")))
            else:
                row.append(None)
        rows.append(row)
    sheet = contact_sheet(rows, ["identity"] + pose_rows, ["pose"] + id_cols, cell=128)  # small models upscaled
    path = safe_join(out, GRID_FILE)
    atomic_save_image(path, sheet)
    return path
