"""DATA/manifest.jsonl of ``g2g prepare``: one line per source photo (one per written face with ``--faces all``).

Each line has the keys of :data:`MANIFEST_KEYS`: where the face was, its
landmarks in the photo and in the crop, the source->crop affine (invert it to
paste back), or the reason it was skipped. A source is done when its latest
attempt is final: a skip for a reason about the photo, or crops still on disk
exactly as written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from g2g.config import PrepareConfig
from g2g.photos import identity_of
from g2g.io.runfolder import Manifest

# Every manifest line has exactly these keys (None where not applicable).
MANIFEST_KEYS = {
    "source": str,  # path relative to SRC (posix)
    "identity": str,  # first folder under SRC, or the file stem for a photo directly in SRC
    "status": str,  # ok | skipped
    "reason": (str, type(None)),  # skip reason code (g2g.io.images.REASONS), None when ok
    "message": (str, type(None)),  # human-readable detail of the skip
    "face_index": (int, type(None)),  # rank of this face among accepted faces (by box area), 0 = largest
    "n_faces": (int, type(None)),  # faces MTCNN found (any score/size)
    "n_accepted": (int, type(None)),  # faces passing min_score and min_face
    "box": (list, type(None)),  # [x1, y1, x2, y2] in the photo, px
    "landmarks": (list, type(None)),  # 5 x [x, y] in the photo: eyes, nose, mouth corners
    "crop_landmarks": (list, type(None)),  # the same 5 points in the crop
    "crop_landmarks68": (list, type(None)),  # 68 x [x, y] in the crop (dlib's shape predictor, g2g.faces.landmarks)
    "score": (float, type(None)),  # MTCNN probability (best face's for a face-stage skip)
    "affine": (list, type(None)),  # 2 x 3, photo -> crop pixels; invert to paste back
    "outside": (float, type(None)),  # fraction of the crop outside the photo (mirrored fill)
    "image_size": (list, type(None)),  # [width, height] after EXIF rotation
    "conversions": list,  # e.g. ["exif-rotated (orientation 6)", "converted from CMYK"]
    "output": (str, type(None)),  # crop path relative to DATA
    "output_digest": (dict, type(None)),  # {"bytes", "sha256"} of the crop as written: a resume redoes a damaged one
    "source_digest": (dict, type(None)),  # {"bytes", "mtime_ns", "sha256"} of the photo read: a replaced one is redone
    "size": int,  # crop side, px
    "zoom": float,  # template zoom (g2g.config.AlignConfig)
}

def is_prepare_record(rec: dict[str, Any]) -> bool:
    """A line ``g2g prepare`` wrote: a source (or, in a hand-made manifest of crops, an output) and a status, every
    known key of its type (:data:`MANIFEST_KEYS`; keys a later version added may be absent), and for an ok line the
    crop it names."""
    def typed(key: str, value: Any) -> bool:
        want = MANIFEST_KEYS[key]
        return isinstance(value, want) or (float in (want if isinstance(want, tuple) else (want,))
                                           and isinstance(value, int) and not isinstance(value, bool))

    return (rec.get("status") in ("ok", "skipped") and isinstance(rec.get("source", rec.get("output")), str)
            and (rec["status"] == "skipped" or isinstance(rec.get("output"), str))
            and all(typed(k, v) for k, v in rec.items() if k in MANIFEST_KEYS))


def prepare_manifest(data: Path) -> Manifest:
    """DATA/manifest.jsonl, reading only the lines prepare wrote."""
    return Manifest(Path(data), record=is_prepare_record)


RETRIED = ("write-error", "detector-error")  # verdicts on the run, not on the photo: a rerun tries again


def current_records(recs: Iterator[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Source -> the lines of its latest attempt (a redone photo's new lines replace its old ones)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        src = r.get("source") or r.get("output")  # a hand-made manifest of crops may name no source photos
        if r.get("face_index") in (None, 0) or src not in out:  # a new attempt starts with face 0 or a skip line
            out[src] = [r]
        else:
            out[src].append(r)
    return out


def part_key(rec: dict[str, Any]) -> tuple[Any, Any]:
    """A line's place in its source's attempt: (source, face index). Folding a photo's part
    (:func:`g2g.io.parts.fold_parts`) keeps the last line per key, in the order of their last writes, so a later
    attempt's lines (which start at face 0 or a skip) come after an earlier one's and replace them."""
    return rec.get("source") or rec.get("output"), rec.get("face_index")


def source_digest(path: Path) -> dict[str, Any] | None:
    """What a photo was when it was read: size, mtime and content hash (None where it cannot be read)."""
    from g2g.io.files import sha256_file

    try:
        st = path.stat()
        return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}
    except OSError:
        return None


def same_source(recorded: dict[str, Any] | None, path: Path) -> bool:
    """Is the photo at ``path`` the one a line was made from? Same size and mtime: yes (nothing is read); else only
    when its content hash is the recorded one (a copy that lost its mtime is not redone). Lines from before digests
    were recorded are trusted by path."""
    if not recorded:
        return True
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size == recorded.get("bytes") and st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    digest = source_digest(path)
    return digest is not None and digest["sha256"] == recorded.get("sha256")


def is_final(recs: list[dict[str, Any]], manifest: Manifest, source: Path | None = None) -> bool:
    """Is this source done: the same photo (``source``, its path now) and skipped for a reason about it, or every
    crop still on disk, whole."""
    if source is not None and not same_source(recs[0].get("source_digest"), source):
        return False
    if recs[0].get("status") != "ok":
        return recs[0].get("reason") not in RETRIED
    return all(manifest.files_intact(r) for r in recs)


def record(rel: Path, cfg: PrepareConfig, **kw: Any) -> dict[str, Any]:
    """A manifest line of source ``rel``: every key of :data:`MANIFEST_KEYS`, None where not given."""
    rec: dict[str, Any] = {k: None for k in MANIFEST_KEYS}
    rec.update(source=rel.as_posix(), identity=identity_of(rel), conversions=[], size=cfg.size, zoom=float(cfg.zoom))
    rec.update(kw)
    return rec


def rounded(a: np.ndarray | list | tuple, nd: int = 2) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def read_manifest(data: str | Path, ok_only: bool = True, unread: Counter | None = None) -> list[dict[str, Any]]:
    """The current manifest lines of a prepared DATA folder (only written crops by default): each source's latest.
    Lines that are torn or not prepare's are skipped (counted in ``unread``)."""
    recs = [r for lines in current_records(prepare_manifest(Path(data)).lines(unread)).values() for r in lines]
    return [r for r in recs if r.get("status") == "ok"] if ok_only else recs
