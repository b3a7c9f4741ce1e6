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
that already has a line (delete a photo's lines to have it redone). Options that change the output (size, zoom, faces,
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
from g2g.config import PrepareConfig
from g2g.fsutil import append_jsonl, atomic_save_image, atomic_write_json, read_jsonl, safe_join
from g2g.images import LoadedImage, SkipImage, load_rgb, scan_folder
from g2g.progress import BatchProgress

MANIFEST = "manifest.jsonl"
CONFIG_FILE = "prepare_config.json"
FACE_POLICIES = ("largest", "all", "skip-multiple")
FORMATS = ("png", "jpg")
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
    "size": int,  # crop side, px
    "zoom": float,  # template zoom (g2g.config.AlignConfig)
}


class PrepareError(ValueError):
    """A problem with the whole run (bad SRC, config mismatch): a one-line user error."""


@dataclass
class PrepareReport:
    out: Path
    n_sources: int = 0  # source files seen in SRC (images and others)
    n_resumed: int = 0  # already in the manifest, not redone
    n_processed: int = 0  # handled by this run
    n_ok: int = 0  # photos of this run with at least one crop written
    n_crops: int = 0  # crops written by this run
    skipped: Counter = field(default_factory=Counter)  # reason -> photos, this run
    total_ok: int = 0  # photos ok in the whole manifest (all runs)
    total_skipped: Counter = field(default_factory=Counter)  # reason -> photos, whole manifest
    elapsed: float = 0.0  # s, this run
    timings: dict[str, float] = field(default_factory=dict)  # s: decode (thread time), wait, detect, align_write
    device: str = ""

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
        from rich.table import Table

        t = Table(title=f"g2g prepare -> {self.out}", title_justify="left")
        t.add_column("status")
        t.add_column("this run", justify="right")
        t.add_column("in DATA", justify="right")
        t.add_row("[green]ok[/green]", str(self.n_ok), str(self.total_ok))
        for reason in sorted(set(self.total_skipped) | set(self.skipped)):
            t.add_row(f"[yellow]skipped: {reason}[/yellow]", str(self.skipped[reason]), str(self.total_skipped[reason]))
        t.add_row("resumed (already done)", str(self.n_resumed), "", end_section=True)
        t.add_row("aligned", "", f"{100 * self.aligned_fraction:.1f}%")
        t.add_row("speed", f"{self.images_per_s:.1f} img/s", f"{self.elapsed:.0f} s on {self.device or '-'}")
        return t


def _check_config(cfg: PrepareConfig) -> None:
    if not 64 <= cfg.size <= 256:
        raise PrepareError(f"--size must be between 64 and 256, got {cfg.size}")
    if cfg.faces not in FACE_POLICIES:
        raise PrepareError(f"--faces must be one of {', '.join(FACE_POLICIES)}, got {cfg.faces!r}")
    if cfg.fmt not in FORMATS:
        raise PrepareError(f"--format must be one of {', '.join(FORMATS)}, got {cfg.fmt!r}")
    if not 0 < cfg.zoom <= 4:
        raise PrepareError(f"zoom must be in (0, 4], got {cfg.zoom}")
    if not 0 <= cfg.min_score <= 1:
        raise PrepareError(f"--min-score must be in [0, 1], got {cfg.min_score}")
    if cfg.min_face < 12:
        raise PrepareError(f"--min-face must be at least 12 px (MTCNN's window), got {cfg.min_face}")
    if cfg.batch_size < 1 or cfg.workers < 1:
        raise PrepareError("--batch-size and workers must be at least 1")


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


