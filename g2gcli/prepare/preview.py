"""DATA/preview.jpg: what a prepare run made, and what it skipped, at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from g2g.io.files import atomic_save_image

PREVIEW_FILE = "preview.jpg"


def write_preview(src: Path, out: Path, current: dict[str, list[dict[str, Any]]], n: int = 6) -> Path | None:
    """DATA/preview.jpg: aligned crops of the first ``n`` identities (a row each), then a row per skip reason with
    the photos it hit (letterboxed to a square, so the sheet shows what the detector saw)."""
    from PIL import Image

    from g2g.io.sheets import contact_sheet

    by_id: dict[str, list[str]] = {}
    by_reason: dict[str, list[str]] = {}
    for source, recs in sorted(current.items()):
        if recs[0]["status"] == "ok":
            by_id.setdefault(str(recs[0]["identity"]), []).extend(r["output"] for r in recs)
        else:
            by_reason.setdefault(str(recs[0]["reason"]), []).append(source)
    rows, labels = [], []

    def read(path: Path, square: bool) -> np.ndarray | None:
        if not path.is_file():  # only regular files are opened (a FIFO would block here forever)
            return None
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if square:  # letterbox: the whole photo, grey bars
                    side = max(im.size)
                    canvas = Image.new("RGB", (side, side), (200, 200, 200))
                    canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
                    im = canvas.resize((128, 128), Image.Resampling.BILINEAR)
                return np.asarray(im)
        except Exception:  # an unreadable photo is what its row says: an empty cell
            return None

    for name, outs in list(by_id.items())[:n]:
        rows.append([read(out / o, False) for o in outs[:n]])
        labels.append(name)
    for reason, sources in sorted(by_reason.items()):
        rows.append([read(src / s, True) for s in sources[:n]])
        labels.append(f"skipped: {reason} ({len(sources)})")
    if not rows:
        return None
    path = out / PREVIEW_FILE
    atomic_save_image(path, contact_sheet(rows, labels, cell=128))
    return path
