"""Whether this process may map enough memory for a verb, checked before the verb's libraries load.

Under a small address-space limit (``ulimit -v``) the native libraries g2g loads fail in ways Python cannot catch:
OpenBLAS retries its thread buffers for minutes, ONNX Runtime and OpenCV crash. So the command compares the limit
with what each verb was measured to need and stops in one line, before importing anything heavy; a shortage found
later (a large batch, a big photo) is one line too (:func:`out_of_memory`). Standard library only.
"""

from __future__ import annotations

import os

GIB = 1 << 30
# address space each verb needed (bisected with ulimit -v on a 2-CPU Linux machine: mix 2.0 GB, prepare 1.6 GB,
# eval 1.6 GB, train 4.8 GB, export 4.4 GB, --help 0.3 GB), with a margin
NEEDS_MIB = {"prepare": 2560, "mix": 2560, "eval": 2560, "train": 6144, "export": 6144}
OTHER_MIB = 512  # --help, --version
PER_CPU_MIB = 64  # thread stacks and BLAS buffers grow with the cores
MEMORY_SIGNS = ("failed to map segment", "can't start new thread", "cannot allocate memory", "bad_alloc",
                "insufficient memory", "failed to allocate", "unable to allocate", "out of memory")


def address_space_needed(verb: str | None) -> int:
    """Bytes of address space ``verb`` (None: help, version) needs on this machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return (NEEDS_MIB.get(verb or "", OTHER_MIB) + PER_CPU_MIB * max(0, cpus - 2)) << 20


def address_space_limit() -> int | None:
    """The soft ``RLIMIT_AS`` in bytes, or None where there is none (or no ``resource``: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def too_little_memory(argv: list[str]) -> str | None:
    """The one-line reason the command ``argv`` cannot run under this process's address-space limit, else None."""
    limit = address_space_limit()
    if limit is None:
        return None
    verb = next((a for a in argv if a in NEEDS_MIB), None)
    need = address_space_needed(verb)
    if limit >= need:
        return None
    what = f"g2g {verb}" if verb else "g2g"
    return (f"the address-space limit (ulimit -v) allows {limit / GIB:.2f} GiB and {what} needs about "
            f"{need / GIB:.1f} GiB here for its libraries and their threads: raise it (ulimit -v unlimited) and rerun")


def out_of_memory(e: BaseException) -> bool:
    """``e`` says memory ran out (a MemoryError, or a library's own words for it), not that g2g has a bug."""
    return isinstance(e, MemoryError) or any(sign in str(e).lower() for sign in MEMORY_SIGNS)
