"""``g2g mix --engine ray``: the same pairs, files and manifest as a local run, computed by a Ray Data pipeline.

The driver plans, resumes and encodes every needed identity once (as a local run
does), then puts the encodings in the object store once. The dataset's rows are
the poses still to do, each with its pending identities, so the N x M pairs are
expanded one pose at a time inside the workers, never as a dataset:

    poses --detect (CPU tasks)--> aligned faces --mix (actor pool: the method
    opened once per actor, a GPU each where the cluster has them)--> mixed crops
    --write (CPU tasks: paste-back, atomic files, part lines)--> driver

The mix actor runs :class:`g2g.mix.pairs.PairWriter` exactly as a local run does,
but hands its writes to a recorder; the write task replays them through a
``PairWriter`` whose manifest is the pose's part file (:mod:`g2g.io.parts`). A
retried block (a killed worker or node) finds its part and skips the pairs that
are done; the driver folds the parts into ``manifest.jsonl`` when the run ends,
and a rerun folds what a killed run left before it plans.
"""

from __future__ import annotations

import pickle
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from g2g.config import MixConfig
from g2g.io.parts import open_part, part_path, shard_tag
from g2g.io.runfolder import Manifest
from g2g.mix.pairs import PairWriter
from g2g.mix.report import MixReport
from g2g.mix.resume import pair_of, pending
from g2g.pairing import Plan
from g2g.progress import BatchProgress

PART_ROWS = 1  # poses per block: a killed worker's retry redoes at most this many poses
DETECT_MEMORY = 512 * 2**20  # bytes a detect task asks the scheduler for (a large photo decoded, MTCNN's pyramid)


@dataclass
class Job:
    """What every worker of a run needs, put in the object store once."""

    cfg: MixConfig
    model_dir: Path | None
    size: int | None  # crop side of a paste method (None: the model's own)
    plan: Plan
    out: Path
    poses: Path  # the folder pose paths are relative to
    model_sha: str
    set_sha: str
    crop_mode: bool
    pose_stems: dict[str, str]
    id_stems: dict[str, str]
    names: dict[tuple[str, str], str]
    codes: dict[str, Any]  # identity -> its encoding
    id_info: dict[str, dict[str, Any]]
    tag: str  # the shard, in part paths
    align: Any  # the mixer's crop geometry (AlignConfig)
    opener: Callable[[MixConfig, Path | None, int | None], Any]  # opens the run's method (g2g.mix.run.open_run_mixer)


class _Recorder:
    """A writer that keeps the calls a ``PairWriter`` makes (files to save, lines to append) for the write task."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.lock = threading.Lock()

    def submit(self, fn: Any, *args: Any) -> None:
        if fn.__name__ == "write_pair":
            args = args[:-1]  # id_info: the write task has its own copy
        self.calls.append((fn.__name__, args))

    def append(self, records: list[dict[str, Any]]) -> None:
        self.calls.append(("append", (records,)))


class _PartWriter:
    """A writer that runs each call at once, appending lines to the pose's part."""

    def __init__(self, part: Any, keep: set[tuple[str, str]]):
        self.part, self.keep, self.lock = part, keep, threading.Lock()

    def submit(self, fn: Any, *args: Any) -> None:
        fn(*args)

    def append(self, records: list[dict[str, Any]]) -> None:
        self.part.append([r for r in records if pair_of(r) in self.keep])


class _AlignOnly:
    """What :class:`g2g.mix.sources.Aligner` reads of a mixer: the crop geometry."""

    def __init__(self, align: Any):
        self.align = align


class _Worker:
    """What a worker process keeps between blocks of one run: the job, and what it opened for it (the detector, the
    name sets of a PairWriter)."""

    def __init__(self, job: Job):
        self.job = job
        self._aligner: Any = None
        self._work: PairWriter | None = None

    def aligner(self) -> Any:
        if self._aligner is None:
            from g2g.mix.reference import open_reference
            from g2g.mix.sources import Aligner

            pool = ThreadPoolExecutor(max_workers=max(1, self.job.cfg.workers))
            self._aligner = Aligner(self.job.cfg, _AlignOnly(self.job.align), pool, open_reference(self.job.cfg))
        return self._aligner

    def pair_writer(self, mixer: Any, writer: Any, report: MixReport) -> PairWriter:
        """The run's PairWriter (its name sets built once per process), with this block's writer and report."""
        job = self.job
        if self._work is None:
            silent = BatchProgress("mix", "pairs", 0, enabled=False)  # the driver counts what comes back
            self._work = PairWriter(job.cfg, mixer, job.plan, job.out, writer, silent, report,  # type: ignore[arg-type]
                                    job.model_sha, job.set_sha, job.crop_mode, job.pose_stems, job.id_stems, job.names)
        self._work.mixer, self._work.writer, self._work.report = mixer, writer, report
        return self._work


