"""An output folder: which verb owns it (its marker), and its manifest (append-only JSON lines, the latest line per
key wins, written files checked by digest). prepare, mix, train and export all claim their folders here.

Every verb that resumes (prepare, mix) keeps one line per unit of work (a source
photo, a pair). A line is appended only after its files are on disk, written
atomically with their size and sha256 in the line, so a rerun trusts a unit only
when its last line says so and its files are still exactly those bytes.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator

from g2g.errors import G2GError
from g2g.io.files import (append_jsonl, atomic_write_text, confine_writes, intact, read_jsonl, refuse_links,
                          repair_jsonl_tail)

MANIFEST = "manifest.jsonl"
LOCK_PREFIX = ".g2g-lock-"  # OUT/.g2g-lock-<what>: held (flock) by the run writing there


@contextmanager
def run_lock(out: Path, what: str, wait: bool | None = None, reader: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for ``what`` ("mix shard 1/2", "prepare") while a run writes there, so that
    two processes never do the same work and record it twice: a second one stops with one line, or with ``wait``
    blocks until the first is done (None: the verb has no --wait). Different ``what`` (the shards of one plan) lock
    apart and run side by side. The operating system releases the lock when the process ends, however it ends; where
    there is no ``fcntl`` (Windows) no lock is taken. ``reader``: a shared lock that writes nothing into ``out`` (a
    folder only read: a run writing there stops it, or is stopped by it)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(out) / (LOCK_PREFIX + re.sub(r"[^A-Za-z0-9]+", "-", what).strip("-"))
    try:
        fd = os.open(path, (os.O_RDONLY if reader else os.O_RDWR | os.O_CREAT) | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileNotFoundError:  # a reader of a folder no run ever locked for ``what``
        yield
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if reader else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            hint = "" if wait is None else ", or pass --wait to start when it has"
            raise G2GError(f"another g2g {what} is writing into {out} (pid {holder}): let it finish{hint}") from None
        if not reader:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


FOLDER_MARKER = ".g2g-folder.json"  # which verb made an output folder
# what each verb leaves in its folder, for folders made before the marker existed
VERB_FILES = {"prepare": "prepare_config.json", "mix": "run.json", "train": "checkpoints", "export": "g2g_model.json"}
STALE_TEMP_S = 600  # a temporary file this old is left by a killed run (live writes take seconds; shards share OUT)


def folder_owner(out: Path) -> str | None:
    """The verb whose output ``out`` holds, or None for a new or foreign folder."""
    try:
        verb = json.loads((out / FOLDER_MARKER).read_text()).get("verb")
        if isinstance(verb, str):
            return verb
    except (OSError, ValueError, AttributeError):
        pass
    return next((v for v, name in VERB_FILES.items() if (out / name).exists()), None)


# what each verb writes at the top of its folder: found in a folder without the marker, they are someone else's
VERB_WRITES = {
    "prepare": ("manifest.jsonl", "prepare_config.json", "preview.jpg"),
    "mix": ("manifest.jsonl", "run.json", "grid.jpg", "aligned"),
    "train": ("config.json", "split.json", "metrics.jsonl", "losses.png", "checkpoints", "samples", "cache",
              "tensorboard"),
    "export": ("content_encoder.onnx", "class_encoder.onnx", "decoder.onnx", "identity.onnx", "g2g_model.json",
               "SHA256SUMS"),
}
# a key that each verb's own main file has: how a folder made before the marker existed is told from a user's
VERB_SIGNATURE = {"prepare": ("prepare_config.json", "zoom"), "mix": ("run.json", "poses_root"),
                  "train": ("config.json", "model"), "export": ("g2g_model.json", "format")}


def _unmarked_but_ours(out: Path, verb: str) -> bool:
    """A folder without the marker that ``verb`` made before markers existed (its main file is g2g's)."""
    name, key = VERB_SIGNATURE[verb]
    try:
        return key in json.loads((out / name).read_text())
    except (OSError, ValueError, TypeError):
        return False


def claim_output(out: Path, verb: str) -> None:
    """Make ``out`` ``verb``'s output folder: refuse (one line) a folder another verb made, or one without g2g's
    marker that holds files ``verb`` would write (the user's own ``manifest.jsonl``, ``config.json``...), mark a
    new one, and remove temporary files that a killed run left behind. Nothing is written before these checks, and
    from then on nothing is written through a symbolic link inside ``out`` (:func:`~g2g.io.files.confine_writes`)."""
    out = Path(out)
    confine_writes(out)
    for name in (FOLDER_MARKER, *VERB_WRITES[verb]):  # before anything is written: a planted link, in one line
        refuse_links(out / name)
    owner = folder_owner(out) if out.is_dir() else None
    if owner not in (None, verb):
        raise G2GError(f"{out} holds the output of g2g {owner}; g2g {verb} writes into a folder of its own: "
                       "choose another -o")
    if out.is_dir() and not (out / FOLDER_MARKER).exists() and not _unmarked_but_ours(out, verb):
        theirs = [n for n in VERB_WRITES[verb] if (out / n).exists()]
        if theirs:
            raise G2GError(f"{out} holds {', '.join(theirs)} that g2g did not write (no {FOLDER_MARKER}); g2g {verb} "
                           "would overwrite or append to them: choose a new or empty -o folder")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / FOLDER_MARKER).exists():
        atomic_write_text(out / FOLDER_MARKER, json.dumps({"verb": verb}) + "\n")
    remove_stale_temps(out)


