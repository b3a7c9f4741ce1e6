"""``g2g mix POSES IDS -o OUT``: every planned (pose, identity) pair through a mixer (g2g.mixers).

Cost. Each identity is aligned and encoded once and each pose once, whatever
N x M is (a funit model: E_B's K-shot code and E_A's content map; the appearance
model and the pastes: 68 landmarks and the face mask); per pair runs only what
depends on both (the funit decoder; the appearance model's warp, E_B and decoder;
a paste), in batches of ``batch_size``. Identity encodings stay in memory;
pose encodings are kept for one chunk of poses at a time, so memory does not
grow with N.

Pipeline. While the session encodes and decodes one chunk of poses, a
background thread prepares the next (decode in ``workers`` threads, MTCNN in
batches, alignment in threads). Paste-back and writing run in a writer pool;
a manifest line is appended after its output is on disk.

Resume. Outputs are written atomically and a pair is done when its last
manifest line is ``ok`` for the same model and settings and its output and
mixed crop are still the files written (size and sha256 in the manifest), so a
killed run loses only the pairs in flight and a damaged output is redone. Skipped pairs are
retried on a rerun (a fixed photo is picked up); ``g2g eval`` reads the last
line per pair.

Layout of OUT: the outputs (pasted photos, or crops with --aligned/--crop-only), ``aligned/poses``,
``aligned/ids`` and ``aligned/mixed`` (the crops), ``manifest.jsonl``, ``run.json`` and ``grid.jpg``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from g2g import __version__
from g2g.bundle import BundleError
from g2g.config import MIX_FACE_POLICIES, MIX_FORMATS, MixConfig
from g2g.detect import MTCNN_MIN_FACE
from g2g.errors import G2GError, check_options
from g2g.fsutil import (append_jsonl, atomic_save_image, atomic_write_json, claim_output, intact, read_jsonl,
                        repair_jsonl_tail, safe_join)
from g2g.images import SkipImage, scan_folder
from g2g.mixers import METHODS, IdentityFaces, Mixer, PoseFace, open_mixer
from g2g.pairing import Plan, PairingError, build_plan, group_identities, parse_shard, shard
from g2g.photos import FacePolicy, align_photo, detector_or_cpu, load_photo, output_stems, select_faces
from g2g.preprocess import resize_to_model
from g2g.progress import BatchProgress, summary_table
from g2g.runtime import DeviceError

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
GRID_FILE = "grid.jpg"
FORMATS, FACE_POLICIES = MIX_FORMATS, MIX_FACE_POLICIES
POSE_CHUNK = 64  # poses whose content maps are held at once (x2 with the chunk being prepared)
ID_CHUNK = 64  # identities aligned and encoded at once


class MixError(G2GError):
    """A problem with the whole run (bad folders, options, model): a one-line user error."""


@dataclass
class Source:
    """One photo after loading and alignment: a crop, or why there is none."""

    rel: str  # relative to its root (POSES or IDS)
    crop: np.ndarray | None = None  # (S, S, 3) uint8
    photo: np.ndarray | None = None  # (H, W, 3) uint8, kept for paste-back only
    affine: list | None = None  # 2x3 photo -> crop; None for --aligned input
    crop_rel: str | None = None  # where the crop is kept, relative to OUT
    reason: str | None = None
    message: str = ""


@dataclass
class MixReport:
    out: Path
    planned: int = 0  # pairs of this shard
    total_plan: int = 0  # pairs of the whole plan (all shards)
    shard: str = "1/1"
    resumed: int = 0  # already done by an earlier run
    written: int = 0  # outputs written by this run
    skipped: Counter = field(default_factory=Counter)  # reason -> pairs skipped by this run
    bad_sources: Counter = field(default_factory=Counter)  # (role, reason) -> source photos skipped
    poses_encoded: int = 0
    identities_encoded: int = 0
    providers: list[str] = field(default_factory=list)
    device: str = ""
    note: str = ""  # why CUDA was not used
    elapsed: float = 0.0
    grid: Path | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def any_skips(self) -> bool:
        """Anything skipped: a pair, or a source photo (even one an identity could do without)."""
        return bool(self.n_skipped or self.bad_sources)

    @property
    def pairs_per_s(self) -> float:
        return (self.written + self.n_skipped) / self.elapsed if self.elapsed > 0 else 0.0

    def table(self):
        t = summary_table(f"g2g mix -> {self.out}  (shard {self.shard})", ["", "pairs"])
        t.add_row("planned (this shard)", f"{self.planned} of {self.total_plan}")
        t.add_row("already done (resumed)", str(self.resumed))
        t.add_row("[green]written[/green]", str(self.written))
        for reason, n in sorted(self.skipped.items()):
            t.add_row(f"[yellow]skipped: {reason}[/yellow]", str(n))
        for (role, reason), n in sorted(self.bad_sources.items()):
            t.add_row(f"[yellow]{role} photos skipped: {reason}[/yellow]", f"{n} photo(s)")
        t.add_row("encoded once", f"{self.poses_encoded} poses, {self.identities_encoded} identities", end_section=True)
        t.add_row("speed", f"{self.pairs_per_s:.1f} pairs/s ({self.elapsed:.1f} s)")
        t.add_row("providers", ", ".join(self.providers) + (f" ({self.device})" if self.device else ""))
        if self.note:
            t.add_row("[yellow]note[/yellow]", self.note)
        return t


def settings_sha256(cfg: MixConfig, mixer: Mixer) -> str:
    """Hash of the settings that change an output's pixels (not pairing, sharding, batching or device)."""
    keys = ("crop_only", "aligned", "faces", "min_face", "min_score", "feather", "fmt", "max_pixels", "keep_mouth")
    rec = {k: getattr(cfg, k) for k in keys} | {"size": mixer.align.size, "zoom": mixer.align.zoom,
                                                 "method": mixer.name}
    if cfg.fixes is not None:  # absent from the hash when not given, so that earlier runs' outputs are still theirs
        rec["fixes"] = cfg.fixes
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()