_WORKER: dict[Any, _Worker] = {}


def _worker(ref: list) -> _Worker:
    """This process's state for the run whose job is ``ref[0]`` (an object reference, fetched once)."""
    import ray

    if ref[0] not in _WORKER:
        _WORKER.clear()  # an earlier run's
        _WORKER[ref[0]] = _Worker(ray.get(ref[0]))
    return _WORKER[ref[0]]


def detect_poses(batch: dict[str, np.ndarray], ref: list) -> dict[str, np.ndarray]:
    """CPU task: read, detect and align a block of poses -> each pose's faces (and photo, for paste-back)."""
    state = _worker(ref)
    job, aligner = state.job, state.aligner()
    aligner.notes, aligner.pages = [], []
    rels = [str(r) for r in batch["pose"]]
    srcs = aligner.run(job.poses, rels, keep_photo=not job.crop_mode)
    extra = {"notes": list(aligner.notes), "pages": list(aligner.pages)}
    payloads = [pickle.dumps({"src": s, "idents": list(i), **(extra if k == 0 else {})})
                for k, (s, i) in enumerate(zip(srcs, batch["idents"]))]
    return {"pose": np.asarray(rels, dtype=object), "payload": np.asarray(payloads, dtype=object)}


class MixPoses:
    """Actor: the method opened once, on its first block; each pose's faces encoded once and mixed with each of its
    identities."""

    def __init__(self) -> None:
        self.mixer: Any = None

    def __call__(self, batch: dict[str, np.ndarray], ref: list) -> dict[str, np.ndarray]:
        state = _worker(ref)
        job, out = state.job, []
        if self.mixer is None:
            self.mixer = job.opener(job.cfg, job.model_dir, job.size)
        for payload in batch["payload"]:
            row = pickle.loads(payload)
            report = MixReport(out=job.out)
            recorder = _Recorder()
            work = state.pair_writer(self.mixer, recorder, report)
            work.mix_chunk([row["src"]], {row["src"].rel: row["idents"]}, job.codes, job.id_info)
            del row["src"]
            out.append(pickle.dumps(row | {"calls": recorder.calls, "bad_sources": report.bad_sources,
                                           "poses_encoded": report.poses_encoded}))
        return {"pose": batch["pose"], "payload": np.asarray(out, dtype=object)}


def write_pairs(batch: dict[str, np.ndarray], ref: list) -> dict[str, np.ndarray]:
    """CPU task: paste back and write each pair of a pose, its lines into the pose's part -> what each pose did."""
    state = _worker(ref)
    job = state.job
    manifest = Manifest(job.out)
    results = []
    for pose, payload in zip(batch["pose"], batch["payload"]):
        row = pickle.loads(payload)
        pairs = [(str(pose), ident) for ident in row["idents"]]
        with open_part(job.out, job.tag, str(pose)) as part:
            earlier = {pair_of(r): r for r in part.lines}
            todo = set(pending(manifest, pairs, job.model_sha, job.set_sha, last=earlier))
            work = state.pair_writer(None, _PartWriter(part, todo), MixReport(out=job.out))
            for name, args in row["calls"]:
                if name == "save_crop":
                    work.save_crop(*args)
                elif name == "append":
                    work.writer.append(*args)
                elif (args[0].rel, args[1]) in todo:  # write_pair
                    work.write_pair(*args, job.id_info)
            last = {pair_of(r): r for r in part.lines}
        done = [last[p] for p in pairs if p in last]
        results.append(pickle.dumps({
            "ok": sum(r["status"] == "ok" for r in done),
            "skipped": Counter(r["reason"] for r in done if r["status"] != "ok"),
            "bad_sources": row["bad_sources"], "poses_encoded": row["poses_encoded"],
            "notes": row.get("notes", []), "pages": row.get("pages", [])}))
    return {"pose": batch["pose"], "result": np.asarray(results, dtype=object)}


