"""``g2g prepare``: a folder of raw photos -> aligned face crops + a manifest.

Layout. ``SRC/<identity>/<photo>`` keeps its identity folders in DATA
(``DATA/<identity>/<stem>.png``; deeper folders are kept too, the identity is
the first folder). A photo directly in SRC (a flat folder) is its own identity,
named by its file stem, and is written flat (``DATA/<stem>.png``). With
``--faces all`` face k of a photo is ``<stem>_<k>.png`` (k by decreasing box area).
Two photos differing only in extension get ``<stem>_<ext>.png``.

``DATA/manifest.jsonl`` has one line per source photo (one per written face with
``--faces all``) with the keys of :data:`MANIFEST_KEYS`: where the face was, its
landmarks in the photo and in the crop, the source->crop affine (invert it to
paste back), or the reason it was skipped. Files without an image extension
are recorded as ``not-an-image``.

Resume. Lines are appended as photos finish and crops are written atomically,
so a killed run loses at most the batch in flight; a rerun skips every source
whose latest line is final: a skip for a reason about the photo, or crops still
on disk exactly as written (size and sha256 in ``output_digest``). Write errors
are retried; a full or read-only disk stops the run with one line. Options that change the output (size, zoom, faces,
min_face, min_score, fmt, max_pixels) must match ``DATA/prepare_config.json``.

Pipeline. Decoding runs in a thread pool (``workers``) a few batches ahead of
detection; MTCNN runs on ``batch_size`` photos at a time (see ``g2g.detect``);
alignment and writing follow in the main thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from g2g import __version__
from g2g.config import FACE_POLICIES, PREPARE_FORMATS, PrepareConfig
from g2g.errors import G2GError, check_options
from g2g.fsutil import (DISK_ERRNOS, append_jsonl, atomic_save_image, atomic_write_json, claim_output, intact,
                        read_jsonl, repair_jsonl_tail, safe_join)
from g2g.images import REASONS, LoadedImage, SkipImage, scan_folder
from g2g.photos import FacePolicy, align_photo, identity_of, load_photo, open_detector, output_stems, select_faces
from g2g.progress import BatchProgress, summary_table

MANIFEST = "manifest.jsonl"
CONFIG_FILE = "prepare_config.json"
FORMATS = PREPARE_FORMATS
# Options whose change would mix two kinds of crops in one DATA folder.
OUTPUT_KEYS = ("size", "zoom", "faces", "min_face", "min_score", "fmt", "max_pixels")
# Every manifest line has exactly these keys (None where not applicable).
MANIFEST_KEYS = {
    "source": str,  # path relative to SRC (posix)
    "identity": str,  # first folder under SRC, or the file stem for a photo directly in SRC
    "status": str,  # ok | skipped
    "reason": (str, type(None)),  # skip reason code (g2g.images.REASONS), None when ok
    "message": (str, type(None)),  # human-readable detail of the skip
    "face_index": (int, type(None)),  # rank of this face among accepted faces (by box area), 0 = largest
    "n_faces": (int, type(None)),  # faces MTCNN found (any score/size)
    "n_accepted": (int, type(None)),  # faces passing min_score and min_face
    "box": (list, type(None)),  # [x1, y1, x2, y2] in the photo, px
    "landmarks": (list, type(None)),  # 5 x [x, y] in the photo: eyes, nose, mouth corners
    "crop_landmarks": (list, type(None)),  # the same 5 points in the crop
    "crop_landmarks68": (list, type(None)),  # 68 x [x, y] in the crop (dlib's shape predictor, g2g.landmarks)
    "score": (float, type(None)),  # MTCNN probability (best face's for a face-stage skip)
    "affine": (list, type(None)),  # 2 x 3, photo -> crop pixels; invert to paste back
    "outside": (float, type(None)),  # fraction of the crop outside the photo (mirrored fill)
    "image_size": (list, type(None)),  # [width, height] after EXIF rotation
    "conversions": list,  # e.g. ["exif-rotated (orientation 6)", "converted from CMYK"]
    "output": (str, type(None)),  # crop path relative to DATA
    "output_digest": (dict, type(None)),  # {"bytes", "sha256"} of the crop as written: a resume redoes a damaged one
    "size": int,  # crop side, px
    "zoom": float,  # template zoom (g2g.config.AlignConfig)
}


class PrepareError(G2GError):
    """A problem with the whole run (bad SRC, config mismatch): a one-line user error."""


@dataclass
class PrepareReport:
    out: Path
    n_sources: int = 0  # source files seen in SRC (images and others)
    n_resumed: int = 0  # already in the manifest, not redone
    n_redone: int = 0  # in the manifest, but redone: a write error last time, or a crop since damaged or deleted
    n_processed: int = 0  # handled by this run
    n_ok: int = 0  # photos of this run with at least one crop written
    n_crops: int = 0  # crops written by this run
    skipped: Counter = field(default_factory=Counter)  # reason -> photos, this run
    total_ok: int = 0  # photos ok in the whole manifest (all runs)
    total_skipped: Counter = field(default_factory=Counter)  # reason -> photos, whole manifest
    elapsed: float = 0.0  # s, this run
    timings: dict[str, float] = field(default_factory=dict)  # s: decode (thread time), wait, detect, align_write
    device: str = ""
    preview: Path | None = None  # DATA/preview.jpg: crops per identity and the skipped photos by reason

    @property
    def images_per_s(self) -> float:
        return self.n_processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def total(self) -> int:
        return self.total_ok + sum(self.total_skipped.values())

    @property
    def aligned_fraction(self) -> float:
        """Share of all source files in the manifest that gave a crop."""
        return self.total_ok / self.total if self.total else 0.0

    def table(self):
        """A rich table: ok and each skip reason, this run and the whole DATA folder."""
        t = summary_table(f"g2g prepare -> {self.out}", ["status", "this run", "in DATA"])
        t.add_row("[green]ok[/green]", str(self.n_ok), str(self.total_ok))
        for reason in sorted(set(self.total_skipped) | set(self.skipped)):
            t.add_row(f"[yellow]skipped: {reason}[/yellow]", str(self.skipped[reason]), str(self.total_skipped[reason]))
        if self.n_redone:
            t.add_row("redone (a write error, or a crop since damaged or deleted)", str(self.n_redone), "")
        t.add_row("resumed (already done)", str(self.n_resumed), "", end_section=True)
        t.add_row("aligned", "", f"{100 * self.aligned_fraction:.1f}%")
        if self.n_processed:
            t.add_row("speed", f"{self.images_per_s:.1f} img/s", f"{self.elapsed:.0f} s on {self.device or '-'}")
        else:
            t.add_row("speed", "nothing left to do", f"{self.elapsed:.1f} s")
        return t


def _check_config(cfg: PrepareConfig) -> FacePolicy:
    """Refuse option values no run can use (usage errors); the run's face policy."""
    check_options([
        (64 <= cfg.size <= 256, f"--size must be between 64 and 256, got {cfg.size}"),
        (cfg.fmt in FORMATS, f"--format must be one of {', '.join(FORMATS)}, got {cfg.fmt!r}"),
        (0 < cfg.zoom <= 4, f"zoom must be in (0, 4], got {cfg.zoom}"),
        (cfg.batch_size >= 1 and cfg.workers >= 1, "--batch-size and workers must be at least 1"),
    ], PrepareError)
    return FacePolicy.of(cfg, FACE_POLICIES, PrepareError)


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


