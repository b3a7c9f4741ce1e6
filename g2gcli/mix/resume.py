"""Which pairs of a plan are already done: the same method and settings, and the files still as written; and what
a rerun into OUT with another model or other settings does (refused, or with ``--overwrite`` a fresh start)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from g2g.config import MixConfig
from g2g.methods.base import Mixer
from g2g.io.runfolder import Manifest


SETTINGS_KEYS = ("crop_only", "aligned", "faces", "min_face", "min_score", "feather", "fmt", "max_pixels", "keep_mouth")
DEFAULT_QUALITY = 95  # JPEG and WebP quality when --quality is not given


def quality_of(cfg: MixConfig) -> int | None:
    """The JPEG/WebP quality of the outputs (None for png, which is lossless)."""
    return None if cfg.fmt == "png" else (cfg.quality or DEFAULT_QUALITY)


def settings_record(cfg: MixConfig, mixer: Mixer) -> dict[str, Any]:
    """The settings that change an output's pixels (not pairing, sharding, batching or device), as run.json keeps
    them: what a rerun into the same OUT is compared with."""
    rec = {k: getattr(cfg, k) for k in SETTINGS_KEYS} | {"size": mixer.align.size, "zoom": mixer.align.zoom,
                                                          "method": mixer.name}
    if cfg.fixes is not None:  # absent from the hash when not given, so that earlier runs' outputs are still theirs
        rec["fixes"] = cfg.fixes
    if quality_of(cfg) not in (None, DEFAULT_QUALITY):  # the same: absent at the default quality
        rec["quality"] = quality_of(cfg)
    if cfg.reference is not None:  # the reference photo's content: another person's photo redoes the outputs
        from g2g.io.files import sha256_file

        rec["reference"] = sha256_file(Path(cfg.reference))
        rec["reference_distance"] = cfg.reference_distance
    return rec


def settings_sha256(cfg: MixConfig, mixer: Mixer) -> str:
    """Hash of :func:`settings_record`."""
    return hashlib.sha256(json.dumps(settings_record(cfg, mixer), sort_keys=True).encode()).hexdigest()


def is_mix_record(rec: dict[str, Any]) -> bool:
    """A line ``g2g mix`` wrote: a pose and an identity by name, a status, and for an ok line its output's name."""
    ok = (rec.get("status") == "ok" and isinstance(rec.get("output"), str)
          and isinstance(rec.get("mixed_crop") or "", str) and isinstance(rec.get("pose_crop") or "", str)
          and all(isinstance(rec.get(k), (dict, type(None))) for k in ("output_digest", "mixed_crop_digest")))
    return isinstance(rec.get("pose"), str) and isinstance(rec.get("identity"), str) and (
        ok or rec.get("status") == "skipped")


def pair_of(rec: dict[str, Any]) -> tuple[str, str]:
    """The (pose, identity) a mix record is about: the key whose last line holds a pair's state."""
    return rec["pose"], rec["identity"]


def mix_manifest(out: Path) -> Manifest:
    """OUT/manifest.jsonl, reading only the lines mix wrote."""
    return Manifest(out, record=is_mix_record)


