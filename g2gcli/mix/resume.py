"""Which pairs of a plan are already done: the same method and settings, and the files still as written."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from g2g.config import MixConfig
from g2g.methods.base import Mixer
from g2g.io.runfolder import Manifest


def settings_sha256(cfg: MixConfig, mixer: Mixer) -> str:
    """Hash of the settings that change an output's pixels (not pairing, sharding, batching or device)."""
    keys = ("crop_only", "aligned", "faces", "min_face", "min_score", "feather", "fmt", "max_pixels", "keep_mouth")
    rec = {k: getattr(cfg, k) for k in keys} | {"size": mixer.align.size, "zoom": mixer.align.zoom,
                                                 "method": mixer.name}
    if cfg.fixes is not None:  # absent from the hash when not given, so that earlier runs' outputs are still theirs
        rec["fixes"] = cfg.fixes
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()


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


def pending(manifest: Manifest, pairs: list[tuple[str, str]], model_sha: str, set_sha: str,
            unread: Counter | None = None) -> list[tuple[str, str]]:
    """The pairs not yet done: a pair is done when its last line is ``ok`` for the same model and settings and its
    output and mixed crop are still whole on disk (lines not mix's are counted in ``unread``)."""
    last = manifest.latest(pair_of, unread)

    def done(r: dict[str, Any] | None) -> bool:
        return bool(r and r.get("status") == "ok" and r.get("model_sha256") == model_sha
                    and r.get("settings_sha256") == set_sha and manifest.files_intact(r, ("output",))
                    and (r.get("mixed_crop") in (None, r["output"])  # --aligned/--crop-only: one file, hashed once
                         or manifest.files_intact(r, ("mixed_crop",))))

    return [pr for pr in pairs if not done(last.get(pr))]