RETRIED = ("write-error", "detector-error")  # verdicts on the run, not on the photo: a rerun tries again


def current_records(recs: Iterator[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Source -> the lines of its latest attempt (a redone photo's new lines replace its old ones)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        src = r.get("source")
        if r.get("face_index") in (None, 0) or src not in out:  # a new attempt starts with face 0 or a skip line
            out[src] = [r]
        else:
            out[src].append(r)
    return out


def _final(recs: list[dict[str, Any]], out: Path) -> bool:
    """Is this source done: skipped for a reason about the photo, or every crop still on disk, whole."""
    if recs[0].get("status") != "ok":
        return recs[0].get("reason") not in RETRIED
    return all(r.get("output") and intact(out / r["output"], r.get("output_digest")) for r in recs)


def _record(rel: Path, cfg: PrepareConfig, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {k: None for k in MANIFEST_KEYS}
    rec.update(source=rel.as_posix(), identity=identity_of(rel), conversions=[], size=cfg.size, zoom=float(cfg.zoom))
    rec.update(kw)
    return rec


def _r(a: np.ndarray | list | tuple, nd: int = 2) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


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


def prepare_folder(
    src: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(), progress: bool = True, detector=None
) -> PrepareReport:
    """Detect, align and write every face photo under ``src`` into ``out``; resumable.

    ``detector`` (a :class:`g2g.detect.FaceDetector`) may be passed to reuse one.
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
    images, others, unused = scan_folder(src, exclude=out)
    if not images:
        raise PrepareError(f"no images found under {src}" + (f" ({len(others)} non-image files)" if others else ""))
    claim_output(out, "prepare")
    _open_output(out, cfg)
    manifest = out / MANIFEST
    repair_jsonl_tail(manifest)
    current = current_records(read_jsonl(manifest))
    done = {src for src, recs in current.items() if _final(recs, out)}

    rels = {p: p.relative_to(src) for p in images + others}
    report = PrepareReport(out=out, n_sources=len(rels) + len(unused))
    report.n_resumed = sum(r.as_posix() in done for r in rels.values()) + sum(
        p.relative_to(src).as_posix() in done for p, _ in unused)
    report.n_redone = sum(r.as_posix() in current and r.as_posix() not in done for r in rels.values())
    stems = {Path(r): Path(s) for r, s in output_stems([rels[p].as_posix() for p in images]).items()}
    ext = "." + cfg.fmt
    acfg = cfg.align()
    template = np.asarray(acfg.template())

    # files without an image extension: recorded, never opened
    lines = [
        _record(rels[p], cfg, status="skipped", reason="not-an-image", message=f"extension {p.suffix or '(none)'!r} is not an image type")
        for p in others if rels[p].as_posix() not in done
    ]
    lines += [_record(p.relative_to(src), cfg, status="skipped", reason=reason, message=REASONS[reason])
              for p, reason in unused if p.relative_to(src).as_posix() not in done]
    append_jsonl(manifest, lines)
    report.skipped.update(r["reason"] for r in lines)
    report.n_processed += len(lines)
    todo = [p for p in images if rels[p].as_posix() not in done]

    timings = Counter({"decode": 0.0, "wait": 0.0, "detect": 0.0, "align_write": 0.0})
    lock = threading.Lock()

    def load(p: Path) -> LoadedImage | SkipImage:
        t = time.perf_counter()
        try:
            return load_photo(p, cfg.max_pixels, cfg.min_face)
        finally:
            with lock:
                timings["decode"] += time.perf_counter() - t

    if todo and detector is None:
        try:
            detector = open_detector(cfg.device, cfg.min_face)
        except ValueError as e:
            raise PrepareError(str(e)) from None
    report.device = getattr(detector, "device", "") or ""
    bar = BatchProgress("prepare", "images", len(todo), enabled=progress)  # after the detector is built: the rate counts photos only
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="g2g-decode")
    try:
        stream = _prefetch(pool, todo, ahead=2 * cfg.batch_size + cfg.workers, fn=load)
        while True:
            t = time.perf_counter()
            chunk = list(islice(stream, cfg.batch_size))
            timings["wait"] += time.perf_counter() - t
            if not chunk:
                break
            t = time.perf_counter()
            ok_idx = [i for i, (_, r) in enumerate(chunk) if isinstance(r, LoadedImage)]
            detections = detector.detect_batch([chunk[i][1].rgb for i in ok_idx]) if ok_idx else []
            faces_of = dict(zip(ok_idx, detections))
            timings["detect"] += time.perf_counter() - t

            t = time.perf_counter()
            lines, n_ok, n_skip = [], 0, 0
            for i, (p, loaded) in enumerate(chunk):
                recs = _process_one(rels[p], loaded, faces_of.get(i), cfg, policy, stems[rels[p]], ext, out, template)
                lines += recs
                if recs[0]["status"] == "ok":
                    n_ok += 1
                    report.n_crops += len(recs)
                else:
                    n_skip += 1
                    report.skipped[recs[0]["reason"]] += 1
            append_jsonl(manifest, lines)
            timings["align_write"] += time.perf_counter() - t
            report.n_ok += n_ok
            report.n_processed += len(chunk)
            bar.advance(n_ok, n_skip)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

    report.elapsed = time.perf_counter() - t_start
    report.timings = dict(timings)
    current = current_records(read_jsonl(manifest))
    seen = {src: recs[0] for src, recs in current.items()}  # one status per source
    report.preview = write_preview(src, out, current)
    report.total_ok = sum(r["status"] == "ok" for r in seen.values())
    report.total_skipped = Counter(r["reason"] for r in seen.values() if r["status"] != "ok")
    return report


def _process_one(
    rel: Path, loaded: LoadedImage | SkipImage, faces, cfg: PrepareConfig, policy: FacePolicy, stem: Path, ext: str,
    out: Path,
    template: np.ndarray,
) -> list[dict[str, Any]]:
    """Manifest lines of one source photo, writing its crops."""
    from PIL import Image

    from g2g.align import outside_fraction, transform_points
    from g2g.detect import DetectorError
    from g2g.landmarks import landmarks68

    if isinstance(loaded, SkipImage):
        return [_record(rel, cfg, status="skipped", reason=loaded.reason, message=loaded.message)]
    w, h = loaded.size
    base = dict(image_size=[w, h], conversions=loaded.conversions)
    if isinstance(faces, DetectorError):
        return [_record(rel, cfg, status="skipped", reason="detector-error", message=str(faces), **base)]
    faces = faces or []
    chosen, reason, message = select_faces(faces, policy)
    base["n_faces"] = len(faces)
    base["n_accepted"] = sum(f.score >= cfg.min_score and f.side >= cfg.min_face for f in faces)
    if reason is not None:
        best = max(faces, key=lambda f: f.score, default=None)
        extra = {} if best is None else dict(box=_r(best.box), landmarks=_r(best.landmarks), score=float(best.score))
        return [_record(rel, cfg, status="skipped", reason=reason, message=message, **base, **extra)]

    recs = []
    for k, face in enumerate(chosen):
        name = stem.with_name(f"{stem.name}_{k}") if cfg.faces == "all" else stem
        out_rel = name.with_name(name.name + ext)  # not with_suffix: a stem may hold dots
        try:
            crop, M = align_photo(loaded.rgb, face.landmarks, template, cfg.size)  # (S, S, 3) uint8, photo -> crop
        except ValueError as e:
            return [_record(rel, cfg, status="skipped", reason="no-face", message=f"degenerate landmarks ({e})", **base)]
        try:
            written = atomic_save_image(safe_join(out, out_rel), Image.fromarray(crop))
        except OSError as e:
            if e.errno in DISK_ERRNOS:  # the disk, not the photo: stop here with one line; a rerun resumes
                raise
            return [_record(rel, cfg, status="skipped", reason="write-error", message=f"{type(e).__name__}: {e}", **base)]
        recs.append(_record(
            rel, cfg, status="ok", face_index=k, box=_r(face.box), landmarks=_r(face.landmarks),
            crop_landmarks=_r(transform_points(M, face.landmarks)),
            crop_landmarks68=_r(landmarks68(crop, cfg.zoom)[0], 1), score=float(face.score),
            affine=M.tolist(), outside=round(outside_fraction((h, w), M, cfg.size), 4),
            output=out_rel.as_posix(), output_digest=written, **base,
        ))
    return recs


PREVIEW_FILE = "preview.jpg"


def write_preview(src: Path, out: Path, current: dict[str, list[dict[str, Any]]], n: int = 6) -> Path | None:
    """DATA/preview.jpg: aligned crops of the first ``n`` identities (a row each), then a row per skip reason with
    the photos it hit (letterboxed to a square, so the sheet shows what the detector saw)."""
    from PIL import Image

    from g2g.sheets import contact_sheet

    by_id: dict[str, list[str]] = {}
    by_reason: dict[str, list[str]] = {}
    for source, recs in sorted(current.items()):
        if recs[0]["status"] == "ok":
            by_id.setdefault(str(recs[0]["identity"]), []).extend(r["output"] for r in recs)
        else:
            by_reason.setdefault(str(recs[0]["reason"]), []).append(source)
    rows, labels = [], []

    def read(path: Path, square: bool) -> np.ndarray | None:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if square:  # letterbox: the whole photo, grey bars
                    side = max(im.size)
                    canvas = Image.new("RGB", (side, side), (200, 200, 200))
                    canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
                    im = canvas.resize((128, 128), Image.Resampling.BILINEAR)
                return np.asarray(im)
        except Exception:  # an unreadable photo is what its row says: an empty cell
            return None

    for name, outs in list(by_id.items())[:n]:
        rows.append([read(out / o, False) for o in outs[:n]])
        labels.append(name)
    for reason, sources in sorted(by_reason.items()):
        rows.append([read(src / s, True) for s in sources[:n]])
        labels.append(f"skipped: {reason} ({len(sources)})")
    if not rows:
        return None
    path = out / PREVIEW_FILE
    atomic_save_image(path, contact_sheet(rows, labels, cell=128))
    return path


def read_manifest(data: str | Path, ok_only: bool = True) -> list[dict[str, Any]]:
    """The current manifest lines of a prepared DATA folder (only written crops by default): each source's latest."""
    recs = [r for lines in current_records(read_jsonl(Path(data) / MANIFEST)).values() for r in lines]
    return [r for r in recs if r.get("status") == "ok"] if ok_only else recs
