"""Atomic writes and output-folder safety shared by every verb.

Every file g2g produces is written to a temporary name in the same folder and
renamed into place, so an interrupted run never leaves a truncated output that a
rerun would mistake for a finished one.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    from collections import Counter

from g2g.errors import G2GError


class UnsafePathError(G2GError):
    """A computed output path would land outside the output folder."""


def safe_join(root: Path, relative: str | Path) -> Path:
    """Join ``relative`` under ``root``, refusing anything that escapes it."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise UnsafePathError(f"refusing to write outside {root}: {relative}")
    return path


_CONFINED: set[str] = set()  # the output folders this process writes into, as given and as resolved


def confine_writes(root: Path) -> None:
    """From now on, every file this process writes under ``root`` goes into real folders of ``root``: a symbolic
    link planted at a subfolder or file there (``RUN/samples -> /elsewhere``) is refused, never written through.
    ``root`` itself may be a link: the user chose it. Each verb confines its output folder before writing."""
    _CONFINED.update({os.path.abspath(root), os.path.realpath(root)})


def refuse_links(path: Path) -> None:
    """Raise :class:`UnsafePathError` if a folder or file on the way from a confined output folder to ``path`` (the
    file itself included) is a symbolic link. The one check behind every write (atomic writes, appends, links)."""
    p = os.path.abspath(path)
    for root in [r for r in _CONFINED if p.startswith(r.rstrip(os.sep) + os.sep)]:
        cur = root
        for part in Path(os.path.relpath(p, root)).parts:
            cur = os.path.join(cur, part)
            if os.path.islink(cur):
                raise UnsafePathError(f"{cur} is a symbolic link inside the output folder {root}: g2g writes only "
                                      "into files and folders of its own there, never through a link; remove it "
                                      "and rerun")


@functools.cache
def _file_mode() -> int:
    """What open() would give a new file (mkstemp alone makes 0600). Reading the umask means setting it, so it is
    read once, on the first write, not at import time (other threads may create files meanwhile)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> dict[str, Any]:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``; returns :func:`digest` of ``data``."""
    path = Path(path)
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    short = os.fsdecode(os.fsencode(path.name)[:64])  # a name near the file-system limit still fits; any bytes
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{short}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest(data)


def digest(data: bytes) -> dict[str, Any]:
    """What a manifest records of a written file, so that a resume can tell it is still whole."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def intact(path: Path, recorded: dict[str, Any] | None) -> bool:
    """``path`` is there and, where the manifest recorded its :func:`digest`, still exactly that file (a truncated,
    empty or overwritten output is not). Without a record (older manifests): there and not empty."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    if not recorded:
        return size > 0
    if size != recorded.get("bytes"):
        return False
    return sha256_file(path) == recorded.get("sha256")


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}  # the disk, not one file


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))  # file names that are not UTF-8


def jsonable(obj: Any) -> Any:
    """A report (dataclass, with its public properties) as JSON types: paths as strings, tuple keys joined by ':'."""
    import dataclasses
    from collections.abc import Mapping

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name, attr in vars(type(obj)).items():
            if isinstance(attr, property) and not name.startswith("_"):
                out[name] = jsonable(getattr(obj, name))
        return out
    if isinstance(obj, Mapping):
        return {":".join(map(str, k)) if isinstance(k, tuple) else str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_image(path: Path, image: "Any", quality: int | None = None, **save_kwargs: Any) -> dict[str, Any]:
    """Save a PIL image (format from the suffix) atomically; returns the file's :func:`digest`. ``quality`` (JPEG and
    WebP, default 95; PNG is lossless and ignores it): WebP at 100 is written lossless."""
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(Path(path).suffix.lower(), "PNG")
    if fmt in ("JPEG", "WEBP"):
        save_kwargs.setdefault("quality", 95 if quality is None else quality)
    if fmt == "WEBP" and save_kwargs["quality"] >= 100:
        save_kwargs.setdefault("lossless", True)
    image.save(buf, format=fmt, **save_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def _not_a_link(path: Path) -> None:
    """A file g2g appends to or cuts is its own: a symlink planted there would send the write elsewhere."""
    refuse_links(path)
    if Path(path).is_symlink():
        raise G2GError(f"{path} is a symbolic link: g2g appends only to files of its own output folder, never through "
                       "a link; remove it and rerun")


def repair_jsonl_tail(path: Path) -> None:
    """Cut a last line left half-written by a killed run, so that the next append starts on a fresh line."""
    _not_a_link(path)
    if not Path(path).is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Append records to a JSON-lines file: one ``write`` per line (so processes appending to one file never
    interleave mid-line), one fsync per call.

    A line cut short by a kill is ignored by :func:`read_jsonl`, so appending is
    safe for resumable manifests.
    """
    path = Path(path)
    _not_a_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_NOFOLLOW: a link planted between the check and the open is refused too
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            _not_a_link(path)
        raise
    try:
        for rec in records:
            os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path, unread: "Counter[str] | None" = None) -> Iterator[dict]:
    """Yield the records (JSON objects) of a JSON-lines file. A line that is not JSON (torn by a kill, edited) or
    not an object is skipped and, when ``unread`` is given, counted there ("not-json", "not-an-object")."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                kind = "not-json"
            else:
                if isinstance(rec, dict):
                    yield rec
                    continue
                kind = "not-an-object"
            if unread is not None:
                unread[kind] += 1


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
