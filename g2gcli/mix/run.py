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
from g2g.config import MIX_FACE_POLICIES, MIX_FORMATS, MixConfig
from g2g.errors import G2GError, check_options
from g2g.io.files import atomic_write_json
from g2g.io.images import scan_folder
from g2g.methods import METHODS, open_mixer
from g2g.methods.base import Mixer
from g2g.mix.grid import write_grid
from g2g.mix.pairs import PairWriter, Writer, pair_names
from g2g.mix.report import MixReport
from g2g.mix.resume import mix_manifest, pending, settings_sha256
from g2g.mix.sources import Aligner
from g2g.pairing import Plan, build_plan, group_identities, parse_shard, shard
from g2g.photos import FacePolicy, output_stems
from g2g.progress import BatchProgress
from g2g.io.runfolder import MANIFEST, Manifest, claim_output, run_lock, unread_note
from g2g.runtime import DeviceError

RUN_FILE = "run.json"
POSE_CHUNK = 64  # poses whose encodings are held at once (x2 with the chunk being prepared)
ID_CHUNK = 64  # identities aligned and encoded at once


class MixError(G2GError):
    """A problem with the whole run (bad folders, options, model): a one-line user error."""


def _check(cfg: MixConfig) -> None:
    FacePolicy.of(cfg, MIX_FACE_POLICIES, MixError)  # "all" is prepare-only
    check_options([
        (cfg.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}"),
        (cfg.size is None or 32 <= cfg.size <= 512, f"--size must be auto or between 32 and 512 px, got {cfg.size}"),
        (cfg.fmt in MIX_FORMATS, f"output format must be one of {', '.join(MIX_FORMATS)}, got {cfg.fmt!r}"),
        (cfg.batch_size >= 1 and cfg.workers >= 1, "--batch-size and workers must be at least 1"),
        (0 <= cfg.feather <= 0.5, f"feather must be in [0, 0.5] (a fraction of the crop), got {cfg.feather}"),
    ], MixError)


def crop_side(cfg: MixConfig, poses: Path, pose_files: list[str], model_dir: Path | None) -> tuple[int | None, str]:
    """(crop side for a paste method, a note): ``--size`` as given, or for ``--size auto`` the pose faces' own
    resolution (g2g.photos.auto_side), so that a pasted face is as sharp as the photo around it. A model uses
    its own size (None)."""
    if cfg.size is not None:
        return cfg.size, ""
    if cfg.method == "model" or (cfg.method == "auto" and model_dir is not None):
        return None, ""
    from g2g.config import AlignConfig
    from g2g.photos import auto_side, native_sides

    probe = AlignConfig(size=128)
    sides = native_sides(poses, pose_files, cfg, np.asarray(probe.template()), probe.size)
    if cfg.aligned and sides:  # crops as they are: their own side, not resampled
        side = int(min(512, max(32, round(float(np.median(sides))))))
        return side, f"--size auto: {side} px, the side of the aligned pose crops"
    side = auto_side(sides)
    return side, (f"--size auto: {side} px crops, from the resolution of {len(sides)} pose face(s) "
                  f"(median {np.median(sides):.0f} px; --size N fixes it)" if sides else
                  f"--size auto: {side} px crops (no pose face measured)")


@dataclass
class _Inputs:
    poses: Path
    ids: Path
    out: Path
    pose_files: list[str]
    id_files: list[str]
    notes: list[str]


def _inputs(poses: Path, ids: Path, out: Path) -> _Inputs:
    """The two input folders' image files (relative paths), refusing what cannot be a run."""
    poses, ids, out = Path(poses).resolve(), Path(ids).resolve(), Path(out).resolve()
    for name, d in (("POSES", poses), ("IDS", ids)):
        if not d.is_dir():
            raise MixError(f"{name} {d} is not a folder")
        if out == d:
            raise MixError(f"-o OUT must differ from {name}")
    scans = {name: scan_folder(d, exclude=out) for name, d in (("POSES", poses), ("IDS", ids))}
    pose_files = [p.relative_to(poses).as_posix() for p in scans["POSES"][0]]
    id_files = [p.relative_to(ids).as_posix() for p in scans["IDS"][0]]
    notes = [f"{name}: {len(others)} file(s) without an image extension and {len(unused)} hidden or repeated "
             "entr(ies) not used" for name, (_, others, unused) in scans.items() if others or unused]
    if not pose_files:
        raise MixError(f"no images found under POSES {poses}")
    if not id_files:
        raise MixError(f"no images found under IDS {ids}")
    return _Inputs(poses, ids, out, pose_files, id_files, notes)


