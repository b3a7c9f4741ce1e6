"""What ``g2g eval`` reads: a mix OUT folder (run.json, manifest.jsonl, aligned crops) and a MODEL folder's facts.

Skipped manifest lines, and ok lines whose crop file is gone, are set aside with
their reason: they are counted and reported, never evaluated.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from g2g.config import AlignConfig
from g2g.eval.report import EvalError
from g2g.io.files import UnsafePathError, safe_join
from g2g.faces.preprocess import DEFAULT_ZOOM


@dataclass
class MixRun:
    out: Path
    run: dict[str, Any]
    align: AlignConfig
    ok: list[dict[str, Any]]  # evaluated lines (status ok, mixed crop on disk)
    skipped: Counter  # reason -> lines not evaluated
    skipped_recs: list[dict[str, Any]]  # those lines (reason "eval:missing-crop" when an ok line's crop is gone)
    planned: int
    gallery: dict[str, list[str]]  # identity -> its aligned crops (relative to OUT), sorted
    model_dir: Path | None
    unread: Counter  # manifest lines not read (g2g.io.runfolder.Manifest.lines)


def _whole(out: Path, rel: str, recorded: dict[str, Any] | None) -> bool:
    """The crop is the file mix wrote (its digest; manifests from before digests: not empty). A damaged crop would
    be scored as "no face found", a model miss, so it is counted apart instead."""
    from g2g.io.files import intact

    try:
        return intact(safe_join(out, rel), recorded)
    except UnsafePathError:
        return False


def mixed_crop(rec: dict[str, Any]) -> str | None:
    """The aligned mixed crop of a manifest line (``output`` when the run wrote crops only)."""
    return rec.get("mixed_crop") or (rec.get("output") if rec.get("status") == "ok" else None)


def _exists(root: Path, rel: str) -> bool:
    try:
        return safe_join(root, rel).is_file()
    except UnsafePathError:
        return False


def _gallery(out: Path, recs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """identity -> its aligned crops: those the manifest names plus OUT/aligned/ids/<identity>/*.png."""
    gallery: dict[str, set[str]] = {}
    for rec in recs:
        name = str(rec.get("identity"))
        crops = gallery.setdefault(name, set())
        crops.update(c for c in rec.get("identity_crops") or [] if _exists(out, c))
        folder = out / "aligned" / "ids" / name
        if "/" not in name and "\\" not in name and name not in ("", ".", "..") and folder.is_dir():
            crops.update(p.relative_to(out).as_posix() for p in sorted(folder.glob("*.png")))
    return {k: sorted(v) for k, v in sorted(gallery.items()) if v}


def _is_run_file(run: Any) -> bool:
    """OUT/run.json as mix writes it, in the fields eval reads."""
    number = (int, float, type(None))
    align = run.get("align") if isinstance(run, dict) else None
    return (isinstance(run, dict) and isinstance(align, (dict, type(None)))
            and all(isinstance((align or {}).get(k), number) for k in ("size", "zoom"))
            and all(isinstance(run.get(k), (str, type(None))) for k in ("model_dir", "method")))


def load_mix(out: Path) -> MixRun:
    """Read OUT/run.json and OUT/manifest.jsonl (last line per (pose, identity) wins, as after a resume; lines that
    are not mix records are counted in ``unread``)."""
    from g2g.mix import latest_records

    out = Path(out)
    if not (out / "manifest.jsonl").is_file():
        raise EvalError(f"{out} is not a g2g mix output (no manifest.jsonl); run g2g mix first")
    run: dict[str, Any] = {}
    if (out / "run.json").is_file():
        try:
            run = json.loads((out / "run.json").read_text())
        except (OSError, ValueError) as e:
            raise EvalError(f"cannot read {out / 'run.json'}: {e}") from None
        if not _is_run_file(run):
            raise EvalError(f"{out / 'run.json'} is not the run file g2g mix writes (edited, or another program's): "
                            "rerun g2g mix into this folder to rewrite it")
    unread: Counter = Counter()
    last = list(latest_records(out, unread).values())
    ok, skipped, skipped_recs = [], Counter(), []
    for rec in last:
        if rec.get("status") != "ok":
            reason = str(rec.get("reason") or "skipped")
        elif not (rel := mixed_crop(rec)) or not rec.get("pose_crop") or not _exists(out, rel) \
                or not _exists(out, rec["pose_crop"]):
            reason = "eval:missing-crop"
        elif not _whole(out, rel, rec.get("mixed_crop_digest")):  # truncated or replaced since mix wrote it
            reason = "eval:damaged-crop"
        else:
            ok.append(rec)
            continue
        skipped[reason] += 1
        skipped_recs.append({**rec, "reason": reason})
    align = run.get("align") or {}
    size = int(align.get("size") or 0)
    if not size and ok:
        from PIL import Image

        with Image.open(out / mixed_crop(ok[0])) as im:  # type: ignore[operator]
            size = im.size[0]
    return MixRun(
        out=out, run=run, align=AlignConfig(size=size or 128, zoom=float(align.get("zoom") or DEFAULT_ZOOM)), ok=ok,
        skipped=skipped, skipped_recs=skipped_recs, planned=len(last), gallery=_gallery(out, last),
        model_dir=Path(run["model_dir"]) if run.get("model_dir") else None, unread=unread,
    )


def read_crop(path: Path, size: int | None = None) -> np.ndarray | None:
    """(S, S, 3) uint8 RGB, or None when unreadable or not ``size`` px square."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        return None
    if size is not None and a.shape[:2] != (size, size):
        return None
    return a


def map_crops(fn: Callable[[np.ndarray], np.ndarray], root: Path, rels: Sequence[str], size: int | None,
              batch: int, label: str = "eval") -> dict[str, np.ndarray]:
    """``fn`` (uint8 crops (B, S, S, 3) -> (B, ...)) over the crops at ``root/rel``, in batches; unreadable ones are
    left out. Progress goes to stderr as ``label`` (a bar on a terminal, a line every 30 s in a log)."""
    from g2g.progress import BatchProgress

    out: dict[str, np.ndarray] = {}
    rels = list(dict.fromkeys(rels))
    bar = BatchProgress(label, "crops", len(rels), counts=False)
    try:
        for i in range(0, len(rels), batch):
            chunk = [(r, read_crop(root / r, size)) for r in rels[i : i + batch]]
            chunk = [(r, a) for r, a in chunk if a is not None]
            if chunk:
                out.update({r: e for (r, _), e in zip(chunk, fn(np.stack([a for _, a in chunk])))})
            bar.set(min(i + batch, len(rels)))
    finally:
        bar.close()
    return out


def model_facts(model_dir: Path | None) -> dict[str, Any] | None:
    """MODEL_DIR/g2g_model.json as a dict, or None when there is none or it is unreadable."""
    if model_dir is None or not (Path(model_dir) / "g2g_model.json").is_file():
        return None
    try:
        return json.loads((Path(model_dir) / "g2g_model.json").read_text())
    except (OSError, ValueError):
        return None
