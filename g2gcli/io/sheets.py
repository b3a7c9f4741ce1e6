"""Contact sheets: a grid of face crops with row and column labels (PIL only).

Used for training samples (rows Original / Mixed / Reconstructed), mix grids
(poses x identities) and eval example sheets. A ``None`` cell is drawn grey
with a cross, so a skipped face is visible rather than silently closing the gap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
EMPTY = (200, 200, 200)
PAD = 2  # px between cells


def _font(px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)  # Pillow >= 10.1 ships a scalable font
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def _fit(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> str:
    """Cut ``text`` with an ellipsis until it fits ``width`` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _cell_image(a: np.ndarray, cell: int) -> Image.Image:
    a = np.asarray(a)
    if a.dtype != np.uint8:  # floats: [-1, 1] (model outputs) or [0, 1] or [0, 255]
        a = a.astype(np.float64)
        if a.min() < 0:
            a = (a + 1) / 2
        if a.max() <= 1:
            a = a * 255
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    img = Image.fromarray(a[:, :, :3])
    return img if img.size == (cell, cell) else img.resize((cell, cell), Image.Resampling.BICUBIC)


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell: int = 128,
) -> Image.Image:
    """Grid of (H, W, 3) uint8 images, each resized to ``cell`` px; ``None`` is an empty grey cell.

    Rows may differ in length; labels are drawn left of rows and above columns.
    """
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("contact_sheet needs at least one cell")
    font_px = max(10, cell // 9)
    font = _font(font_px)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max((measure.textlength(str(t), font=font) for t in row_labels or []), default=0)
    left = int(min(3 * cell, max(8 * font_px, widest + 10))) if row_labels else 0  # labels whole up to 3 cells
    top = (font_px + 6) if col_labels else 0
    width = left + n_cols * (cell + PAD) + PAD
    height = top + n_rows * (cell + PAD) + PAD
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(col_labels or []):
        x = left + PAD + c * (cell + PAD)
        draw.text((x + 2, 2), _fit(str(label), font, cell - 4, draw), fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        y = top + PAD + r * (cell + PAD)
        if row_labels and r < len(row_labels):
            text = _fit(str(row_labels[r]), font, left - 6, draw)
            draw.text((4, y + cell // 2 - font_px // 2), text, fill=(0, 0, 0), font=font)
        for c, a in enumerate(row):
            x = left + PAD + c * (cell + PAD)
            if a is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=EMPTY)
                draw.line([x, y, x + cell - 1, y + cell - 1], fill=(150, 150, 150), width=2)
                draw.line([x, y + cell - 1, x + cell - 1, y], fill=(150, 150, 150), width=2)
                draw.text((x + 4, y + 4), "skipped", fill=(90, 90, 90), font=font)
            else:
                sheet.paste(_cell_image(a, cell), (x, y))
    return sheet


def save_figure(fig: Any, path: Path, **savefig: Any) -> None:
    """A matplotlib Figure as a PNG at ``path``, written atomically."""
    import io

    from g2g.io.files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    atomic_write_bytes(path, buf.getvalue())