def _drop_torn_line(manifest: Path) -> None:
    """Cut a line left half-written by a killed run, so the next append starts on a fresh line."""
    if not manifest.exists():
        return
    with open(manifest, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _identity(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _output_stems(rels: list[Path]) -> dict[Path, Path]:
    """Source rel path -> output rel path without suffix; same-stem clashes get ``_<ext>``."""
    stems = Counter(r.with_suffix("") for r in rels)
    return {r: r.with_suffix("") if stems[r.with_suffix("")] == 1 else r.with_name(f"{r.stem}_{r.suffix.lstrip('.').lower()}")
            for r in rels}


def _record(rel: Path, cfg: PrepareConfig, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {k: None for k in MANIFEST_KEYS}
    rec.update(source=rel.as_posix(), identity=_identity(rel), conversions=[], size=cfg.size, zoom=float(cfg.zoom))
    rec.update(kw)
    return rec


def _r(a: np.ndarray | list | tuple, nd: int = 2) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def select_faces(faces: list, cfg: PrepareConfig) -> tuple[list, str | None, str | None]:
    """Apply the --faces/--min-score/--min-face policy -> (accepted by area, reason, message).

    Accepted faces are sorted by decreasing box area; with ``largest`` only the
    first is kept. A rejection names the most specific reason.
    """
    if not faces:
        return [], "no-face", "MTCNN found no face"
    scored = [f for f in faces if f.score >= cfg.min_score]
    if not scored:
        best = max(f.score for f in faces)
        return [], "low-score", f"{len(faces)} face(s), best score {best:.3f} < min_score {cfg.min_score}"
    accepted = sorted((f for f in scored if f.side >= cfg.min_face), key=lambda f: -f.area)
    if not accepted:
        big = max(f.side for f in scored)
        return [], "face-too-small", f"largest confident face {big:.1f} px < min_face {cfg.min_face}"
    if cfg.faces == "skip-multiple" and len(accepted) > 1:
        return [], "multiple-faces", f"{len(accepted)} faces pass min_score and min_face"
    return (accepted[:1] if cfg.faces in ("largest", "skip-multiple") else accepted), None, None


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
    _check_config(cfg)
    src, out = Path(src).resolve(), Path(out).resolve()
    if not src.is_dir():
        raise PrepareError(f"SRC {src} is not a folder")
    if out == src:
        raise PrepareError("-o DATA must differ from SRC")
    images, others = scan_folder(src, exclude=out)
    if not images:
        raise PrepareError(f"no images found under {src}" + (f" ({len(others)} non-image files)" if others else ""))
    out.mkdir(parents=True, exist_ok=True)
    _open_output(out, cfg)
    manifest = out / MANIFEST
    _drop_torn_line(manifest)
    done = {rec.get("source") for rec in read_jsonl(manifest)}

    rels = {p: p.relative_to(src) for p in images + others}
    report = PrepareReport(out=out, n_sources=len(rels))
    report.n_resumed = sum(r.as_posix() in done for r in rels.values())
    stems = _output_stems([rels[p] for p in images])
    ext = "." + cfg.fmt
    acfg = cfg.align()
    template = np.asarray(acfg.template())

    # files without an image extension: recorded, never opened
    lines = [
        _record(rels[p], cfg, status="skipped", reason="not-an-image", message=f"extension {p.suffix or '(none)'!r} is not an image type")
        for p in others if rels[p].as_posix() not in done
    ]
    append_jsonl(manifest, lines)
    report.skipped.update(r["reason"] for r in lines)
    report.n_processed += len(lines)
    todo = [p for p in images if rels[p].as_posix() not in done]

    timings = Counter({"decode": 0.0, "wait": 0.0, "detect": 0.0, "align_write": 0.0})
    lock = threading.Lock()

    def load(p: Path) -> LoadedImage | SkipImage:
        t = time.perf_counter()
        try:
            return load_rgb(p, max_pixels=cfg.max_pixels, min_side=cfg.min_face)
        except SkipImage as e:
            return e
        except Exception as e:  # never let one file stop the batch
            return SkipImage("unreadable", f"{type(e).__name__}: {e}")
        finally:
            with lock:
                timings["decode"] += time.perf_counter() - t

    if todo and detector is None:
        from g2g.detect import FaceDetector

        # search faces down to half of min_face so smaller ones are reported as face-too-small, not no-face
        try:
            detector = FaceDetector(cfg.device, min_face=max(12, cfg.min_face // 2))
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
                recs = _process_one(rels[p], loaded, faces_of.get(i), cfg, stems[rels[p]], ext, out, template)
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
    seen: dict[str, dict] = {}
    for rec in read_jsonl(manifest):  # whole-folder totals, one status per source
        seen.setdefault(rec["source"], rec)
    report.total_ok = sum(r["status"] == "ok" for r in seen.values())
    report.total_skipped = Counter(r["reason"] for r in seen.values() if r["status"] != "ok")
    return report


def _process_one(
    rel: Path, loaded: LoadedImage | SkipImage, faces, cfg: PrepareConfig, stem: Path, ext: str, out: Path,
    template: np.ndarray,
) -> list[dict[str, Any]]:
    """Manifest lines of one source photo, writing its crops."""
    from PIL import Image

    from g2g.align import estimate_similarity, outside_fraction, transform_points, warp_face
    from g2g.detect import DetectorError
    from g2g.landmarks import landmarks68

    if isinstance(loaded, SkipImage):
        return [_record(rel, cfg, status="skipped", reason=loaded.reason, message=loaded.message)]
    w, h = loaded.size
    base = dict(image_size=[w, h], conversions=loaded.conversions)
    if isinstance(faces, DetectorError):
        return [_record(rel, cfg, status="skipped", reason="detector-error", message=str(faces), **base)]
    faces = faces or []
    chosen, reason, message = select_faces(faces, cfg)
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
            M = estimate_similarity(face.landmarks, template)  # (2, 3) photo -> crop
            crop = warp_face(loaded.rgb, M, cfg.size)  # (size, size, 3) uint8
            atomic_save_image(safe_join(out, out_rel), Image.fromarray(crop))
        except (OSError, ValueError) as e:
            return [_record(rel, cfg, status="skipped", reason="write-error", message=f"{type(e).__name__}: {e}", **base)]
        recs.append(_record(
            rel, cfg, status="ok", face_index=k, box=_r(face.box), landmarks=_r(face.landmarks),
            crop_landmarks=_r(transform_points(M, face.landmarks)),
            crop_landmarks68=_r(landmarks68(crop, cfg.zoom)[0], 1), score=float(face.score),
            affine=np.asarray(M, dtype=np.float64).tolist(), outside=round(outside_fraction((h, w), M, cfg.size), 4),
            output=out_rel.as_posix(), **base,
        ))
    return recs


def read_manifest(data: str | Path, ok_only: bool = True) -> list[dict[str, Any]]:
    """Manifest lines of a prepared DATA folder (only written crops by default), in file order."""
    recs = list(read_jsonl(Path(data) / MANIFEST))
    return [r for r in recs if r.get("status") == "ok"] if ok_only else recs


def main_summary(report: PrepareReport) -> str:
    """One line for logs."""
    return (
        f"{report.total_ok}/{report.total} aligned ({100 * report.aligned_fraction:.1f}%), "
        f"{report.n_processed} processed in {report.elapsed:.1f} s ({report.images_per_s:.1f} img/s)"
    )

