"""The mix run: check the inputs, open the method, plan the pairs, resume, and run the pipeline.

While the method encodes and mixes one chunk of poses, a background thread
prepares the next (decode in ``workers`` threads, MTCNN in batches, alignment in
threads). Paste-back and writing run in a writer pool (:mod:`g2g.mix.pairs`).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2g import __version__
from g2g.cluster import check_engine, engine_checks
from g2g.config import MIX_FACE_POLICIES, MIX_FORMATS, MixConfig
from g2g.errors import G2GError, check_options
from g2g.io.files import atomic_write_json
from g2g.io.images import IMAGE_EXTENSIONS, VIDEO_HINT, is_video, scan_folder, video_note
from g2g.methods import METHODS, open_mixer
from g2g.methods.base import Mixer
from g2g.mix.grid import GRID_FILE, write_grid
from g2g.mix.pairs import PairWriter, Writer, pair_names
from g2g.mix.report import MixReport
from g2g.mix.resume import (made_otherwise, mix_manifest, other_settings_message, pair_of, pending, settings_record,
                            settings_sha256, start_over)
from g2g.mix.reference import Reference, ReferenceFaceError, open_reference
from g2g.mix.sources import Aligner
from g2g.pairing import Plan, build_plan, group_identities, parse_shard, shard
from g2g.photos import FacePolicy, output_stems
from g2g.progress import BatchProgress, stage_line
from g2g.io.runfolder import MANIFEST, Manifest, claim_output, run_lock, unread_note
from g2g.runtime import DeviceError

RUN_FILE = "run.json"
POSE_CHUNK = 64  # poses whose encodings are held at once (x2 with the chunk being prepared)
ID_CHUNK = 64  # identities aligned and encoded at once


class MixError(G2GError):
    """A problem with the whole run (bad folders, options, model): a one-line user error."""


def check_mix_config(cfg: MixConfig) -> None:
    """Refuse, in one line, option values that no mix run can use (before anything is read or written)."""
    FacePolicy.of(cfg, MIX_FACE_POLICIES, MixError)
    check_options([
        (cfg.reference is None or Path(cfg.reference).is_file(), f"--reference {cfg.reference} is not a photo file"),
        (cfg.reference is None or not cfg.aligned, "--reference finds faces in photos: it does not work with --aligned"),
        (0 < cfg.reference_distance <= 2, f"--reference-distance must be in (0, 2], got {cfg.reference_distance}"),
        (cfg.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}"),
        (cfg.size is None or 32 <= cfg.size <= 512, f"--size must be auto or between 32 and 512 px, got {cfg.size}"),
        (cfg.fmt in MIX_FORMATS, f"output format must be one of {', '.join(MIX_FORMATS)}, got {cfg.fmt!r}"),
        (cfg.quality is None or 1 <= cfg.quality <= 100, f"--quality must be between 1 and 100, got {cfg.quality}"),
        (cfg.quality is None or cfg.fmt != "png", "--quality is for jpg and webp: png is lossless, drop --quality"),
        (cfg.batch_size >= 1 and cfg.workers >= 1, "--batch-size and workers must be at least 1"),
        (0 <= cfg.feather <= 0.5, f"feather must be in [0, 0.5] (a fraction of the crop), got {cfg.feather}"),
    ] + engine_checks(cfg), MixError)
    check_engine(cfg)


def crop_side(cfg: MixConfig, poses: Path, pose_files: list[str], model_dir: Path | None,
              images: list[np.ndarray] | None = None, detector: Any = None) -> tuple[int | None, str]:
    """(crop side for a paste method, a note): ``--size`` as given, or for ``--size auto`` the pose faces' own
    resolution (g2g.photos.auto_side), so that a pasted face is as sharp as the photo around it. A model uses
    its own size (None). ``images``: pose photos in memory (the Python API) instead of ``pose_files``."""
    if cfg.size is not None:
        return cfg.size, ""
    if cfg.method == "model" or (cfg.method == "auto" and model_dir is not None):
        return None, ""
    from g2g.config import AlignConfig
    from g2g.photos import auto_side, native_sides, photo_sides

    probe = AlignConfig(size=128)
    template = np.asarray(probe.template())
    sides = (native_sides(poses, pose_files, cfg, template, probe.size) if images is None else
             photo_sides(images[:16], cfg, template, probe.size, detector))  # native_sides' first 16
    if cfg.aligned and sides:  # crops as they are: their own side, not resampled
        side = int(min(512, max(32, round(float(np.median(sides))))))
        return side, f"--size auto: {side} px, the side of the aligned pose crops"
    side = auto_side(sides)
    return side, (f"--size auto: {side} px crops, from the resolution of {len(sides)} pose face(s) "
                  f"(median {np.median(sides):.0f} px; --size N fixes it)" if sides else
                  f"--size auto: {side} px crops (no pose face measured)")


def open_run_mixer(cfg: MixConfig, model_dir: Path | None, size: int | None) -> Mixer:
    """The run's method, as the driver and every worker of a cluster open it (``size``: :func:`crop_side`)."""
    try:
        return open_mixer(cfg.method, model_dir, device=cfg.device, batch_size=cfg.batch_size, size=size,
                          keep_mouth=cfg.keep_mouth, fixes=cfg.fixes)
    except DeviceError as e:
        raise MixError(str(e)) from None


