"""What a run folder shows besides checkpoints: sample sheets, the loss plot, metrics and last.pt upkeep."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from g2g.io.files import atomic_save_image, atomic_write_text, read_jsonl, refuse_links
from g2g.train import TrainError


def _to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """(N,3,S,S) in [-1,1] -> list of (S,S,3) uint8 (the same conversion mix uses)."""
    from g2g.faces.preprocess import to_image

    return list(to_image(x.detach().float().cpu().numpy()))


def write_sample_sheet(path: Path, s: dict[str, torch.Tensor], names: list[tuple[str, str]]) -> Any:
    """Rows Original / Mixed / Reconstructed; columns a_i, b_i of each validation pair; returns the sheet (PIL).

    Mixed under a_i is mixed_ab (b_i's identity in a_i's pose), under b_i mixed_ba;
    Reconstructed under a_i is a'_i (the cycle back), under b_i b'_i.
    """
    from g2g.io.sheets import contact_sheet

    n = len(names)
    order = [i for p in range(n) for i in (p, n + p)]  # a_0, b_0, a_1, b_1, ...
    rows = [[_to_uint8(s[k])[i] for i in order] for k in ("original", "mixed", "recon")]
    cols = [name for a, b in names for name in (f"A: {a}", f"B: {b}")]
    sheet = contact_sheet(rows, ["Original", "Mixed", "Reconstructed"], cols, cell=max(96, s["original"].shape[-1]))
    atomic_save_image(path, sheet)
    return sheet


def write_appearance_sheet(path: Path, s: dict[str, torch.Tensor], base: str = "Warped paste") -> Any:
    """Columns: held-out pairs. Rows: pose, identity photo, the decoder's base (``base``: the warped paste, or the
    masked rest of the pooled encoders; the untrained model), mixed, and the reconstruction of the identity photo
    from another photo of the same person."""
    from g2g.io.sheets import contact_sheet  # returns the sheet (PIL), as written

    keys = ("pose", "identity", "paste", "mixed", "recon")
    rows = [_to_uint8(s[k]) for k in keys]
    labels = ["Pose", "Identity", base, "Mixed", "Reconstructed"]
    cols = [f"pair {i}" for i in range(len(rows[0]))]
    sheet = contact_sheet(rows, labels, cols, cell=max(128, s["pose"].shape[-1]))
    atomic_save_image(path, sheet)
    return sheet


GEN_TERMS = ("vgg", "cyc", "self", "adv", "id")  # plotted apart from the totals, whose scale would flatten them
TOTALS = ("gen", "dis", "d_real", "d_fake")


def plot_losses(metrics: Path, out: Path) -> None:
    """"overall losses" from metrics.jsonl: one curve per term (left: generator terms, right: totals and D)."""
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend or figure registry

    from g2g.io.sheets import save_figure

    recs = list(read_jsonl(metrics))
    if not recs:
        return
    steps = [r["step"] for r in recs]
    fig = Figure(figsize=(12, 4.5), dpi=100)
    axes = fig.subplots(1, 2)
    has_d = any("dis" in r for r in recs)  # no discriminator at λ_g = 0 (masked-rest recipes)
    right = "weighted totals, discriminator" if has_d else "weighted total (no discriminator)"
    for ax, keys, title in ((axes[0], GEN_TERMS, "generator terms (unweighted)"), (axes[1], TOTALS, right)):
        for k in keys:
            ys = [r.get(k, float("nan")) for r in recs]
            if any(np.isfinite(y) for y in ys):  # a short run's few points as dots, or one point draws nothing
                ax.plot(steps, ys, label=k, linewidth=1.2, marker="o" if len(recs) < 20 else None, markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    vs = [(r["step"], r["val_cyc"]) for r in recs if "val_cyc" in r]
    if vs:
        axes[0].plot(*zip(*vs), "k--", marker="o", markersize=3, label="val cyc (EMA G)")
    for ax in axes:
        ax.legend(ncol=2, fontsize=8)
    fig.suptitle("overall losses")
    fig.tight_layout()
    save_figure(fig, out)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (written after the checkpoint a resume starts from)."""
    if path.exists():
        keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def _link_last(src: Path, last: Path) -> None:
    """Point checkpoints/last.pt at ``src`` atomically (a hard link: no second copy on disk)."""
    tmp = last.with_name(f".{last.name}.tmp")
    refuse_links(tmp)
    refuse_links(last)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, last)


class TensorBoardLog:
    """``--tensorboard``: each metrics.jsonl line as scalars and each sample sheet as an image, in RUN/tensorboard
    (``tensorboard --logdir RUN``). A no-op when off."""

    def __init__(self, run: Path, enabled: bool):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrainError("--tensorboard needs the tensorboard package: pip install 'g2g[tensorboard]'") from None
        refuse_links(run / "tensorboard" / "events")  # its writer opens files of its own
        self.writer = SummaryWriter(str(run / "tensorboard"))

    def scalars(self, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            step = int(metrics["step"])
            for k, v in metrics.items():
                if k not in ("step", "time"):
                    self.writer.add_scalar(("speed/" if k == "images_per_s" else "loss/") + k, v, step)

    def sheet(self, image: Any, step: int) -> None:
        """A sample sheet (PIL image, as written to RUN/samples)."""
        if self.writer is not None:
            self.writer.add_image("samples", np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
