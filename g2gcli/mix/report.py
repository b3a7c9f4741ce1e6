"""What a mix run did: counts per outcome, speed, providers; the summary table the CLI prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from g2g.progress import summary_table


@dataclass
class MixReport:
    out: Path
    planned: int = 0  # pairs of this shard
    total_plan: int = 0  # pairs of the whole plan (all shards)
    shard: str = "1/1"
    resumed: int = 0  # already done by an earlier run
    written: int = 0  # outputs written by this run
    skipped: Counter = field(default_factory=Counter)  # reason -> pairs skipped by this run
    bad_sources: Counter = field(default_factory=Counter)  # (role, reason) -> source photos skipped
    poses_encoded: int = 0
    identities_encoded: int = 0
    providers: list[str] = field(default_factory=list)
    device: str = ""
    note: str = ""  # why CUDA was not used
    elapsed: float = 0.0
    grid: Path | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def any_skips(self) -> bool:
        """Anything skipped: a pair, or a source photo (even one an identity could do without)."""
        return bool(self.n_skipped or self.bad_sources)

    @property
    def pairs_per_s(self) -> float:
        return (self.written + self.n_skipped) / self.elapsed if self.elapsed > 0 else 0.0

    def table(self):
        t = summary_table(f"g2g mix -> {self.out}  (shard {self.shard})", ["", "pairs"])
        t.add_row("planned (this shard)", f"{self.planned} of {self.total_plan}")
        t.add_row("already done (resumed)", str(self.resumed))
        t.add_row("[green]written[/green]", str(self.written))
        for reason, n in sorted(self.skipped.items()):
            t.add_row(f"[yellow]skipped: {reason}[/yellow]", str(n))
        for (role, reason), n in sorted(self.bad_sources.items()):
            t.add_row(f"[yellow]{role} photos skipped: {reason}[/yellow]", f"{n} photo(s)")
        t.add_row("encoded once", f"{self.poses_encoded} poses, {self.identities_encoded} identities", end_section=True)
        t.add_row("speed", f"{self.pairs_per_s:.1f} pairs/s ({self.elapsed:.1f} s)")
        t.add_row("providers", ", ".join(self.providers) + (f" ({self.device})" if self.device else ""))
        if self.note:
            t.add_row("[yellow]note[/yellow]", self.note)
        return t