def remove_stale_temps(out: Path, older_than: float = STALE_TEMP_S) -> int:
    """Delete the ``.NAME.*.tmp`` files and ``.export-*`` folders under ``out`` older than ``older_than`` s."""
    import shutil
    import time

    now, n = time.time(), 0
    for root, dirs, files in os.walk(out):
        for d in [d for d in dirs if d.startswith(".export-")]:
            if now - os.stat(os.path.join(root, d)).st_mtime > older_than:
                shutil.rmtree(os.path.join(root, d), ignore_errors=True)
                dirs.remove(d)
                n += 1
        for f in files:
            p = os.path.join(root, f)
            if f.startswith(".") and f.endswith(".tmp"):
                try:
                    if now - os.stat(p).st_mtime > older_than:
                        os.unlink(p)
                        n += 1
                except OSError:
                    pass
    return n


class Manifest:
    """``OUT/manifest.jsonl``; ``append`` is thread-safe, and :func:`~g2g.io.files.append_jsonl` writes each line with
    one call to the OS, so processes appending to one manifest (shards) never interleave mid-line."""

    def __init__(self, out: Path, name: str = MANIFEST, record: Callable[[dict[str, Any]], bool] | None = None):
        self.out = Path(out)
        self.path = self.out / name
        self.record = record  # which lines are the verb's own: others (a user's, another tool's) are never read
        self.lock = threading.Lock()

    def repair(self) -> "Manifest":
        """Cut a last line that a killed run left half-written."""
        repair_jsonl_tail(self.path)
        return self

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        if records:  # nothing to say: no file is created
            with self.lock:  # one open and one fsync per call, not per line
                append_jsonl(self.path, records)

    def lines(self, unread: "Counter[str] | None" = None) -> Iterator[dict[str, Any]]:
        """Every whole record, oldest first. A torn line, or one that is not the verb's ``record``, is skipped and
        counted in ``unread`` ("not-json", "not-an-object", "foreign")."""
        for rec in read_jsonl(self.path, unread):
            if self.record is None or self.record(rec):
                yield rec
            elif unread is not None:
                unread["foreign"] += 1

    def latest(self, key: Callable[[dict[str, Any]], Hashable],
               unread: "Counter[str] | None" = None) -> dict[Hashable, dict[str, Any]]:
        """The last line per ``key(line)``: the state after any number of resumes."""
        return {key(r): r for r in self.lines(unread)}

    def files_intact(self, rec: dict[str, Any], fields: tuple[str, ...] = ("output",)) -> bool:
        """Every file that ``rec`` names in ``fields`` is still on disk exactly as written (its ``FIELD_digest``)."""
        return all(rec.get(f) and intact(self.out / rec[f], rec.get(f"{f}_digest")) for f in fields)


def unread_note(unread: Counter, name: str = MANIFEST) -> str | None:
    """One line for a report about the manifest lines that were not read (:meth:`Manifest.lines`), else None."""
    if not unread:
        return None
    return (f"{name}: {sum(unread.values())} line(s) not read ({', '.join(f'{k}: {v}' for k, v in sorted(unread.items()))}"
            "): torn by a killed run, or written by another program")
