"""The user cache (``$XDG_CACHE_HOME/g2g``): files g2g builds once, each checked against a ``.sha256`` sidecar.

A file whose sha256 no longer matches its sidecar (damaged, truncated, half written)
is built again; nothing else is trusted from the cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$XDG_CACHE_HOME/g2g`` (default ``~/.cache/g2g``)."""
    return Path(cache_dir or os.path.join(os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "g2g"))


def sidecar(path: Path) -> Path:
    """``<path>.sha256``: the sha256 of the file as it was written (``sha256sum`` format)."""
    return path.with_name(path.name + ".sha256")


def intact_file(path: Path) -> bool:
    """``path`` is there and its sha256 is the one its sidecar recorded."""
    from g2g.io.files import sha256_file

    try:
        recorded = sidecar(path).read_text().split()
        return bool(recorded) and sha256_file(path) == recorded[0]
    except OSError:
        return False


def cached_file(path: Path, build: Callable[[], bytes]) -> Path:
    """``path`` when it is intact, else ``build()`` (the serialised model) written there atomically with its
    sidecar. Written file first, sidecar second: a run killed in between leaves a mismatch, rebuilt next time."""
    from g2g.io.files import atomic_write_bytes, atomic_write_text

    path = Path(path)
    if intact_file(path):
        return path
    digest = atomic_write_bytes(path, build())
    atomic_write_text(sidecar(path), f"{digest['sha256']}  {path.name}\n")
    return path