def latest_records(out: Path, unread: Counter | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Last manifest line per (pose, identity): the state after any number of resumes (lines not mix's are skipped
    and counted in ``unread``)."""
    return mix_manifest(out).latest(pair_of, unread)  # type: ignore[return-value]


def outputs_intact(manifest: Manifest, rec: dict[str, Any]) -> bool:
    """An ok line's output and mixed crop are in ``manifest``'s folder exactly as written."""
    return manifest.files_intact(rec, ("output",)) and (
        rec.get("mixed_crop") in (None, rec["output"])  # --aligned/--crop-only: one file, hashed once
        or manifest.files_intact(rec, ("mixed_crop",)))


def pending(manifest: Manifest, pairs: list[tuple[str, str]], model_sha: str, set_sha: str,
            unread: Counter | None = None, last: dict | None = None) -> list[tuple[str, str]]:
    """The pairs not yet done: a pair is done when its last line is ``ok`` for the same model and settings and its
    output and mixed crop are still whole on disk (lines not mix's are counted in ``unread``; ``last``: the last
    line per pair, when already read)."""
    last = manifest.latest(pair_of, unread) if last is None else last

    def done(r: dict[str, Any] | None) -> bool:
        return bool(r and r.get("status") == "ok" and r.get("model_sha256") == model_sha
                    and r.get("settings_sha256") == set_sha and outputs_intact(manifest, r))

    return [pr for pr in pairs if not done(last.get(pr))]


# --------------------------------------------------------------------------- a rerun with another model or settings
FLAGS = {"method": "--method", "size": "--size", "fmt": "--format", "quality": "--quality", "fixes": "--fixes",
         "keep_mouth": "--keep-mouth", "crop_only": "--crop-only", "aligned": "--aligned", "faces": "--faces",
         "min_face": "--min-face", "min_score": "--min-score", "feather": "--feather",
         "reference": "--reference (photo sha256)", "reference_distance": "--reference-distance"}


def made_otherwise(last: dict[Any, dict[str, Any]], model_sha: str, set_sha: str) -> list[dict[str, Any]]:
    """The pairs' last lines that are outputs of another model or other settings than this run's."""
    return [r for r in last.values() if r.get("status") == "ok"
            and (r.get("model_sha256"), r.get("settings_sha256")) != (model_sha, set_sha)]


def _earlier_settings(run: dict[str, Any]) -> dict[str, Any]:
    """The settings record of an earlier run.json (older ones kept only ``mix`` and ``align``)."""
    if isinstance(run.get("settings"), dict):
        return run["settings"]
    mix, align = run.get("mix") or {}, run.get("align") or {}
    rec = {k: mix.get(k) for k in SETTINGS_KEYS} | {"size": align.get("size"), "zoom": align.get("zoom"),
                                                     "method": run.get("method")}
    return rec | ({"fixes": mix["fixes"]} if mix.get("fixes") is not None else {})


def _spelled(settings: dict[str, Any]) -> dict[str, Any]:
    """A settings record with its defaults written out (a default quality is absent from the hash)."""
    return settings | {"quality": settings.get("quality", None if settings.get("fmt") == "png" else DEFAULT_QUALITY)}


def _shown(key: str, value: Any) -> str:
    flag = FLAGS.get(key, key)
    if isinstance(value, bool):
        return flag if value else f"no {flag}"
    return f"{flag} {'(not given)' if value is None else value}"


def other_settings_message(out: Path, stale: list[dict[str, Any]], run: dict[str, Any] | None,
                           settings: dict[str, Any], model_sha: str, model_dir: Path | None) -> str:
    """One line: what OUT was made with that differs from this run (from OUT/run.json), and the two ways on."""
    old = _spelled(_earlier_settings(run)) if run else {}
    settings = _spelled(settings)
    keys = [k for k in dict.fromkeys([*FLAGS, *settings, *old]) if old and old.get(k) != settings.get(k)
            and not (k == "quality" and None in (old[k], settings[k]))]  # png has none: --format says it
    was = [_shown(k, old.get(k)) for k in keys]
    now = [_shown(k, settings.get(k)) for k in keys]
    if run and run.get("model_sha256") != model_sha and (run.get("model_dir") or model_dir):
        was.append(f"--model {run.get('model_dir') or 'none'} (sha256 {str(run.get('model_sha256'))[:12]})")
        now.append(f"--model {model_dir.resolve() if model_dir else 'none'} (sha256 {model_sha[:12]})")
    what = (f"was made with {', '.join(was)} (this run: {', '.join(now)})" if was else
            f"holds {len(stale)} output(s) made with another model or other settings")
    return f"{out} {what}; use another -o, or --overwrite to replace its outputs"


def files_of(rec: dict[str, Any]) -> list[str]:
    """Every file a line names, relative to OUT (with --faces all, each face's crops too)."""
    crops = rec.get("identity_crops") if isinstance(rec.get("identity_crops"), list) else []
    faces = [f.get(k) for f in rec.get("faces") or [] if isinstance(f, dict) for k in ("pose_crop", "mixed_crop")]
    return [f for f in (rec.get("output"), rec.get("mixed_crop"), rec.get("pose_crop"), *crops, *faces)
            if isinstance(f, str)]


def start_over(manifest: Manifest, pairs: list[tuple[str, str]], model_sha: str,
               set_sha: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``--overwrite``: OUT as a fresh run of ``pairs`` would leave it. The manifest keeps (rewritten atomically) only
    the last lines of the other pairs (other shards' work) made with this model and these settings; every file that
    only dropped lines name is deleted, so no output of the earlier settings stays to pass for this run's. Returns
    the lines kept, per pair."""
    import os

    from g2g.io.files import UnsafePathError, atomic_write_text, safe_join

    mine = set(pairs)
    lines = list(manifest.lines())
    last = {pair_of(r): r for r in lines}
    keep = {k: r for k, r in last.items() if k not in mine and r.get("model_sha256") == model_sha
            and r.get("settings_sha256") == set_sha}
    kept_files = {f for r in keep.values() for f in files_of(r)}
    for rel in sorted({f for r in lines for f in files_of(r)} - kept_files):
        try:
            path = safe_join(manifest.out, rel)
        except UnsafePathError:
            continue
        if not path.is_file():
            continue
        path.unlink()
        for parent in path.parents:  # folders left empty go too
            if parent == manifest.out.resolve():
                break
            try:
                os.rmdir(parent)
            except OSError:
                break
    atomic_write_text(manifest.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep.values()))
    return keep
