"""What the batch verbs show: one progress display (prepare, mix, train, eval) and one summary-table layout.

On a terminal: a rich bar whose description names the stage ("mix: detecting identity photos 12/59"), with the
stage's count, items/s, ETA and ok / skipped counts. In a log file (not a terminal): a plain line when a stage
begins, every 30 s, and when a count is complete.

The ETA waits until it means something: the rate is measured from the first finished item (start-up, model
loading and the first item's warm-up are left out), and nothing is estimated before ``MIN_ITEMS`` more items and
``MIN_SECONDS`` of the stage's own work ("ETA --" until then).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

MIN_ITEMS = 3  # items after the first finished one before any rate or ETA is shown
MIN_SECONDS = 5.0  # seconds of work after the first finished item before any rate or ETA is shown


def say(line: str) -> None:
    """One line on stderr, unwrapped (rich markup allowed): a warning or a step of a long job."""
    from rich.console import Console

    Console(stderr=True).print(line, soft_wrap=True)


def stage_line(label: str, stage: str, enabled: bool = True) -> None:
    """A stage that begins before there is anything to count ("mix: loading the models"): one line on stderr."""
    if enabled:
        say(f"{label}: {stage}")


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


@dataclass
class _Count:
    """One count shown by the display: the main items, or a stage's own (identity photos detected)."""

    total: int
    done: int
    unit: str
    first: tuple[float, int] | None = None  # (time, done) at the first update that finished an item of this run
    finished: bool = False  # its completion line was printed (log)
    begun: tuple[float, int] | None = None  # (time, done) when the count was first shown

    def update(self, done: int, now: float) -> None:
        if self.first is None and done > self.done:
            self.first = (now, done)
        self.done = done

    def rate(self, now: float) -> float | None:
        """Items/s since the first finished item; None until ``MIN_ITEMS`` items and ``MIN_SECONDS`` seconds. A
        count that is complete before that (a few photos) has its whole time's rate instead, so that its last line
        says how fast it went."""
        if self.first is None:
            return None
        t1, n1 = self.first
        if self.done - n1 >= MIN_ITEMS and now - t1 >= MIN_SECONDS:
            return (self.done - n1) / (now - t1)
        if self.begun is not None and self.done >= self.total and now > self.begun[0] and self.done > self.begun[1]:
            return (self.done - self.begun[1]) / (now - self.begun[0])
        return None


class BatchProgress:
    """Progress of ``total`` items (photos, pairs, training steps), ``done`` of them before this run.

    ``counts``: show ok / skipped counts (prepare, mix); training shows its loss terms through ``set(detail=...)``
    instead, after the count, rate and ETA, so that a narrow terminal cuts the losses, never the step or ETA.
    :meth:`stage` names what is being done now (with its own count where it has one). ``clock`` is injectable for
    tests.
    """

    def __init__(self, label: str, unit: str, total: int, done: int = 0, enabled: bool = True, counts: bool = True,
                 every: float = 30.0, deadline: float | None = None, stage: str = "",
                 clock: Callable[[], float] = time.perf_counter):
        from rich.console import Console

        self.label, self.unit, self.total, self.done, self.counts, self.every = label, unit, total, done, counts, every
        self.deadline = deadline  # clock() at which the run stops anyway (train --max-minutes)
        self.clock = clock
        self.ok = self.skipped = 0  # counted by this run (``done`` also holds resumed items)
        self.detail = ""
        self.lock = threading.Lock()
        self.main = _Count(total, done, unit, begun=(clock(), done))
        self.stages: dict[str, _Count | None] = {}  # None: the stage counts the main items
        self.current = ""
        self.last = float("-inf")  # in a log, the first update prints at once (the work has begun)
        self.console = Console(stderr=True)
        self.log = enabled and not self.console.is_terminal
        self.bar = None
        if enabled and self.console.is_terminal:
            self._start_bar()
        if stage:
            self.stage(stage)

    def _start_bar(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        extra = "ok {task.fields[ok]} skipped {task.fields[skipped]}" if self.counts else "{task.fields[detail]}"
        self.bar = Progress(
            TextColumn("[bold]{task.description}[/bold]"), BarColumn(bar_width=20), TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"), TextColumn(extra),
            console=self.console,
        )
        self.task = self.bar.add_task(self._title(), total=self.total, completed=self.done, count="", rate="-",
                                      eta="--", ok=0, skipped=0, detail="")
        self._render(self.clock(), force=False)
        self.bar.start()

    def stage(self, name: str, total: int | None = None, unit: str | None = None) -> Callable[[int], None]:
        """Show ``name`` as what is being done now; -> a function counting its items (thread-safe).

        With ``total`` the stage has its own count ("detecting identity photos 12/59", in ``unit``); without, it
        counts the main items (:meth:`advance`). Entering a stage again keeps its count; in a log, the first entry
        of each stage prints a line at once.
        """
        with self.lock:
            new = name not in self.stages
            if new:
                self.stages[name] = (_Count(total, 0, unit or self.unit, begun=(self.clock(), 0)) if total is not None
                                     else None)
            self.current = name
            self._render(self.clock(), force=new)
        return lambda n=1: self._step(name, n)

    def _step(self, name: str, n: int) -> None:
        with self.lock:
            count = self.stages[name]
            if count is None:
                self._show(self.done + n)
                return
            count.update(count.done + n, self.clock())
            self._render(self.clock(), force=False)

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

    def eta(self) -> float | None:
        """Seconds left of the count shown now; None while the rate means nothing yet."""
        count = self._shown()
        now = self.clock()
        rate = count.rate(now)
        left = (count.total - count.done) / rate if rate else None
        if self.deadline is not None and count is self.main and left is not None:
            left = min(left, max(self.deadline - now, 0.0))
        return left

    def _shown(self) -> _Count:
        return self.stages.get(self.current) or self.main

    def _title(self) -> str:
        return f"{self.label}: {self.current}" if self.current else self.label

    def _show(self, done: int) -> None:
        self.done = done
        self.main.update(done, self.clock())
        self._render(self.clock(), force=False)

    def _render(self, now: float, force: bool) -> None:
        count = self._shown()
        rate, eta = count.rate(now), self.eta()
        rate_text = "-" if rate is None else f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}"
        eta_text = "--" if eta is None else _duration(eta)
        if self.bar is not None:
            self.bar.update(self.task, description=self._title(), total=count.total, completed=count.done,
                            count=f"{count.done}/{count.total}", rate=f"{rate_text} {count.unit}/s", eta=eta_text,
                            ok=self.ok, skipped=self.skipped, detail=self.detail)
            return
        complete = count.done >= count.total and not count.finished
        if not self.log or not (force or complete or now - self.last >= self.every):
            return
        if not force:  # a stage's first line leaves the next update's line due at once
            self.last = now
        count.finished = count.finished or complete
        counts = f", ok {self.ok}, skipped {self.skipped}" if self.counts and count is self.main else ""
        detail = f" | {self.detail}" if self.detail else ""
        head = f"{self.label}: {self.current}" if self.current else f"{self.label}:"
        self.console.print(f"{head} {count.done}/{count.total} {count.unit}, {rate_text} {count.unit}/s, "
                           f"ETA {eta_text}{counts}{detail}", soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
