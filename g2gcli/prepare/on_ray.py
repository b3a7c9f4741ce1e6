"""``g2g prepare --engine ray``: the same crops and manifest lines as a local run, computed by a Ray Data pipeline.

The driver scans SRC and resumes (as a local run does); the dataset's rows are the
photos still to do. One stage, an actor pool, opens the face detector once per
actor (on a GPU each where the cluster has them) and, for each block of photos,
reads them, detects and aligns their faces in batches and writes each photo's
crops and lines, the lines into the photo's own part file (:mod:`g2g.io.parts`).
A retried block (a killed worker or node) reads the part first and skips the
photos that are done; the driver folds the parts into ``manifest.jsonl`` in the
local run's order when the run ends, and a rerun folds what a killed run left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2g.config import PrepareConfig
from g2g.io.parts import open_part, part_path
from g2g.io.runfolder import Manifest
from g2g.photos import FacePolicy
from g2g.prepare.report import PrepareReport

TAG = "prepare"  # the parts' folder: one prepare run writes into a DATA folder at a time


@dataclass
class Job:
    """What every actor of a run needs, put in the object store once."""

    cfg: PrepareConfig
    policy: FacePolicy
    src: Path
    out: Path
    stems: dict[str, str]  # relative photo path -> output path without suffix
    identities: dict[str, str]  # relative photo path -> its identity


class CropPhotos:
    """Actor: the face detector opened once, on its first block; each block's photos read, cropped and recorded."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self.detector: Any = None
        self.note = ""  # why the detector runs on the CPU where CUDA was asked for
        self.template: Any = None  # the alignment template of the run's crops

    def __call__(self, batch: dict[str, np.ndarray], ref: list) -> dict[str, np.ndarray]:
        from g2g.photos import crop_faces, detector_or_cpu, load_photo
        from g2g.prepare.crops import photo_records
        from g2g.prepare.records import current_records, is_final, prepare_manifest

        if self.job is None:
            import ray

            self.job = ray.get(ref[0])
            self.detector, note = detector_or_cpu(self.job.cfg.device, self.job.cfg.min_face)
            self.note = note or ""
            self.template = np.asarray(self.job.cfg.align().template())
        job, cfg = self.job, self.job.cfg
        manifest = prepare_manifest(job.out)
        rels = [str(r) for r in batch["photo"]]
        done: dict[str, list[dict[str, Any]]] = {}
        for rel in rels:  # a retried block: what its first try finished
            with open_part(job.out, TAG, rel) as part:
                recs = current_records(iter(part.lines)).get(rel)
            if recs and is_final(recs, manifest, job.src / rel):
                done[rel] = recs
        todo = [r for r in rels if r not in done]
        loaded = [load_photo(job.src / r, cfg.max_pixels, cfg.min_face) for r in todo]
        pages = {r: getattr(im, "pages", 1) for r, im in zip(todo, loaded)}
        for rel, photo in zip(todo, crop_faces(loaded, self.detector, job.policy, self.template, cfg.size,
                                                    cfg.batch_size)):
            recs = photo_records(job.src, Path(rel), photo, cfg, Path(job.stems[rel]), job.identities[rel], job.out)
            with open_part(job.out, TAG, rel) as part:
                part.append(recs)
            done[rel] = recs
        return {"photo": np.asarray(rels, dtype=object),
                "status": np.asarray([done[r][0]["status"] for r in rels], dtype=object),
                "reason": np.asarray([done[r][0]["reason"] or "" for r in rels], dtype=object),
                "crops": np.asarray([len(done[r]) for r in rels]),
                "pages": np.asarray([pages.get(r, 1) for r in rels]),
                "note": np.asarray([self.note] * len(rels), dtype=object)}


def _run_pipeline(ray: Any, gpu: bool, actors: int, blocks: int, job: Job, rels: list[str], report: PrepareReport,
                  bar: Any) -> None:
    """Run a pool of ``actors`` (a GPU each where ``gpu``) over ``rels`` in ``blocks`` blocks, counting on the
    driver what each photo gave."""
    from g2g.io.images import multi_page_note

    cfg = job.cfg
    ref = [ray.put(job)]  # in a list: handed to the actors as it is, each gets the job once
    ds = ray.data.from_items([{"photo": r} for r in rels], override_num_blocks=blocks)
    ds = ds.map_batches(CropPhotos, fn_kwargs={"ref": ref}, batch_size=cfg.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=actors),
                        num_gpus=1 if gpu else 0, num_cpus=1)
    pages: list[int] = []
    for row in ds.iter_rows():
        ok = report.add_photo(row["status"], row["reason"] or None, int(row["crops"]))
        pages += [int(row["pages"])] if row["pages"] > 1 else []
        report.device_note = report.device_note or row["note"]
        bar.advance(ok, 1 - ok)
    report.notes += [n for n in [multi_page_note(pages)] if n]


def crop_on_ray(srcs: Any, cfg: PrepareConfig, policy: FacePolicy, manifest: Manifest, report: PrepareReport,
                progress: bool) -> dict[str, float]:
    """The driver's side of a ``--engine ray`` run over ``srcs.todo`` (g2g.prepare.run's sources); the parts are
    folded at the end, also when the run fails (what finished is kept) -> timings (s)."""
    from g2g.cluster import ray_cluster, worker_error
    from g2g.io.parts import fold_parts
    from g2g.prepare.records import is_prepare_record, part_key
    from g2g.progress import BatchProgress, stage_line

    rels = [srcs.rels[p].as_posix() for p in srcs.todo]
    job = Job(cfg, policy, srcs.src, srcs.out, {r: srcs.stems[Path(r)].as_posix() for r in rels},
              {r: srcs.identities[Path(r)] for r in rels})
    t = time.perf_counter()
    bar = None
    try:
        stage_line("prepare", "starting Ray", progress)
        with ray_cluster(cfg.address) as cluster:
            import ray

            blocks = -(-len(rels) // cfg.batch_size)
            n = min(cluster.crop_actors(cfg.ray_workers), blocks)  # an actor more than blocks would only wait
            report.device = f"Ray, {n} actor(s)"
            report.notes.append(f"engine: Ray ({cluster.address}: {cluster.cpus} CPUs, {cluster.gpus} GPUs, "
                                f"{n} detecting actor(s))")
            bar = BatchProgress("prepare", "images", len(rels), enabled=progress, stage="detecting faces")
            try:
                _run_pipeline(ray, cluster.gpus > 0 and cfg.device != "cpu", n, blocks, job, rels, report, bar)
            except Exception as e:  # a worker's error, wrapped by Ray: said in one line
                raise worker_error(e) from None
    finally:
        if bar is not None:
            bar.close()
        fold_parts(manifest, part_key, tags=[TAG], first=[part_path(srcs.out, TAG, r) for r in rels],
                   keep=is_prepare_record)
    return {"cluster": time.perf_counter() - t}