def _write_run_file(inp: _Inputs, cfg: MixConfig, mixer: Mixer, plan: Plan, shard_of: str, n_pairs: int,
                    model_sha: str, set_sha: str) -> None:
    atomic_write_json(inp.out / RUN_FILE, {
        "poses_root": str(inp.poses), "ids_root": str(inp.ids),
        "method": mixer.name, "model_dir": str(mixer.root.resolve()) if mixer.root else None,
        "model_sha256": model_sha, "settings_sha256": set_sha,
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
    _check(cfg)
    inp = _inputs(poses, ids, out)
    size, size_note = crop_side(cfg, inp.poses, inp.pose_files, model_dir)
    try:
        mixer = open_mixer(cfg.method, model_dir, device=cfg.device, batch_size=cfg.batch_size, size=size,
                           keep_mouth=cfg.keep_mouth, fixes=cfg.fixes)
    except DeviceError as e:
        raise MixError(str(e)) from None
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
        _write_run_file(inp, cfg, mixer, plan, f"{i}/{n}", len(pairs), model_sha, set_sha)
        manifest = mix_manifest(inp.out).repair()
        unread: Counter = Counter()
        todo = pending(manifest, pairs, model_sha, set_sha, unread)
        report.notes += [n for n in [unread_note(unread)] if n]
        report.resumed = len(pairs) - len(todo)
        bar = BatchProgress("mix", "pairs", len(pairs), report.resumed, progress)
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


def _run_pipeline(inp: _Inputs, cfg: MixConfig, mixer: Mixer, plan: Plan, manifest: Manifest,
                  todo: list[tuple[str, str]], report: MixReport, bar: BatchProgress, model_sha: str,
                  set_sha: str) -> None:
    """Identities first (each aligned and encoded once, kept in memory), then the poses chunk by chunk."""
    crop_mode = cfg.crop_only or cfg.aligned
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="g2g-load")
    prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="g2g-prep")
    writer = Writer(max(1, min(cfg.workers, 4)), manifest, limit=4 * cfg.batch_size)
    aligner = Aligner(cfg, mixer, pool)
    timings: Counter = Counter()
    pose_stems = output_stems(inp.pose_files)
    work = PairWriter(cfg, mixer, plan, inp.out, writer, bar, report, model_sha, set_sha, crop_mode,
                      pose_stems, output_stems(inp.id_files), pair_names(plan.pairs, pose_stems))
    try:
        codes, id_info = _encode_identities(work, aligner, inp.ids, todo, timings)
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


def _encode_identities(work: PairWriter, aligner: Aligner, ids: Path, todo: list[tuple[str, str]],
                       timings: Counter) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Each needed identity aligned and encoded once, ``ID_CHUNK`` at a time -> (encodings, what each one used)."""
    needed = list(dict.fromkeys(ident for _, ident in todo))
    codes: dict[str, Any] = {}
    id_info: dict[str, dict[str, Any]] = {}
    for k in range(0, len(needed), ID_CHUNK):
        t = time.perf_counter()
        chunk = needed[k : k + ID_CHUNK]
        srcs = aligner.run(ids, [s for name in chunk for s in work.plan.identities[name]], keep_photo=False)
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
    nxt = prep.submit(aligner.run, poses, chunks[0], keep_photo) if chunks else None
    for c in range(len(chunks)):
        t = time.perf_counter()
        srcs = nxt.result()  # type: ignore[union-attr]
        timings["poses_wait"] += time.perf_counter() - t
        nxt = prep.submit(aligner.run, poses, chunks[c + 1], keep_photo) if c + 1 < len(chunks) else None
        t = time.perf_counter()
        work.mix_chunk(srcs, by_pose, codes, id_info)
        timings["mix"] += time.perf_counter() - t
