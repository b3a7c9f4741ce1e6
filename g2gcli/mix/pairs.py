"""Encoding identities and poses once, mixing their pairs in batches, and writing each pair: paste-back, atomic
files, then its manifest line (a line is appended only after its files are on disk)."""

from __future__ import annotations

import hashlib
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


def face_name(base: str, k: int, taken: set[str]) -> str:
    """The name of face ``k`` of a photo or pair named ``base``: ``base`` for the main face (k = 0), else
    ``<base>_f<k>``, with a hash suffix where that is already another input's name (``taken``, casefolded)."""
    if k == 0:
        return base
    name = f"{base}_f{k}"
    return name if name.casefold() not in taken else f"{name}~{hashlib.sha256(base.encode()).hexdigest()[:8]}"


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

    def __post_init__(self) -> None:
        # names a further face's file must not take (face_name)
        self.taken_poses = {v.casefold() for v in self.pose_stems.values()}
        self.taken_pairs = {v.casefold() for v in self.names.values()}

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

    def save_crop(self, rel: str, crop: np.ndarray) -> dict[str, Any] | None:
        """Every image of a pair goes through here (crops and outputs; ``--quality`` for jpg/webp) -> its digest."""
        from PIL import Image

        from g2g.mix.resume import quality_of

        return atomic_save_image(safe_join(self.out, rel), Image.fromarray(crop), quality=quality_of(self.cfg))

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
            if not s.faces:
                self.report.bad_sources[("pose", s.reason)] += 1
                for ident in by_pose[s.rel]:
                    skipped.append(self.record(s.rel, ident, id_info, reason=s.reason, message=f"pose {s.rel}: {s.message}"))
                continue
            for k, f in enumerate(s.faces):
                f.crop_rel = f"aligned/poses/{face_name(self.pose_stems[s.rel], k, self.taken_poses)}.png"
                self.writer.submit(self.save_crop, f.crop_rel, f.crop)
            good.append(s)
        flat = [(gi, k) for gi, s in enumerate(good) for k in range(len(s.faces))]  # every face of the chunk
        encoded = self.mixer.encode_poses(np.stack([good[gi].faces[k].crop for gi, k in flat])) if flat else []
        faces: dict[tuple[int, int], Any] = dict(zip(flat, encoded))
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
        self._mix_faces(good, jobs, faces, codes, id_info)

    def _mix_faces(self, good: list[Source], jobs: list[tuple[int, str]], faces: dict[tuple[int, int], Any],
                   codes: dict[str, Any], id_info: dict[str, dict[str, Any]]) -> None:
        """Each pair's faces mixed in batches of ``batch_size``; a pair goes to the writer once all its faces are."""
        face_jobs = [(gi, ident, k) for gi, ident in jobs for k in range(len(good[gi].faces))]
        done: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray | None]]] = {}
        B = self.cfg.batch_size
        for b in range(0, len(face_jobs), B):
            batch = face_jobs[b : b + B]
            images, masks = self.mixer.mix([faces[(gi, k)] for gi, _, k in batch], [codes[i] for _, i, _ in batch])
            for j, ((gi, ident, _), img) in enumerate(zip(batch, images)):  # images: (B, S, S, 3) uint8
                mixed = done.setdefault((gi, ident), [])
                mixed.append((img, None if masks is None else masks[j]))
                if len(mixed) == len(good[gi].faces):
                    self.writer.submit(self.write_pair, good[gi], ident, done.pop((gi, ident)), id_info)

    def write_pair(self, src: Source, ident: str, mixed: list[tuple[np.ndarray, np.ndarray | None]],
                   id_info: dict[str, Any]) -> None:
        """Paste back (or not), write atomically, then append the manifest line; ``mixed``: each face's mixed crop
        and mask, in ``src.faces`` order. A file that cannot be written for its own sake (a name too long for the
        file system) is a skipped pair; a full or read-only disk stops the run."""
        from g2g.io.files import DISK_ERRNOS

        try:
            self._write_pair(src, ident, mixed, id_info)
        except OSError as e:
            if e.errno in DISK_ERRNOS:
                raise
            line = self.record(src.rel, ident, id_info, reason="write-error", message=f"{type(e).__name__}: "
                               f"{e.strerror or e}")
            self.writer.append([line])
            with self.writer.lock:
                self.report.skipped["write-error"] += 1
            self.bar.advance(skipped=1)

    def _write_pair(self, src: Source, ident: str, mixed: list[tuple[np.ndarray, np.ndarray | None]],
                    id_info: dict[str, Any]) -> None:
        """Each face's mixed crop (with --crop-only/--aligned: an output each, face k > 0 as ``<pair>_f<k>``), each
        pasted back in turn into the one output photo; the line names the main face's files and lists every face."""
        from g2g.faces.paste_back import paste_back

        stem = self.names[(src.rel, ident)]
        out_rel = f"{stem}.{self.cfg.fmt}"
        pasted = src.photo
        faces: list[dict[str, Any]] = []
        for k, (face, (crop, mask)) in enumerate(zip(src.faces, mixed)):
            name = face_name(stem, k, self.taken_pairs)
            mixed_rel = f"{name}.{self.cfg.fmt}" if self.crop_mode else f"aligned/mixed/{name}.png"
            digest = self.save_crop(mixed_rel, crop)
            if not self.crop_mode:
                pasted = paste_back(pasted, crop, np.asarray(face.affine), self.cfg.feather, mask)  # type: ignore[arg-type]
            faces.append({"box": face.box, "pose_crop": face.crop_rel, "mixed_crop": mixed_rel,
                          "mixed_crop_digest": digest, "affine": face.affine}
                         | ({} if face.distance is None else {"reference_distance": face.distance}))
        main = faces[0]
        if self.crop_mode:
            out_digest = main["mixed_crop_digest"]
        else:
            out_digest = self.save_crop(out_rel, pasted)  # type: ignore[arg-type]
        self.writer.append([self.record(src.rel, ident, id_info, status="ok", output=out_rel,
                                        mixed_crop=main["mixed_crop"], output_digest=out_digest,
                                        mixed_crop_digest=main["mixed_crop_digest"], pose_crop=main["pose_crop"],
                                        affine=main["affine"], faces_replaced=len(faces), faces=faces)])
        with self.writer.lock:
            self.report.written += 1
        self.bar.advance(ok=1)
