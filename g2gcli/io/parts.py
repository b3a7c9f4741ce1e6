"""Manifest parts: the lines of one unit of work (a pose and its pairs, a photo) written by the worker that did it,
then folded into ``OUT/manifest.jsonl`` by the run's driver.

A distributed engine retries a whole block of work when a worker dies, so a worker
must not append to the manifest directly: a retried block would append its lines
twice. Each unit instead appends to its own part file, ``OUT/.g2g-parts/<tag>/<sha>.jsonl``,
under a lock, each line after its files; a retry reads the part first and skips
what is already done. Folding keeps the last line per key of each part and appends
only lines the manifest does not already end on for that key, so a fold that is
killed half-way and run again writes no line twice.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator

from g2g.io.files import append_jsonl, read_jsonl, refuse_links, repair_jsonl_tail
from g2g.io.runfolder import Manifest

PARTS_DIR = ".g2g-parts"


def shard_tag(shard: str) -> str:
    """``1/2`` -> ``1-2``: the folder of a shard's parts."""
    return shard.replace("/", "-")


def part_path(out: Path, tag: str, unit: str) -> Path:
    """Where the part of ``unit`` (a pose's path, a photo's path) of the run ``tag`` (a shard) is kept."""
    name = hashlib.sha256(unit.encode("utf-8", errors="surrogateescape")).hexdigest()[:32]
    return Path(out) / PARTS_DIR / tag / f"{name}.jsonl"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), released however the process ends; none without fcntl."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Part:
    """One unit's part file, held under its lock: the lines already there (a retry's earlier work) and appends."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[dict[str, Any]] = list(read_jsonl(path))

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        if records:
            append_jsonl(self.path, records)
            self.lines += records


@contextmanager
def open_part(out: Path, tag: str, unit: str) -> Iterator[Part]:
    """The part of ``unit``, locked for the time of the block: two workers given the same unit (a retry of a block
    whose first try is still writing) take turns, and the second sees the first one's lines."""
    path = part_path(out, tag, unit)
    with _locked(path):
        repair_jsonl_tail(path)  # a line torn by a killed worker
        yield Part(path)


def _last_per_key(lines: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable]) -> list[dict[str, Any]]:
    last: dict[Hashable, dict[str, Any]] = {}
    for rec in lines:
        last.pop(key(rec), None)  # keeps the order of the last lines
        last[key(rec)] = rec
    return list(last.values())


def part_files(out: Path, tags: Iterable[str] | None = None) -> list[Path]:
    """The part files under ``out`` (of ``tags`` only, where given), in name order."""
    root = Path(out) / PARTS_DIR
    if not root.is_dir():
        return []
    dirs = sorted(p for p in root.iterdir() if p.is_dir()) if tags is None else [root / t for t in tags]
    return [f for d in dirs if d.is_dir() for f in sorted(d.glob("*.jsonl"))]


def fold_parts(manifest: Manifest, key: Callable[[dict[str, Any]], Hashable], tags: Iterable[str] | None = None,
               first: list[Path] | None = None, keep: Callable[[dict[str, Any]], bool] | None = None) -> int:
    """Append the parts' lines (of ``tags``, else all) to ``manifest`` and delete the parts -> the number of lines
    appended. Call it holding the run locks of ``tags``, so that no live worker writes those parts. ``first``: parts
    to fold first, in this order (a run's own, in plan order: the manifest then reads as a local run's); ``keep``:
    which lines are the verb's (others are dropped). A line that is already the manifest's last for its key is not
    appended again, so folding after a fold that was killed half-way duplicates nothing."""
    files = part_files(manifest.out, tags)
    order = [p for p in dict.fromkeys((first or []) + files) if p.is_file()]
    if not order:
        return 0
    manifest.repair()
    last = manifest.latest(key)
    n = 0
    for path in order:
        with _locked(path):
            if not path.is_file():  # folded meanwhile by another run
                continue
            lines = [r for r in _last_per_key(read_jsonl(path), key) if keep is None or keep(r)]
            new = [r for r in lines if last.get(key(r)) != r]
            manifest.append(new)
            last.update((key(r), r) for r in new)
            n += len(new)
            path.unlink()
    for d in [*(p for p in (manifest.out / PARTS_DIR).iterdir() if p.is_dir()), manifest.out / PARTS_DIR]:
        try:
            os.rmdir(d)  # only when empty: a live worker of another shard may still be writing there
        except OSError:
            pass
    return n
