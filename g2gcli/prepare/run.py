"""The prepare run: check options and DATA, resume, then photos -> aligned crops in batches.

Decoding runs in a thread pool (``workers``) a few batches ahead of detection;
the photo-to-crop stage (:func:`g2g.photos.crop_faces`) runs MTCNN on
``batch_size`` photos at a time; crops are written and their lines appended in
the main thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from g2g import __version__
from g2g.cluster import check_engine, engine_checks
from g2g.config import FACE_POLICIES, PREPARE_FORMATS, PrepareConfig
from g2g.errors import G2GError, check_options
from g2g.io.files import atomic_write_json
from g2g.io.parts import fold_parts
from g2g.io.images import (REASONS, VIDEO_HINT, LoadedImage, SkipImage, is_video, multi_page_note, scan_folder,
                           video_note)
from g2g.photos import FacePolicy, crop_faces, detector_or_cpu, identity_names, load_photo, output_stems
from g2g.prepare.crops import photo_records
from g2g.prepare.preview import write_preview
from g2g.prepare.records import (current_records, is_final, is_prepare_record, part_key, prepare_manifest,
                                 record)
from g2g.prepare.report import PrepareReport
from g2g.progress import BatchProgress, stage_line
from g2g.io.runfolder import Manifest, claim_output, run_lock, unread_note

CONFIG_FILE = "prepare_config.json"
FORMATS = PREPARE_FORMATS
# Options whose change would mix two kinds of crops in one DATA folder.
OUTPUT_KEYS = ("size", "zoom", "faces", "min_face", "min_score", "fmt", "max_pixels")


class PrepareError(G2GError):
    """A problem with the whole run (bad SRC, config mismatch): a one-line user error."""


def _check_config(cfg: PrepareConfig) -> FacePolicy:
    """Refuse option values no run can use (usage errors); the run's face policy."""
    check_options([
        (64 <= cfg.size <= 256, f"--size must be between 64 and 256, got {cfg.size}"),
        (cfg.fmt in FORMATS, f"--format must be one of {', '.join(FORMATS)}, got {cfg.fmt!r}"),
        (0 < cfg.zoom <= 4, f"zoom must be in (0, 4], got {cfg.zoom}"),
        (cfg.batch_size >= 1 and cfg.workers >= 1, "--batch-size and workers must be at least 1"),
    ] + engine_checks(cfg), PrepareError)
    policy = FacePolicy.of(cfg, FACE_POLICIES, PrepareError)
    check_engine(cfg)
    return policy


def _config_record(cfg: PrepareConfig) -> dict[str, Any]:
    return {**asdict(cfg), "template": [list(p) for p in cfg.align().template()], "g2g_version": __version__}


def _open_output(out: Path, cfg: PrepareConfig) -> None:
    """Write DATA/prepare_config.json, or check a previous run's against ``cfg``."""
    path = out / CONFIG_FILE
    if path.exists():
        import json

        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise PrepareError(f"cannot read {path}: {e}") from None
        new = asdict(cfg)
        diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in OUTPUT_KEYS if k in old and old[k] != new[k]]
        if diff:
            raise PrepareError(
                f"{out} was prepared with other options ({'; '.join(diff)}): rerun with the same options "
                "to resume, or choose another -o folder"
            )
        return
    atomic_write_json(path, _config_record(cfg))


def _prefetch(pool: ThreadPoolExecutor, paths: list[Path], ahead: int, fn) -> Iterator[tuple[Path, Any]]:
    """Yield (path, fn(path)) in order, keeping at most ``ahead`` decodes in flight (bounded memory)."""
    it = iter(paths)
    q: deque[tuple[Path, Future]] = deque((p, pool.submit(fn, p)) for p in islice(it, ahead))
    while q:
        p, fut = q.popleft()
        nxt = next(it, None)
        if nxt is not None:
            q.append((nxt, pool.submit(fn, nxt)))
        yield p, fut.result()


@dataclass
class _Sources:
    src: Path
    out: Path
    rels: dict[Path, Path]  # every listed file -> its path relative to SRC
    todo: list[Path]  # image files not done yet
    stems: dict[Path, Path]  # relative image path -> output path without suffix (unique)
    identities: dict[Path, str]  # relative image path -> its identity (unique: g2g.photos.identity_names)


def _scan(src: Path, out: Path, report: PrepareReport) -> tuple[list[Path], list[Path], list]:
    """(images, other files, entries never opened) under SRC, refusing a SRC with no image."""
    images, others, unused = scan_folder(src, exclude=out)
    videos = video_note(others)
    if not images:
        raise PrepareError(f"no images found under {src}" + (f" ({len(others)} non-image files)" if others else "")
                           + (f"; {videos}" if videos else ""))
    report.notes += [videos] if videos else []
    return images, others, unused