def ray_rows(todo: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    """The dataset's rows: each pose still to do, with its pending identities in plan order."""
    by_pose: dict[str, list[str]] = {}
    for p, ident in todo:
        by_pose.setdefault(p, []).append(ident)
    for p, idents in by_pose.items():
        yield {"pose": p, "idents": idents}


def pool_size(cluster: Any, asked: int | None, todo: list[tuple[str, str]]) -> int:
    """Mixing actors: the cluster's (:meth:`g2g.cluster.Cluster.mix_actors`), no more than poses (one more would
    only wait)."""
    return min(cluster.mix_actors(asked), len({p for p, _ in todo}))


def run_pipeline(ray: Any, cluster: Any, job: Job, todo: list[tuple[str, str]], report: MixReport,
                 bar: Any, actors: int | None) -> list[Path]:
    """Run the three stages over the poses of ``todo``, counting on the driver what each pose did -> the parts
    written, in plan order (for the fold)."""
    rows = list(ray_rows(todo))
    ref = [ray.put(job)]  # in a list: handed to the workers as it is, each gets the job once
    n_actors = pool_size(cluster, actors, todo)
    gpu = cluster.gpus > 0 and job.cfg.device != "cpu"
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // PART_ROWS)))
    # the memory a photo's decode and detection may take; being the detect tasks' own, it also keeps them apart
    # from the actors (not fused into them), so detection runs on every free CPU whatever the actor count
    ds = ds.map_batches(detect_poses, fn_kwargs={"ref": ref}, batch_size=PART_ROWS, num_cpus=1, memory=DETECT_MEMORY)
    ds = ds.map_batches(MixPoses, fn_kwargs={"ref": ref}, batch_size=PART_ROWS,
                        compute=ray.data.ActorPoolStrategy(size=n_actors), num_gpus=1 if gpu else 0,
                        num_cpus=0 if gpu else 1)
    ds = ds.map_batches(write_pairs, fn_kwargs={"ref": ref}, batch_size=PART_ROWS, num_cpus=1)
    pages: list[int] = []
    bar.stage("mixing pairs")
    for row in ds.iter_rows():
        res = pickle.loads(row["result"])
        report.written += res["ok"]
        report.skipped.update(res["skipped"])
        report.bad_sources.update(res["bad_sources"])
        report.poses_encoded += res["poses_encoded"]
        report.notes += [n for n in res["notes"] if n not in report.notes]
        pages += res["pages"]
        bar.advance(ok=res["ok"], skipped=sum(res["skipped"].values()))
    from g2g.io.images import multi_page_note

    report.notes += [n for n in [multi_page_note(pages)] if n]
    return [part_path(job.out, job.tag, r["pose"]) for r in rows]


def run_on_ray(work: PairWriter, aligner: Any, inp: Any, model_dir: Path | None, size: int | None,
               todo: list[tuple[str, str]], encode: Callable, opener: Callable) -> None:
    """The driver's side of a ``--engine ray`` run: identities here (``encode``: the local run's
    g2g.mix.run.encode_identities), poses on the cluster (``opener``: how a worker opens the method), parts folded
    at the end (also when the run fails: what finished is kept)."""
    import time

    from g2g.cluster import ray_cluster, worker_error
    from g2g.io.parts import fold_parts
    from g2g.mix.resume import is_mix_record

    cfg, report, bar = work.cfg, work.report, work.bar
    timings: Counter = Counter()
    manifest = work.writer.manifest
    parts: list[Path] = []
    try:
        with ray_cluster(cfg.address) as cluster:
            import ray

            report.notes.append(f"engine: Ray ({cluster.address}: {cluster.cpus} CPUs, {cluster.gpus} GPUs, "
                                f"{pool_size(cluster, cfg.ray_workers, todo)} mixing actor(s))")
            codes, id_info = encode(work, aligner, inp.ids, todo, timings)
            work.writer.drain(0)
            job = Job(cfg, model_dir, size, work.plan, inp.out, inp.poses, work.model_sha, work.set_sha,
                      work.crop_mode, work.pose_stems, work.id_stems, work.names, codes, id_info,
                      shard_tag(cfg.shard), work.mixer.align, opener)
            t = time.perf_counter()
            try:
                parts = run_pipeline(ray, cluster, job, todo, report, bar, cfg.ray_workers)
            except Exception as e:  # a worker's error, wrapped by Ray: said in one line
                raise worker_error(e) from None
            timings["cluster"] += time.perf_counter() - t
    finally:
        work.writer.close()
        aligner.pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        fold_parts(manifest, pair_of, tags=[shard_tag(cfg.shard)], first=parts, keep=is_mix_record)
    report.timings = dict(timings)
    report.notes += aligner.all_notes()