@dataclass
class _Inputs:
    poses: Path  # the folder pose_files are relative to (POSES, or the folder of a POSES photo)
    ids: Path  # the same for IDS
    out: Path
    pose_files: list[str]
    id_files: list[str]
    notes: list[str]
    poses_root: Path  # POSES as given (a folder or one photo), resolved: run.json's poses_root
    ids_root: Path
    reference: Reference | None = None


def _inputs(poses: Path, ids: Path, out: Path, cfg: MixConfig) -> _Inputs:
    """The image files of POSES and IDS (relative paths) and the --reference face, refusing what cannot be a run."""
    poses, ids, out = Path(poses).resolve(), Path(ids).resolve(), Path(out).resolve()
    (pose_dir, pose_files, pose_notes), (id_dir, id_files, id_notes) = (_input("POSES", poses, out),
                                                                        _input("IDS", ids, out))
    try:
        reference = open_reference(cfg)
    except ReferenceFaceError as e:
        raise MixError(str(e)) from None
    notes = pose_notes + id_notes + (reference.notes if reference else [])
    return _Inputs(pose_dir, id_dir, out, pose_files, id_files, notes, poses, ids, reference)


def _input(name: str, path: Path, out: Path) -> tuple[Path, list[str], list[str]]:
    """(folder, image files relative to it, notes) of POSES or IDS: a folder (recursive), or one photo."""
    if out == path:
        raise MixError(f"-o OUT must differ from {name}")
    if path.is_file():
        if is_video(path):
            raise MixError(f"{name} {path} is a video: {VIDEO_HINT}")
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise MixError(f"{name} {path} is not an image file (extension {path.suffix or '(none)'!r}): "
                           "give a photo or a folder of photos")
        return path.parent, [path.name], []
    if not path.is_dir():
        raise MixError(f"{name} {path} is not a folder or a photo" + ("" if path.exists() else ": it does not exist"))
    images, others, unused = scan_folder(path, exclude=out)
    videos = video_note(others)
    n_other = len(others) - sum(map(is_video, others))
    notes = [f"{name}: {n_other} file(s) without an image extension and {len(unused)} hidden or repeated "
             "entr(ies) not used"] if n_other or unused else []
    notes += [f"{name}: {videos}"] if videos else []
    if not images:
        raise MixError(f"no images found under {name} {path}" + (f" ({videos})" if videos else ""))
    return path, [p.relative_to(path).as_posix() for p in images], notes


def _write_run_file(inp: _Inputs, cfg: MixConfig, mixer: Mixer, plan: Plan, shard_of: str, n_pairs: int,
                    model_sha: str, set_sha: str) -> None:
    atomic_write_json(inp.out / RUN_FILE, {
        "poses_root": str(inp.poses_root), "ids_root": str(inp.ids_root),
        "method": mixer.name, "model_dir": str(mixer.root.resolve()) if mixer.root else None,
        "model_sha256": model_sha, "settings_sha256": set_sha, "settings": settings_record(cfg, mixer),
        "mix": asdict(cfg), "align": {"size": mixer.align.size, "zoom": mixer.align.zoom,
                                      "template": [list(p) for p in mixer.align.template()]},
        "providers": mixer.providers, "device": mixer.device, "note": mixer.note,
        "plan": {"mode": plan.mode, "pairs": len(plan.pairs), "shard": shard_of, "shard_pairs": n_pairs},
        "version": __version__,
    })