def _sources(src: Path, out: Path, cfg: PrepareConfig, manifest: Manifest, report: PrepareReport,
             scanned: tuple[list[Path], list[Path], list]) -> _Sources:
    """Resume from the manifest, and record the files that are never opened (not images, hidden)."""
    images, others, unused = scanned
    manifest.repair()
    current = current_records(manifest.lines())
    done = {s for s, recs in current.items() if is_final(recs, manifest, src / s if isinstance(s, str) else None)}
    rels = {p: p.relative_to(src) for p in images + others}
    report.n_sources = len(rels) + len(unused)
    report.n_resumed = sum(r.as_posix() in done for r in rels.values()) + sum(
        p.relative_to(src).as_posix() in done for p, _ in unused)
    report.n_redone = sum(r.as_posix() in current and r.as_posix() not in done for r in rels.values())
    lines = [record(rels[p], cfg, status="skipped", reason="not-an-image",
                    message=f"a video: {VIDEO_HINT}" if is_video(p) else
                    f"extension {p.suffix or '(none)'!r} is not an image type")
             for p in others if rels[p].as_posix() not in done]
    lines += [record(p.relative_to(src), cfg, status="skipped", reason=reason, message=REASONS[reason])
              for p, reason in unused if p.relative_to(src).as_posix() not in done]
    manifest.append(lines)
    report.skipped.update(r["reason"] for r in lines)
    report.n_processed += len(lines)
    names = [rels[p].as_posix() for p in images]
    stems = {Path(r): Path(s) for r, s in output_stems(names).items()}
    identities = {Path(r): i for r, i in identity_names(names).items()}
    return _Sources(src, out, rels, [p for p in images if rels[p].as_posix() not in done], stems, identities)


def prepare_folder(
    src: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(), progress: bool = True, detector=None
) -> PrepareReport:
    """Detect, align and write every face photo under ``src`` into ``out``; resumable.

    ``detector`` (a :class:`g2g.faces.detect.FaceDetector`) may be passed to reuse one.
    Raises :class:`PrepareError` for whole-run problems; per-file problems are
    manifest lines with a reason.
    """
    t_start = time.perf_counter()
    policy = _check_config(cfg)
    src, out = Path(src).resolve(), Path(out).resolve()
    if not src.is_dir():
        raise PrepareError(f"SRC {src} is not a folder")
    if out == src:
        raise PrepareError("-o DATA must differ from SRC")
    report = PrepareReport(out=out)
    scanned = _scan(src, out, report)
    claim_output(out, "prepare")
    manifest = prepare_manifest(out)
    with run_lock(out, "prepare"):  # a second prepare into DATA stops here, before any work
        _open_output(out, cfg)
        fold_parts(manifest, part_key, keep=is_prepare_record)  # what a killed --engine ray run finished
        srcs = _sources(src, out, cfg, manifest, report, scanned)
        if cfg.engine == "ray" and srcs.todo:
            from g2g.prepare.on_ray import crop_on_ray

            report.timings = crop_on_ray(srcs, cfg, policy, manifest, report, progress)
        else:
            if srcs.todo and detector is None:
                stage_line("prepare", "loading the face detector", progress)
                try:
                    detector, note = detector_or_cpu(cfg.device, cfg.min_face)
                except ValueError as e:
                    raise PrepareError(str(e)) from None
                report.device_note = note or ""
            report.device = getattr(detector, "device", "") or ""
            report.timings = _crop_all(srcs, cfg, policy, detector, manifest, report, progress)
        report.elapsed = time.perf_counter() - t_start
        unread: Counter = Counter()
        current = current_records(manifest.lines(unread))
        report.notes += [n for n in [unread_note(unread)] if n]
        seen = {s: recs[0] for s, recs in current.items()}  # one status per source
        report.preview = write_preview(src, out, current)
        report.total_ok = sum(r["status"] == "ok" for r in seen.values())
        report.total_skipped = Counter(r["reason"] for r in seen.values() if r["status"] != "ok")
    return report


def _crop_all(srcs: _Sources, cfg: PrepareConfig, policy: FacePolicy, detector: Any, manifest: Manifest,
              report: PrepareReport, progress: bool) -> dict[str, float]:
    """Every photo still to do, ``batch_size`` at a time: decode ahead, detect and align, write; -> timings (s)."""
    timings = Counter({"decode": 0.0, "wait": 0.0, "detect": 0.0, "align_write": 0.0})
    lock = threading.Lock()

    def load(p: Path) -> LoadedImage | SkipImage:
        t = time.perf_counter()
        try:
            return load_photo(p, cfg.max_pixels, cfg.min_face)
        finally:
            with lock:
                timings["decode"] += time.perf_counter() - t

    template = np.asarray(cfg.align().template())
    bar = BatchProgress("prepare", "images", len(srcs.todo), enabled=progress,  # after the detector: photos only
                        stage="detecting faces")
    pages: list[int] = []
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="g2g-decode")
    try:
        stream = _prefetch(pool, srcs.todo, ahead=2 * cfg.batch_size + cfg.workers, fn=load)
        while True:
            t = time.perf_counter()
            chunk = list(islice(stream, cfg.batch_size))
            timings["wait"] += time.perf_counter() - t
            if not chunk:
                break
            stage: Counter = Counter()
            photos = crop_faces([r for _, r in chunk], detector, policy, template, cfg.size, cfg.batch_size,
                                seconds=stage)
            pages += [r.pages for _, r in chunk if isinstance(r, LoadedImage) and r.pages > 1]
            t = time.perf_counter()
            lines, n_ok = [], 0
            for (p, _), photo in zip(chunk, photos):
                rel = srcs.rels[p]
                recs = photo_records(srcs.src, rel, photo, cfg, srcs.stems[rel], srcs.identities[rel], srcs.out)
                lines += recs
                n_ok += report.add_photo(recs[0]["status"], recs[0]["reason"], len(recs))
            manifest.append(lines)
            timings["detect"] += stage["detect"]
            timings["align_write"] += stage["align"] + time.perf_counter() - t
            bar.advance(n_ok, len(chunk) - n_ok)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    report.notes += [n for n in [multi_page_note(pages)] if n]
    return dict(timings)
