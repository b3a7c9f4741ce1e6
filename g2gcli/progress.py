"""One progress display for the batch verbs (prepare, mix).

On a terminal: a rich bar with items/s, ok and skipped counts and ETA. In a log
file (not a terminal): a plain line every 30 s and at the end.
"""

from __future__ import annotations

import threading
import time


class BatchProgress:
    def __init__(self, label: str, unit: str, total: int, done: int = 0, enabled: bool = True):
        from rich.console import Console

        self.label, self.unit, self.total, self.done = label, unit, total, done
        self.ok = self.skipped = 0  # counted by this run (``done`` also holds resumed items)
        self.lock = threading.Lock()
        self.t0 = self.last = time.perf_counter()
        self.console = Console(stderr=True)
        self.log = enabled and not self.console.is_terminal
        self.bar = None
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                TextColumn(f"{{task.fields[rate]}} {unit}/s"),
                TextColumn("ok {task.fields[ok]} skipped {task.fields[skipped]}"),
                TimeRemainingColumn(), console=self.console,
            )
            self.task = self.bar.add_task(label, total=total, completed=done, rate="-", ok=0, skipped=0)
            self.bar.start()

    def advance(self, ok: int = 0, skipped: int = 0) -> None:
        """Count ``ok`` finished and ``skipped`` items; safe to call from worker threads."""
        with self.lock:
            self.ok, self.skipped, self.done = self.ok + ok, self.skipped + skipped, self.done + ok + skipped
            now = time.perf_counter()
            rate = (self.ok + self.skipped) / max(now - self.t0, 1e-9)  # this run's items only
            if self.bar is not None:
                self.bar.update(self.task, advance=ok + skipped, rate=f"{rate:.1f}", ok=self.ok, skipped=self.skipped)
            elif self.log and (now - self.last >= 30 or self.done == self.total):
                self.last = now
                self.console.print(f"{self.label}: {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, "
                                   f"ok {self.ok}, skipped {self.skipped}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