def mix_folders(
    poses: Path, ids: Path, out: Path, cfg: MixConfig = MixConfig(), model_dir: Path | None = None, progress: bool = True,
) -> MixReport:
    """Mix every planned (pose, identity) pair of ``poses`` x ``ids`` into ``out``; resumable.

    Raises :class:`MixError` (or :class:`BundleError` / :class:`PairingError`,
    all ``ValueError``) for whole-run problems; bad photos become skipped
    manifest lines with a reason.
    """
    t_start = time.perf_counter()
    check_mix_config(cfg)
    inp = _inputs(poses, ids, out, cfg)
    stage_line("mix", "loading the models", progress)  # before the bar: nothing to count yet
    size, size_note = crop_side(cfg, inp.poses, inp.pose_files, model_dir)
    mixer = open_run_mixer(cfg, model_dir, size)
    plan = build_plan(inp.pose_files, group_identities(inp.id_files), cfg.pairs, cfg.per_pose, cfg.seed)
    i, n = parse_shard(cfg.shard)
    pairs = shard(plan.pairs, i, n)
    report = MixReport(out=inp.out, planned=len(pairs), total_plan=len(plan.pairs), shard=f"{i}/{n}",
                       providers=mixer.providers, device=mixer.device, note=mixer.note,
                       notes=list(plan.notes) + inp.notes + ([size_note] if size_note else []))
    if cfg.aligned and not cfg.crop_only:
        report.notes.append("--aligned: poses are crops, so outputs are mixed crops (nothing to paste back into)")
    model_sha, set_sha = mixer.sha256, settings_sha256(cfg, mixer)
    claim_output(inp.out, "mix")
    with run_lock(inp.out, f"mix shard {i}/{n}", cfg.wait):  # shards of one plan run side by side
        manifest, todo = _resume(inp, cfg, mixer, model_dir, pairs, report, model_sha, set_sha)
        _write_run_file(inp, cfg, mixer, plan, f"{i}/{n}", len(pairs), model_sha, set_sha)
        report.resumed = len(pairs) - len(todo)
        bar = BatchProgress("mix", "pairs", len(pairs), report.resumed, progress)
        if cfg.engine == "ray" and todo:
            from g2g.mix.on_ray import run_on_ray

            run_on_ray(*_writing(inp, cfg, mixer, plan, manifest, bar, report, model_sha, set_sha), inp, model_dir,
                       size, todo, encode_identities, open_run_mixer)
        else:
            _run_pipeline(inp, cfg, mixer, plan, manifest, todo, report, bar, model_sha, set_sha)
        if todo and not (report.written or report.resumed or report.identities_encoded):  # all skipped: exit 3
            why = ", ".join(f"{count} {reason}" for (role, reason), count in sorted(report.bad_sources.items())
                            if role == "identity")
            raise MixError(f"nothing was mixed: no identity photo had a usable face ({why or 'none readable'}); "
                           f"{len(todo)} pair(s) recorded as skipped in {MANIFEST}")
        if cfg.grid:
            report.grid = write_grid(inp.out, pairs, cfg.grid_max, mixer.align.size)
    report.elapsed = time.perf_counter() - t_start
    return report


def _resume(inp: _Inputs, cfg: MixConfig, mixer: Mixer, model_dir: Path | None, pairs: list[tuple[str, str]],
            report: MixReport, model_sha: str, set_sha: str) -> tuple[Manifest, list[tuple[str, str]]]:
    """(the manifest, the pairs still to do). Outputs of another model or other settings in OUT are refused in one
    line before anything is written there, or with ``--overwrite`` cleared (:func:`g2g.mix.resume.start_over`)."""
    import json

    from g2g.io.parts import fold_parts, shard_tag
    from g2g.mix.resume import is_mix_record

    manifest = mix_manifest(inp.out)
    fold_parts(manifest, pair_of, tags=[shard_tag(cfg.shard)], keep=is_mix_record)  # what a killed cluster run left
    unread: Counter = Counter()
    last = manifest.latest(pair_of, unread)
    stale = made_otherwise(last, model_sha, set_sha)
    if stale and not cfg.overwrite:
        try:
            run = json.loads((inp.out / RUN_FILE).read_text())
        except (OSError, ValueError):
            run = None
        raise MixError(other_settings_message(inp.out, stale, run if isinstance(run, dict) else None,
                                              settings_record(cfg, mixer), model_sha, model_dir))
    manifest.repair()
    if cfg.overwrite:
        last = start_over(manifest, pairs, model_sha, set_sha)
        (inp.out / GRID_FILE).unlink(missing_ok=True)  # rebuilt by --grid from this run's outputs only
        report.notes.append(f"--overwrite: {len(pairs)} pair(s) of this shard made afresh" + (
            f"; the outputs of {len(stale)} pair(s) made with other settings removed" if stale else ""))
    report.notes += [n for n in [unread_note(unread)] if n]
    return manifest, pending(manifest, pairs, model_sha, set_sha, last=last)