def _check(cfg: MixConfig) -> None:
    FacePolicy.of(cfg, FACE_POLICIES, MixError)  # "all" is prepare-only
    check_options([
        (cfg.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}"),
        (cfg.size is None or 32 <= cfg.size <= 512, f"--size must be auto or between 32 and 512 px, got {cfg.size}"),
        (cfg.fmt in FORMATS, f"output format must be one of {', '.join(FORMATS)}, got {cfg.fmt!r}"),
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


def latest_records(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Last manifest line per (pose, identity): the state after any number of resumes."""
    return {(r.get("pose"), r.get("identity")): r for r in read_jsonl(Path(out) / MANIFEST)}


class _Writer:
    """Background pool for paste-back and writes; at most ``limit`` jobs in flight.

    A failing job (disk full, permissions) is not a per-file skip: its exception
    is raised in the main thread at the next ``submit``/``drain`` and stops the run.
    """

    def __init__(self, workers: int, manifest: Path, limit: int):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="g2g-write")
        self.jobs: deque[Future] = deque()
        self.limit = limit
        self.manifest = manifest
        self.lock = threading.Lock()

    def submit(self, fn: Callable, *args: Any) -> None:
        self.drain(self.limit)
        self.jobs.append(self.pool.submit(fn, *args))

    def drain(self, keep: int = 0) -> None:
        while len(self.jobs) > keep:
            self.jobs.popleft().result()
        while self.jobs and self.jobs[0].done():
            self.jobs.popleft().result()

    def append(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            for rec in records:  # one write per line: shards appending to one manifest never interleave mid-line
                append_jsonl(self.manifest, [rec])

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Aligner:
    """Photos -> aligned crops at the model's size (MTCNN + 5-point similarity), or -> resized crops (--aligned)."""

    def __init__(self, cfg: MixConfig, mixer: Mixer, pool: ThreadPoolExecutor):
        self.cfg, self.pool = cfg, pool
        self.size = mixer.align.size
        self.template = np.asarray(mixer.align.template())
        self.policy = FacePolicy.of(cfg, FACE_POLICIES)
        self.detector = None
        self.seconds: Counter = Counter()
        self.notes: list[str] = []

    def _detector(self):
        if self.detector is None:
            self.detector, note = detector_or_cpu(self.cfg.device, self.cfg.min_face)
            if note:
                self.notes.append(note)
        return self.detector

    def _load(self, path: Path) -> Any:
        min_side = 8 if self.cfg.aligned else max(MTCNN_MIN_FACE, self.cfg.min_face // 2)
        loaded = load_photo(path, self.cfg.max_pixels, min_side)
        return loaded if isinstance(loaded, SkipImage) else loaded.rgb

    def run(self, root: Path, rels: list[str], keep_photo: bool) -> list[Source]:
        """Load and align ``rels`` (relative to ``root``), in order."""
        t = time.perf_counter()
        loaded = list(self.pool.map(self._load, [root / r for r in rels]))
        self.seconds["load"] += time.perf_counter() - t
        out = [Source(r) for r in rels]
        ok = [i for i, im in enumerate(loaded) if not isinstance(im, SkipImage)]
        for i, im in enumerate(loaded):
            if isinstance(im, SkipImage):
                out[i].reason, out[i].message = im.reason, im.message
        if self.cfg.aligned:
            for i in ok:
                self._take_aligned(out[i], loaded[i])
            return out
        from g2g.detect import DetectorError

        t = time.perf_counter()
        faces: list[Any] = []
        step = self.cfg.batch_size  # photos per MTCNN batch
        for j in range(0, len(ok), step):
            faces += self._detector().detect_batch([loaded[i] for i in ok[j : j + step]])
        self.seconds["detect"] += time.perf_counter() - t
        t = time.perf_counter()
        jobs = []
        for i, found in zip(ok, faces):
            src = out[i]
            if isinstance(found, DetectorError):
                src.reason, src.message = "detector-error", str(found)
                continue
            chosen, reason, message = select_faces(found or [], self.policy)
            if reason is not None:
                src.reason, src.message = reason, message or ""
                continue
            jobs.append(self.pool.submit(self._align, src, loaded[i], chosen[0].landmarks, keep_photo))
        for j in jobs:
            j.result()
        self.seconds["align"] += time.perf_counter() - t
        return out

    def _align(self, src: Source, rgb: np.ndarray, landmarks: np.ndarray, keep_photo: bool) -> None:
        try:
            src.crop, M = align_photo(rgb, landmarks, self.template, self.size)
        except ValueError as e:
            src.reason, src.message = "no-face", f"degenerate landmarks ({e})"
            return
        src.affine = M.tolist()
        src.photo = rgb if keep_photo else None

    def _take_aligned(self, src: Source, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if abs(h - w) > 1:
            src.reason, src.message = "not-aligned", f"{w}x{h} is not square: --aligned expects aligned crops (g2g prepare output)"
            return
        src.crop = resize_to_model(rgb, self.size)


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
    poses, ids, out = Path(poses).resolve(), Path(ids).resolve(), Path(out).resolve()
    for name, d in (("POSES", poses), ("IDS", ids)):
        if not d.is_dir():
            raise MixError(f"{name} {d} is not a folder")
        if out == d:
            raise MixError(f"-o OUT must differ from {name}")
    scans = {name: scan_folder(d, exclude=out) for name, d in (("POSES", poses), ("IDS", ids))}
    pose_files = [p.relative_to(poses).as_posix() for p in scans["POSES"][0]]
    id_files = [p.relative_to(ids).as_posix() for p in scans["IDS"][0]]
    unused_notes = [f"{name}: {len(others)} file(s) without an image extension and {len(unused)} hidden or repeated "
                    "entr(ies) not used" for name, (_, others, unused) in scans.items() if others or unused]
    if not pose_files:
        raise MixError(f"no images found under POSES {poses}")
    if not id_files:
        raise MixError(f"no images found under IDS {ids}")
    size, size_note = crop_side(cfg, poses, pose_files, model_dir)
    try:
        mixer = open_mixer(cfg.method, model_dir, device=cfg.device, batch_size=cfg.batch_size, size=size,
                           keep_mouth=cfg.keep_mouth, fixes=cfg.fixes)
    except DeviceError as e:
        raise MixError(str(e)) from None
    plan = build_plan(pose_files, group_identities(id_files), cfg.pairs, cfg.per_pose, cfg.seed)
    i, n = parse_shard(cfg.shard)
    pairs = shard(plan.pairs, i, n)

    report = MixReport(out=out, planned=len(pairs), total_plan=len(plan.pairs), shard=f"{i}/{n}",
                       providers=mixer.providers, device=mixer.device, note=mixer.note,
                       notes=list(plan.notes) + unused_notes + ([size_note] if size_note else []))
    crop_mode = cfg.crop_only or cfg.aligned
    if cfg.aligned and not cfg.crop_only:
        report.notes.append("--aligned: poses are crops, so outputs are mixed crops (nothing to paste back into)")
    model_sha, set_sha = mixer.sha256, settings_sha256(cfg, mixer)
    claim_output(out, "mix")
    atomic_write_json(out / RUN_FILE, {
        "poses_root": str(poses), "ids_root": str(ids),
        "method": mixer.name, "model_dir": str(mixer.root.resolve()) if mixer.root else None,
        "model_sha256": model_sha, "settings_sha256": set_sha,
        "mix": asdict(cfg), "align": {"size": mixer.align.size, "zoom": mixer.align.zoom,
                                      "template": [list(p) for p in mixer.align.template()]},
        "providers": mixer.providers, "device": mixer.device, "note": mixer.note,
        "plan": {"mode": plan.mode, "pairs": len(plan.pairs), "shard": f"{i}/{n}", "shard_pairs": len(pairs)},
        "version": __version__,
    })
    manifest = out / MANIFEST
    repair_jsonl_tail(manifest)
    last = latest_records(out)

    def done(pr: tuple[str, str]) -> bool:
        """Written by the same model and settings, and the output and mixed crop still whole on disk."""
        r = last.get(pr)
        return bool(r and r.get("status") == "ok" and r.get("model_sha256") == model_sha
                    and r.get("settings_sha256") == set_sha and r.get("output")
                    and intact(out / r["output"], r.get("output_digest"))
                    and (r.get("mixed_crop") in (None, r["output"])  # --aligned/--crop-only: one file, hashed once
                         or intact(out / r["mixed_crop"], r.get("mixed_crop_digest"))))

    todo = [pr for pr in pairs if not done(pr)]
    report.resumed = len(pairs) - len(todo)

    bar = BatchProgress("mix", "pairs", len(pairs), report.resumed, progress)
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="g2g-load")
    prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="g2g-prep")
    writer = _Writer(max(1, min(cfg.workers, 4)), manifest, limit=4 * cfg.batch_size)
    aligner = _Aligner(cfg, mixer, pool)
    timings: Counter = Counter()
    ctx = _Ctx(cfg, mixer, plan, out, writer, bar, report, model_sha, set_sha, crop_mode,
               output_stems(pose_files), output_stems(id_files))
    try:
        # identities: aligned and encoded once each, codes kept in memory
        needed = list(dict.fromkeys(ident for _, ident in todo))
        codes: dict[str, IdentityFaces] = {}
        id_info: dict[str, dict[str, Any]] = {}
        for k in range(0, len(needed), ID_CHUNK):
            t = time.perf_counter()
            chunk = needed[k : k + ID_CHUNK]
            srcs = aligner.run(ids, [s for name in chunk for s in plan.identities[name]], keep_photo=False)
            timings["identities_align"] += time.perf_counter() - t
            t = time.perf_counter()
            ctx.encode_identities(chunk, srcs, codes, id_info)
            timings["identities_encode"] += time.perf_counter() - t

        # poses: chunks prepared in the background while the session works on the previous one
        pose_order = list(dict.fromkeys(p for p, _ in todo))
        by_pose: dict[str, list[str]] = {}
        for p, ident in todo:
            by_pose.setdefault(p, []).append(ident)
        chunks = [pose_order[k : k + POSE_CHUNK] for k in range(0, len(pose_order), POSE_CHUNK)]
        nxt = prep.submit(aligner.run, poses, chunks[0], not crop_mode) if chunks else None
        for c in range(len(chunks)):
            t = time.perf_counter()
            srcs = nxt.result()  # type: ignore[union-attr]
            timings["poses_wait"] += time.perf_counter() - t
            nxt = prep.submit(aligner.run, poses, chunks[c + 1], not crop_mode) if c + 1 < len(chunks) else None
            t = time.perf_counter()
            ctx.mix_chunk(srcs, by_pose, codes, id_info)
            timings["mix"] += time.perf_counter() - t
        t = time.perf_counter()
        writer.drain(0)
        timings["write_wait"] += time.perf_counter() - t
    finally:
        prep.shutdown(wait=True, cancel_futures=True)
        writer.close()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

    if cfg.grid:
        report.grid = write_grid(out, pairs, cfg.grid_max, mixer.align.size)
    report.elapsed = time.perf_counter() - t_start
    report.timings = {**dict(timings), **{f"aligner_{k}": v for k, v in aligner.seconds.items()}}
    report.notes += aligner.notes
    return report


@dataclass
class _Ctx:
    """What the encoding and decoding steps share (keeps mix_folders readable)."""

    cfg: MixConfig
    mixer: Mixer
    plan: Plan
    out: Path
    writer: _Writer
    bar: BatchProgress
    report: MixReport
    model_sha: str
    set_sha: str
    crop_mode: bool
    pose_stems: dict[str, str]  # pose -> its path without suffix (unique)
    id_stems: dict[str, str]  # identity source -> its path without suffix (unique)

    def record(self, pose: str, ident: str, id_info: dict[str, Any], **kw: Any) -> dict[str, Any]:
        info = id_info.get(ident, {})
        rec = {
            "status": "skipped", "reason": None, "message": "", "pose": pose, "identity": ident,
            "identity_sources": info.get("sources", list(self.plan.identities.get(ident, []))),
            "output": None, "mixed_crop": None, "output_digest": None, "mixed_crop_digest": None,
            "pose_crop": None, "identity_crops": info.get("crops", []),
            "affine": None, "model_sha256": self.model_sha, "settings_sha256": self.set_sha,
        }
        if info.get("skipped_sources"):
            rec["identity_skipped_sources"] = info["skipped_sources"]
        rec.update(kw)
        return rec

    def save_crop(self, rel: str, crop: np.ndarray) -> None:
        from PIL import Image

        atomic_save_image(safe_join(self.out, rel), Image.fromarray(crop))

    def encode_identities(self, names: list[str], srcs: list[Source], codes: dict[str, IdentityFaces],
                          id_info: dict[str, dict[str, Any]]) -> None:
        """One encoding per identity with at least one usable photo (all its K crops)."""
        it = iter(srcs)
        group: list[tuple[str, np.ndarray]] = []
        for name in names:
            mine = [next(it) for _ in self.plan.identities[name]]
            good = [s for s in mine if s.crop is not None]
            bad = [s for s in mine if s.crop is None]
            for s in bad:
                self.report.bad_sources[("identity", s.reason)] += 1
            info: dict[str, Any] = {"skipped_sources": [{"source": s.rel, "reason": s.reason, "message": s.message}
                                                        for s in bad]}
            if not good:
                reasons = Counter(s.reason for s in bad)
                info["reason"] = bad[0].reason if len(reasons) == 1 else "no-usable-photo"
                info["message"] = f"identity {name}: no usable photo (" + ", ".join(
                    f"{r} x{c}" for r, c in reasons.items()) + f"); first: {bad[0].rel}: {bad[0].message}"
                info["sources"] = [s.rel for s in mine]
            else:
                info["sources"] = [s.rel for s in good]
                info["crops"] = []
                for s in good:
                    rel = f"aligned/ids/{name}/{Path(self.id_stems[s.rel]).name}.png"
                    info["crops"].append(rel)
                    self.writer.submit(self.save_crop, rel, s.crop)
                group.append((name, np.stack([s.crop for s in good])))  # type: ignore[misc]
            id_info[name] = info
        for (name, _), enc in zip(group, self.mixer.encode_identities([g for _, g in group])):
            codes[name] = enc
        self.report.identities_encoded += len(group)

    def mix_chunk(self, srcs: list[Source], by_pose: dict[str, list[str]], codes: dict[str, IdentityFaces],
                  id_info: dict[str, dict[str, Any]]) -> None:
        """Encode a chunk of poses once, decode all their pairs in batches, hand results to the writer."""
        skipped: list[dict[str, Any]] = []
        good = []
        for s in srcs:
            if s.crop is None:
                self.report.bad_sources[("pose", s.reason)] += 1
                for ident in by_pose[s.rel]:
                    skipped.append(self.record(s.rel, ident, id_info, reason=s.reason, message=f"pose {s.rel}: {s.message}"))
                continue
            s.crop_rel = f"aligned/poses/{self.pose_stems[s.rel]}.png"
            self.writer.submit(self.save_crop, s.crop_rel, s.crop)
            good.append(s)
        faces: list[PoseFace] = self.mixer.encode_poses(np.stack([s.crop for s in good])) if good else []
        self.report.poses_encoded += len(good)
        jobs: list[tuple[int, str]] = []  # (index into good, identity)
        for gi, s in enumerate(good):
            for ident in by_pose[s.rel]:
                if ident in codes:
                    jobs.append((gi, ident))
                else:
                    info = id_info[ident]
                    skipped.append(self.record(s.rel, ident, id_info, reason=info["reason"], message=info["message"],
                                               pose_crop=s.crop_rel, affine=s.affine))
        if skipped:
            self.writer.append(skipped)
            self.report.skipped.update(r["reason"] for r in skipped)
            self.bar.advance(skipped=len(skipped))
        B = self.cfg.batch_size
        for b in range(0, len(jobs), B):
            batch = jobs[b : b + B]
            images, masks = self.mixer.mix([faces[gi] for gi, _ in batch], [codes[ident] for _, ident in batch])
            for j, ((gi, ident), img) in enumerate(zip(batch, images)):  # images: (B, S, S, 3) uint8
                mask = None if masks is None else masks[j]
                self.writer.submit(self.write_pair, good[gi], ident, img, id_info, mask)

    def write_pair(self, src: Source, ident: str, crop: np.ndarray, id_info: dict[str, Any],
                   mask: np.ndarray | None = None) -> None:
        """Paste back (or not), write atomically, then append the manifest line."""
        from PIL import Image

        from g2g.paste import paste_back

        rel = Path(self.pose_stems[src.rel])  # pose path without suffix
        name = f"{rel.name}__{ident}"
        out_rel = (rel.parent / f"{name}.{self.cfg.fmt}").as_posix()
        if self.crop_mode:
            mixed_rel = out_rel
            out_digest = mixed_digest = atomic_save_image(safe_join(self.out, out_rel), Image.fromarray(crop))
        else:
            mixed_rel = f"aligned/mixed/{(rel.parent / name).as_posix()}.png"
            mixed_digest = atomic_save_image(safe_join(self.out, mixed_rel), Image.fromarray(crop))
            pasted = paste_back(src.photo, crop, np.asarray(src.affine), self.cfg.feather, mask)  # type: ignore[arg-type]
            out_digest = atomic_save_image(safe_join(self.out, out_rel), Image.fromarray(pasted))
        self.writer.append([self.record(src.rel, ident, id_info, status="ok", output=out_rel, mixed_crop=mixed_rel,
                                        output_digest=out_digest, mixed_crop_digest=mixed_digest,
                                        pose_crop=src.crop_rel, affine=src.affine)])
        with self.writer.lock:
            self.report.written += 1
        self.bar.advance(ok=1)


def write_grid(out: Path, pairs: list[tuple[str, str]], limit: int, size: int) -> Path | None:
    """OUT/grid.jpg: poses as rows, identities as columns (first ``limit`` of each), from the files on disk.

    The first column is the aligned pose, the first row an aligned photo of each
    identity; a skipped pair is a grey crossed cell, a pair not in the plan a blank one.
    """
    from PIL import Image

    from g2g.sheets import contact_sheet

    recs = latest_records(out)
    pose_rows = list(dict.fromkeys(p for p, _ in pairs))[:limit]
    id_cols = list(dict.fromkeys(i for _, i in pairs))[:limit]
    if not pose_rows:
        return None
    planned = set(pairs)
    blank = np.full((size, size, 3), 255, np.uint8)

    def read(rel: str | None) -> np.ndarray | None:
        if not rel or not (out / rel).is_file():
            return None
        with Image.open(out / rel) as im:
            return np.asarray(im.convert("RGB"))

    first_pose: dict[str, str] = {}
    first_id: dict[str, str] = {}
    for (p, i), r in recs.items():  # one pass: an aligned crop of each shown pose and identity
        if r.get("pose_crop"):
            first_pose.setdefault(p, r["pose_crop"])
        if r.get("identity_crops"):
            first_id.setdefault(i, r["identity_crops"][0])
    rows: list[list[np.ndarray | None]] = [[blank] + [read(first_id.get(i)) for i in id_cols]]
    for p in pose_rows:
        pose_crop = read(first_pose.get(p))
        row: list[np.ndarray | None] = [pose_crop]
        for i in id_cols:
            r = recs.get((p, i))
            if (p, i) not in planned:
                row.append(blank)
            elif r and r.get("status") == "ok":
                row.append(read(r.get("mixed_crop") or r.get("output")))
            else:
                row.append(None)
        rows.append(row)
    sheet = contact_sheet(rows, ["identity"] + pose_rows, ["pose"] + id_cols, cell=128)  # small models upscaled
    path = safe_join(out, GRID_FILE)
    atomic_save_image(path, sheet)
    return path


__all__ = ["MixError", "MixReport", "mix_folders", "write_grid", "latest_records", "settings_sha256",
           "BundleError", "PairingError"]
