"""What a prepare run did, this run and in the whole DATA folder; the summary table the CLI prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from g2g.progress import summary_table


@dataclass
class PrepareReport:
    out: Path
    n_sources: int = 0  # source files seen in SRC (images and others)
    n_resumed: int = 0  # already in the manifest, not redone
    n_redone: int = 0  # in the manifest, but redone: a write error last time, or a crop since damaged or deleted
    n_processed: int = 0  # handled by this run
    n_ok: int = 0  # photos of this run with at least one crop written
    n_crops: int = 0  # crops written by this run
    skipped: Counter = field(default_factory=Counter)  # reason -> photos, this run
    total_ok: int = 0  # photos ok in the whole manifest (all runs)
    total_skipped: Counter = field(default_factory=Counter)  # reason -> photos, whole manifest
    elapsed: float = 0.0  # s, this run
    timings: dict[str, float] = field(default_factory=dict)  # s: decode (thread time), wait, detect, align_write
    device: str = ""
    device_note: str = ""  # why the detector runs on the CPU where CUDA was asked for
    preview: Path | None = None  # DATA/preview.jpg: crops per identity and the skipped photos by reason
    notes: list[str] = field(default_factory=list)  # what was read differently than asked (multi-page files)

    def add_photo(self, status: str, reason: str | None, n_crops: int) -> int:
        """Count one photo this run handled (its first line's status and reason, its crops) -> 1 if it gave crops."""
        self.n_processed += 1
        if status == "ok":
            self.n_ok += 1
            self.n_crops += n_crops
            return 1
        self.skipped[reason] += 1
        return 0

    @property
    def images_per_s(self) -> float:
        return self.n_processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def total(self) -> int:
        return self.total_ok + sum(self.total_skipped.values())

    @property
    def aligned_fraction(self) -> float:
        """Share of all source files in the manifest that gave a crop."""
        return self.total_ok / self.total if self.total else 0.0

    def table(self):
        """A rich table: ok and each skip reason, this run and the whole DATA folder."""
        t = summary_table(f"g2g prepare -> {self.out}", ["status", "this run", "in DATA"])
        t.add_row("[green]ok[/green]", str(self.n_ok), str(self.total_ok))
        for reason in sorted(set(self.total_skipped) | set(self.skipped)):
            t.add_row(f"[yellow]skipped: {reason}[/yellow]", str(self.skipped[reason]), str(self.total_skipped[reason]))
        if self.n_redone:
            t.add_row("redone (a write error, or a crop since damaged or deleted)", str(self.n_redone), "")
        t.add_row("resumed (already done)", str(self.n_resumed), "", end_section=True)
        t.add_row("aligned", "", f"{100 * self.aligned_fraction:.1f}%")
        if self.n_processed:
            t.add_row("speed", f"{self.images_per_s:.1f} img/s", f"{self.elapsed:.0f} s on {self.device or '-'}")
        else:
            t.add_row("speed", "nothing left to do", f"{self.elapsed:.1f} s")
        if self.device_note:
            t.add_row("device", self.device_note, "")
        for note in self.notes:
            t.add_row("note", note, "")
        return t
