"""The Ray cluster a ``--engine ray`` run computes on: an address given, one already joined (a test, a notebook),
or a local one started for the run and stopped after it. ray is imported here only, when a run asks for it."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from g2g.errors import G2GError

ENGINES = ("local", "ray")
RAY_MISSING = "--engine ray needs Ray Data: pip install 'g2g[ray]' (or pip install 'ray[data]')"


class ClusterError(G2GError):
    """Ray is missing, or its cluster cannot be reached: a one-line user error."""


def import_ray() -> Any:
    """``ray`` with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra, not only the core)
    except ImportError:
        raise ClusterError(RAY_MISSING) from None
    return ray


@dataclass
class Cluster:
    """What a run may use of the cluster."""

    cpus: int
    gpus: int
    address: str  # "local" for a cluster started for this run

    def mix_actors(self, asked: int | None) -> int:
        """How many actors decode pairs: as asked (at most a GPU each, or all CPUs but one: the read and write tasks
        need one), else one per GPU, else half the CPUs (the rest read and write)."""
        most = self.gpus or max(1, self.cpus - 1)
        return min(asked, most) if asked else (self.gpus or max(1, self.cpus // 2))

    def crop_actors(self, asked: int | None) -> int:
        """How many actors detect and align photos (each reads and writes its own): as asked, at most one per GPU
        or else one per CPU, and that many by default."""
        most = self.gpus or self.cpus
        return min(asked, most) if asked else most


def engine_checks(cfg: Any) -> list[tuple[bool, str]]:
    """The option checks (g2g.errors.check_options) of a verb's ``engine``, ``address`` and ``ray_workers``."""
    return [
        (cfg.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}, got {cfg.engine!r}"),
        (cfg.engine == "ray" or (cfg.address is None and cfg.ray_workers is None),
         "--address and --ray-workers are for --engine ray"),
        (cfg.ray_workers is None or cfg.ray_workers >= 1, "--ray-workers must be at least 1"),
    ]


def check_engine(cfg: Any) -> None:
    """For ``--engine ray``: Ray Data installed and the address answering, each said in one line, before anything
    is read or written."""
    if cfg.engine == "ray":
        import_ray()
        check_address(cfg.address)  # a mistyped address: one line now, not minutes of Ray's retries


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Refuse, in one line and within ``timeout`` s, a ``host:port`` (or ``ray://host:port``) that nothing answers
    at: Ray itself retries an unreachable address for minutes. ``auto`` and None are Ray's to resolve (at once)."""
    import socket

    if not address or address == "auto":
        return
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address}: give host:port (ray://host:port for Ray Client), or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


@contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None) -> Iterator[Cluster]:
    """Join the cluster at ``address`` ("auto": the one ``ray start`` made on this machine), or use the one this
    process already joined, or start a local one (``num_cpus``: its size; default all) and stop it afterwards."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        check_address(address)
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                                  logging_level=logging.ERROR)
        try:
            if address:  # the cluster's own authentication, as the user's environment sets it
                ray.init(address=address, **kw)
            else:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster for one run needs no token
                ray.init(num_cpus=num_cpus, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise ClusterError(f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        started = True
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # the run's report and errors say it, in one line
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the run's own progress display says it
    ctx.print_on_execution_start = False
    res = ray.cluster_resources()
    try:
        yield Cluster(int(res.get("CPU", 1)), int(res.get("GPU", 0)), address or ("local" if started else "joined"))
    finally:
        if started:
            ray.shutdown()


def worker_error(e: BaseException) -> BaseException:
    """The error a worker raised (a full disk, a one-line g2g error), under Ray's wrappers; or a one-line error
    naming the innermost one."""
    from g2g.errors import G2GError

    inner, seen = e, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__module__.split(".")[0] != "ray":
            inner = e
            if isinstance(e, (OSError, G2GError)):
                return e
        e = getattr(e, "cause", None) or e.__cause__  # type: ignore[assignment]
    text = str(inner).strip().splitlines()
    return ClusterError(f"a Ray worker failed: {type(inner).__name__}: {text[0] if text else ''}".rstrip(": "))