def _run_pipeline(inp: _Inputs, cfg: MixConfig, mixer: Mixer, plan: Plan, manifest: Manifest,
                  todo: list[tuple[str, str]], report: MixReport, bar: BatchProgress, model_sha: str,
                  set_sha: str) -> None:
    """Identities first (each aligned and encoded once, kept in memory), then the poses chunk by chunk."""
    crop_mode = cfg.crop_only or cfg.aligned
    work, aligner = _writing(inp, cfg, mixer, plan, manifest, bar, report, model_sha, set_sha)
    pool, writer = aligner.pool, work.writer
    prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="g2g-prep")
    timings: Counter = Counter()
    try:
        codes, id_info = encode_identities(work, aligner, inp.ids, todo, timings)
        _mix_poses(work, aligner, inp.poses, todo, codes, id_info, not crop_mode, prep, timings)
        t = time.perf_counter()
        writer.drain(0)
        timings["write_wait"] += time.perf_counter() - t
    finally:
        prep.shutdown(wait=True, cancel_futures=True)
        writer.close()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    report.timings = {**dict(timings), **{f"aligner_{k}": v for k, v in aligner.seconds.items()}}
    report.notes += aligner.all_notes()


def _writing(inp: _Inputs, cfg: MixConfig, mixer: Mixer, plan: Plan, manifest: Manifest, bar: BatchProgress,
             report: MixReport, model_sha: str, set_sha: str) -> tuple[PairWriter, Aligner]:
    """The run's PairWriter (with its writer pool) and its Aligner (with its reading pool)."""
    pose_stems = output_stems(inp.pose_files)
    writer = Writer(max(1, min(cfg.workers, 4)), manifest, limit=4 * cfg.batch_size)
    work = PairWriter(cfg, mixer, plan, inp.out, writer, bar, report, model_sha, set_sha, cfg.crop_only or cfg.aligned,
                      pose_stems, output_stems(inp.id_files), pair_names(plan.pairs, pose_stems))
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="g2g-load")
    return work, Aligner(cfg, mixer, pool, inp.reference)


def encode_identities(work: PairWriter, aligner: Aligner, ids: Path, todo: list[tuple[str, str]],
                       timings: Counter) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Each needed identity aligned and encoded once, ``ID_CHUNK`` at a time -> (encodings, what each one used)."""
    needed = list(dict.fromkeys(ident for _, ident in todo))
    codes: dict[str, Any] = {}
    id_info: dict[str, dict[str, Any]] = {}
    photos = sum(len(work.plan.identities[name]) for name in needed)
    step = work.bar.stage(aligner.stage("identity"), photos, "photos") if needed else None
    for k in range(0, len(needed), ID_CHUNK):
        t = time.perf_counter()
        chunk = needed[k : k + ID_CHUNK]
        srcs = aligner.run(ids, [s for name in chunk for s in work.plan.identities[name]], keep_photo=False,
                           role="identity", step=step)
        timings["identities_align"] += time.perf_counter() - t
        t = time.perf_counter()
        work.encode_identities(chunk, srcs, codes, id_info)
        timings["identities_encode"] += time.perf_counter() - t
    return codes, id_info


def _mix_poses(work: PairWriter, aligner: Aligner, poses: Path, todo: list[tuple[str, str]], codes: dict[str, Any],
               id_info: dict[str, dict[str, Any]], keep_photo: bool, prep: ThreadPoolExecutor,
               timings: Counter) -> None:
    """Poses in chunks of ``POSE_CHUNK``, each prepared in the background while the previous one is mixed."""
    pose_order = list(dict.fromkeys(p for p, _ in todo))
    by_pose: dict[str, list[str]] = {}
    for p, ident in todo:
        by_pose.setdefault(p, []).append(ident)
    chunks = [pose_order[k : k + POSE_CHUNK] for k in range(0, len(pose_order), POSE_CHUNK)]
    step = work.bar.stage(aligner.stage("pose"), len(pose_order), "photos") if chunks else None
    nxt = prep.submit(aligner.run, poses, chunks[0], keep_photo, step=step) if chunks else None
    for c in range(len(chunks)):
        t = time.perf_counter()
        if not nxt.done():  # type: ignore[union-attr]  # waiting for the poses: show their count
            work.bar.stage(aligner.stage("pose"))
        srcs = nxt.result()  # type: ignore[union-attr]
        timings["poses_wait"] += time.perf_counter() - t
        nxt = prep.submit(aligner.run, poses, chunks[c + 1], keep_photo, step=step) if c + 1 < len(chunks) else None
        work.bar.stage("mixing pairs")
        t = time.perf_counter()
        work.mix_chunk(srcs, by_pose, codes, id_info)
        timings["mix"] += time.perf_counter() - t
