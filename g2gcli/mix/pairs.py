"""Encoding identities and poses once, mixing their pairs in batches, and writing each pair: paste-back, atomic
files, then its manifest line (a line is appended only after its files are on disk)."""

from __future__ import annotations

import threading
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from g2g.config import MixConfig
from g2g.io.files import atomic_save_image, safe_join
from g2g.methods.base import Mixer
from g2g.mix.report import MixReport
from g2g.mix.sources import Source
from g2g.pairing import Plan
from g2g.progress import BatchProgress
from g2g.io.runfolder import Manifest


class Writer:
    """Background pool for paste-back and writes; at most ``limit`` jobs in flight.

    A failing job (disk full, permissions) is not a per-file skip: its exception
    is raised in the main thread at the next ``submit``/``drain`` and stops the run.
    """

    def __init__(self, workers: int, manifest: Manifest, limit: int):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="g2g-write")
        self.jobs: deque[Future] = deque()
        self.limit = limit
        self.manifest = manifest
        self.lock = threading.Lock()  # the report's counters

    def submit(self, fn: Callable, *args: Any) -> None:
        self.drain(self.limit)
        self.jobs.append(self.pool.submit(fn, *args))

    def drain(self, keep: int = 0) -> None:
        while len(self.jobs) > keep:
            self.jobs.popleft().result()
        while self.jobs and self.jobs[0].done():
            self.jobs.popleft().result()

    def append(self, records: list[dict[str, Any]]) -> None:
        self.manifest.append(records)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def pair_names(pairs: list[tuple[str, str]], pose_stems: dict[str, str]) -> dict[tuple[str, str], str]:
    """(pose, identity) -> ``<pose folder>/<pose stem>__<identity>``, the output path without suffix; unique over
    the whole plan (every shard names the same), where ``__`` inside names would make two pairs one file."""
    from g2g.photos import unique_names

    raw = {f"{p}\0{i}": f"{pose_stems[p]}__{i}" for p, i in pairs}
    unique = unique_names(raw)
    return {(p, i): unique[f"{p}\0{i}"] for p, i in pairs}


@dataclass
class PairWriter:
    """Identities encoded once, poses a chunk at a time, pairs mixed in batches and handed to the writer pool."""

    cfg: MixConfig
    mixer: Mixer
    plan: Plan
    out: Path
    writer: Writer
    bar: BatchProgress
    report: MixReport
    model_sha: str
    set_sha: str
    crop_mode: bool
    pose_stems: dict[str, str]  # pose -> its path without suffix (unique)
    id_stems: dict[str, str]  # identity source -> its path without suffix (unique)
    names: dict[tuple[str, str], str]  # (pose, identity) -> its output path without suffix (unique: pair_names)

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

    def encode_identities(self, names: list[str], srcs: list[Source], codes: dict[str, Any],
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

    def mix_chunk(self, srcs: list[Source], by_pose: dict[str, list[str]], codes: dict[str, Any],
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
        faces: list[Any] = self.mixer.encode_poses(np.stack([s.crop for s in good])) if good else []
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
        """Paste back (or not), write atomically, then append the manifest line. A file that cannot be written for
        its own sake (a name too long for the file system) is a skipped pair; a full or read-only disk stops the
        run."""
        from g2g.io.files import DISK_ERRNOS

        try:
            self._write_pair(src, ident, crop, id_info, mask)
        except OSError as e:
            if e.errno in DISK_ERRNOS:
                raise
            line = self.record(src.rel, ident, id_info, reason="write-error", message=f"{type(e).__name__}: "
                               f"{e.strerror or e}")
            self.writer.append([line])
            with self.writer.lock:
                self.report.skipped["write-error"] += 1
            self.bar.advance(skipped=1)

    def _write_pair(self, src: Source, ident: str, crop: np.ndarray, id_info: dict[str, Any],
                    mask: np.ndarray | None) -> None:
        from PIL import Image

        from g2g.faces.paste_back import paste_back

        stem = self.names[(src.rel, ident)]
        out_rel = f"{stem}.{self.cfg.fmt}"
        if self.crop_mode:
            mixed_rel = out_rel
            out_digest = mixed_digest = atomic_save_image(safe_join(self.out, out_rel), Image.fromarray(crop))
        else:
            mixed_rel = f"aligned/mixed/{stem}.png"
            mixed_digest = atomic_save_image(safe_join(self.out, mixed_rel), Image.fromarray(crop))
            pasted = paste_back(src.photo, crop, np.asarray(src.affine), self.cfg.feather, mask)  # type: ignore[arg-type]
            out_digest = atomic_save_image(safe_join(self.out, out_rel), Image.fromarray(pasted))
        self.writer.append([self.record(src.rel, ident, id_info, status="ok", output=out_rel, mixed_crop=mixed_rel,
                                        output_digest=out_digest, mixed_crop_digest=mixed_digest,
                                        pose_crop=src.crop_rel, affine=src.affine)])
        with self.writer.lock:
            self.report.written += 1
        self.bar.advance(ok=1)
