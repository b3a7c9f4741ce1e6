"""What the batch verbs show: one progress display (prepare, mix) and one summary-table layout (every verb).

On a terminal: a rich bar with items/s, ok and skipped counts and ETA. In a log
file (not a terminal): a plain line every 30 s and at the end.
"""

from __future__ import annotations

import threading
import time
from typing import Any


def say(line: str) -> None:
    """One line on stderr, unwrapped (rich markup allowed): a warning or a step of a long job."""
    from rich.console import Console

    Console(stderr=True).print(line, soft_wrap=True)


def summary_table(title: str, columns: list[str], right: int = 1) -> Any:
    """A rich table for a verb's end-of-run summary: ``columns`` in order, all but the first ``right`` right-aligned."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i < right else "right")
    return t


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class BatchProgress:
    """Progress of ``total`` items (photos, pairs, training steps), ``done`` of them before this run.

    ``counts``: show ok / skipped counts (prepare, mix); training shows its loss terms through ``set(detail=...)``
    instead, after the count, rate and ETA, so that a narrow terminal cuts the losses, never the step or ETA.
    """

    def __init__(self, label: str, unit: str, total: int, done: int = 0, enabled: bool = True, counts: bool = True,
                 every: float = 30.0, deadline: float | None = None):
        from rich.console import Console

        self.label, self.unit, self.total, self.done, self.counts, self.every = label, unit, total, done, counts, every
        self.deadline = deadline  # time.perf_counter() at which the run stops anyway (train --max-minutes)
        self.start_done = done
        self.ok = self.skipped = 0  # counted by this run (``done`` also holds resumed items)
        self.detail = ""
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()
        self.last = float("-inf")  # in a log, the first update prints at once (it tells what one item costs)
        self.console = Console(stderr=True)
        self.log = enabled and not self.console.is_terminal
        self.bar = None
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            extra = "ok {task.fields[ok]} skipped {task.fields[skipped]}" if counts else "{task.fields[detail]}"
            self.bar = Progress(
                TextColumn(f"[bold]{label}[/bold]"), BarColumn(bar_width=20), MofNCompleteColumn(),
                TextColumn(f"{{task.fields[rate]}} {unit}/s"), TimeRemainingColumn(), TextColumn(extra),
                console=self.console,
            )
            self.task = self.bar.add_task(label, total=total, completed=done, rate="-", ok=0, skipped=0, detail="")
            self.bar.start()

    def advance(self, ok: int = 0, skipped: int = 0) -> None:
        """Count ``ok`` finished and ``skipped`` items; safe to call from worker threads."""
        with self.lock:
            self.ok, self.skipped = self.ok + ok, self.skipped + skipped
            self._show(self.done + ok + skipped)

    def set(self, done: int, detail: str | None = None) -> None:
        """Progress is now ``done`` items (training: steps), with ``detail`` after the rate (training: the losses)."""
        with self.lock:
            if detail is not None:
                self.detail = detail
            self._show(done)

    def _show(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        rate = (done - self.start_done) / max(now - self.t0, 1e-9)  # this run's items only
        if self.bar is not None:
            self.bar.update(self.task, completed=done, rate=f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}", ok=self.ok,
                            skipped=self.skipped, detail=self.detail)
        elif self.log and (now - self.last >= self.every or done == self.total):
            self.last = now
            left = (self.total - done) / rate if rate > 0 else float("inf")
            if self.deadline is not None:
                left = min(left, max(self.deadline - now, 0.0))
            eta = _duration(left) if left != float("inf") else "-"
            counts = f", ok {self.ok}, skipped {self.skipped}" if self.counts else ""
            detail = f" | {self.detail}" if self.detail else ""
            self.console.print(f"{self.label}: {done}/{self.total} {self.unit}, {rate:.2f} {self.unit}/s, "
                               f"ETA {eta}{counts}{detail}", soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
