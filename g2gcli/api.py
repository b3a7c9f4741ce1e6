"""The Python API: images in memory in, mixed images and manifest records out, through ``g2g mix``'s own path.

    from PIL import Image
    from g2g import load_model, mix_images

    model = load_model()  # the default method; load_model("models/r1"): an exported model
    results = mix_images(model, poses=[Image.open("pose.jpg")],
                         identities=[[Image.open("a1.jpg"), Image.open("a2.jpg")]])  # one person, K = 2 photos
    for r in results:  # one per (pose, identity), row-major
        print(r.pose, r.identity, r.record["status"])

Nothing here is a second pipeline: the photos go through the aligner of ``g2g mix``
(g2g.mix.sources.Aligner), its pair writer (g2g.mix.pairs.PairWriter: identity
encoding, batched mixing, paste-back) and the method of g2g.methods. Only the sink
differs: the images are kept in memory instead of written, and each result carries
the manifest line ``g2g mix`` writes for the pair, its file fields empty (no file is written).

How ``identities`` is read: an image is one identity (one photo); a list of images
is one identity per image; a list whose items are lists is one identity per item,
its photos averaged (K-shot, as an IDS subfolder is). A 4-D array counts as a list
of images. Items of one list may mix both forms: ``[img_a, [img_b1, img_b2]]`` is
two identities.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from g2g.config import MixConfig
from g2g.errors import G2GError
from g2g.io.images import LoadedImage, SkipImage, rgb_in_memory
from g2g.methods.base import Mixer
from g2g.mix.pairs import PairWriter, pair_names
from g2g.mix.report import MixReport
from g2g.mix.resume import pair_of, settings_sha256
from g2g.mix.run import POSE_CHUNK, MixError, check_mix_config, crop_side
from g2g.mix.sources import Aligner
from g2g.pairing import Plan
from g2g.photos import output_stems
from g2g.progress import BatchProgress

# the fields of a manifest record that name or hash files: empty in the API's records, which write none
FILE_FIELDS = ("output", "mixed_crop", "output_digest", "mixed_crop_digest", "pose_crop")


@dataclass
class Model:
    """An opened mixing method (g2g.methods.open_mixer) and its settings; reuse it: every call shares its sessions.

    With ``size=None`` (auto) a paste method is opened at the crop side each call's pose faces need, once per side.
    """

    cfg: MixConfig  # method, size, device, fixes, keep_mouth, batch_size (per-call options come from mix_images)
    model_dir: Path | None
    mixers: dict[int | None, Mixer] = field(default_factory=dict)  # by crop side (None: the model's own)
    detectors: dict[int, Any] = field(default_factory=dict)  # MTCNN by --min-face

    @property
    def mixer(self) -> Mixer:
        """The method as first opened (at ``size``, or 128 px for a paste method with size auto)."""
        return next(iter(self.mixers.values()))

    @property
    def align(self) -> Any:
        """Its AlignConfig: crop side and zoom."""
        return self.mixer.align

    def mixer_at(self, side: int | None) -> Mixer:
        from g2g.methods import open_mixer
        from g2g.runtime import DeviceError

        if side not in self.mixers:
            c = self.cfg
            try:
                self.mixers[side] = open_mixer(c.method, self.model_dir, device=c.device, batch_size=c.batch_size,
                                               size=side, keep_mouth=c.keep_mouth, fixes=c.fixes)
            except DeviceError as e:
                raise MixError(str(e)) from None
        return self.mixers[side]

    def detector(self, cfg: MixConfig) -> Any:
        from g2g.photos import detector_or_cpu

        if cfg.min_face not in self.detectors:
            self.detectors[cfg.min_face] = detector_or_cpu(cfg.device, cfg.min_face)[0]
        return self.detectors[cfg.min_face]


@dataclass
class MixResult:
    pose: int  # index into the poses given
    identity: int  # index into the identities given
    image: Any  # the mixed photo (or crop) as the pose's type: PIL, or an (H, W, 3) uint8 array; None: skipped
    record: dict[str, Any]  # the manifest line g2g mix writes for this pair ("status", "reason", "message", ...)


def load_model(model_dir: str | Path | None = None, *, method: str = "auto", device: str = "auto",
               size: int | None = None, fixes: str | None = None, keep_mouth: bool | None = None,
               batch_size: int = 16) -> Model:
    """Open a mixing method once, as ``g2g mix --method --model --device --size --fixes --keep-mouth`` does:
    ``method="auto"`` is the model of ``model_dir`` when given, else the default method with its default fixes."""
    cfg = MixConfig(method=method, size=size, device=device, fixes=fixes, keep_mouth=keep_mouth,
                    batch_size=batch_size, fmt="png")  # the images are what --format png writes, to the bit
    check_mix_config(cfg)
    model = Model(cfg, Path(model_dir) if model_dir is not None else None)
    side, _ = crop_side(cfg, Path("."), [], model.model_dir, images=[])  # a model: its own; auto: 128 px so far
    model.mixer_at(side)
    return model


def mix_images(model: Model, poses: Any, identities: Any, *, crop_only: bool = False, aligned: bool = False,
               faces: str = "largest", min_face: int = 40, min_score: float = 0.95, feather: float = 0.1,
               workers: int = 4) -> list[MixResult]:
    """Every (pose, identity) pair, row-major: ``results[p * len(identities) + i]``. Options as ``g2g mix``'s flags.

    ``poses``: an image or a list of images (PIL, or uint8 arrays (H, W), (H, W, 3) RGB, (H, W, 4) RGBA);
    ``identities``: see the module's docstring. A photo without a usable face is a result with ``image=None`` and
    its record's ``status`` "skipped" with a ``reason``, never an exception; bad arguments raise G2GError.
    """
    cfg = replace(model.cfg, crop_only=crop_only, aligned=aligned, faces=faces, min_face=min_face,
                  min_score=min_score, feather=feather, workers=workers)
    check_mix_config(cfg)
    pose_imgs = _images(poses, "poses")
    groups = [_images(g, "an identity's photos") for g in _groups(identities)]
    pose_loaded = [_loaded(im) for im in pose_imgs]
    id_loaded = [_loaded(im) for g in groups for im in g]
    detector = None if cfg.aligned else model.detector(cfg)
    rgbs = [im.rgb for im in pose_loaded if isinstance(im, LoadedImage)]
    side, _ = crop_side(cfg, Path("."), [], model.model_dir, images=rgbs, detector=detector)
    mixer = model.mixer_at(side)
    pose_rels = [f"pose-{p}" for p in range(len(pose_imgs))]
    id_rels = {f"identity-{i}": [f"identity-{i}/photo-{k}" for k in range(len(g))] for i, g in enumerate(groups)}
    plan = Plan(pose_rels, id_rels, [(p, i) for p in pose_rels for i in id_rels])
    sink = _Sink()
    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="g2g-api") as pool:
        aligner = Aligner(cfg, mixer, pool)
        aligner.detector = detector
        work = _InMemory.of(cfg, mixer, plan, sink)
        codes: dict[str, Any] = {}
        id_info: dict[str, dict[str, Any]] = {}
        id_srcs = aligner.align([r for rels in id_rels.values() for r in rels], id_loaded, False, role="identity")
        work.encode_identities(list(id_rels), id_srcs, codes, id_info)
        by_pose = {p: list(id_rels) for p in pose_rels}
        for k in range(0, len(pose_rels), POSE_CHUNK):  # pose encodings held for one chunk at a time, as mix does
            srcs = aligner.align(pose_rels[k : k + POSE_CHUNK], pose_loaded[k : k + POSE_CHUNK], not work.crop_mode)
            work.mix_chunk(srcs, by_pose, codes, id_info)
    return [_result(p, i, pose_imgs[p], sink, sink.records[(pose_rels[p], ident)])
            for p in range(len(pose_rels)) for i, ident in enumerate(id_rels)]


class _Sink:
    """Stands in for PairWriter's writer pool and manifest: each job runs at once, each line is kept by pair."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # PairWriter's report counters; here everything runs in the caller's thread
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.images: dict[str, np.ndarray] = {}  # what g2g mix would write, by its path in OUT

    def submit(self, fn: Any, *args: Any) -> None:
        fn(*args)

    def append(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            self.records.update((pair_of(r), r) for r in records)

    def drain(self, keep: int = 0) -> None:
        pass


class _InMemory(PairWriter):
    """g2g mix's pair writer, keeping every image in memory instead of writing it."""

    @classmethod
    def of(cls, cfg: MixConfig, mixer: Mixer, plan: Plan, sink: _Sink) -> "_InMemory":
        pose_stems = output_stems(plan.poses)
        return cls(cfg=cfg, mixer=mixer, plan=plan, out=Path("."), writer=sink,  # type: ignore[arg-type]
                   bar=BatchProgress("mix", "pairs", len(plan.pairs), 0, False), report=MixReport(Path(".")),
                   model_sha=mixer.sha256, set_sha=settings_sha256(cfg, mixer), crop_mode=cfg.crop_only or cfg.aligned,
                   pose_stems=pose_stems, id_stems=output_stems([r for rels in plan.identities.values() for r in rels]),
                   names=pair_names(plan.pairs, pose_stems))

    def save_crop(self, rel: str, crop: np.ndarray) -> dict[str, Any] | None:
        self.writer.images[rel] = crop  # type: ignore[attr-defined]
        return None


def _is_image(x: Any) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image) or (isinstance(x, np.ndarray) and x.ndim in (2, 3))


def _images(x: Any, what: str) -> list[Any]:
    """One image or a list of them -> the list (checked: images only, at least one)."""
    items = [x] if _is_image(x) else _sequence(x, what)
    bad = next((type(im).__name__ for im in items if not _is_image(im)), None)
    if bad is not None:
        raise G2GError(f"{what} must be images (PIL, or numpy arrays (H, W), (H, W, 3) or (H, W, 4)), got a {bad}")
    if not items:
        raise G2GError(f"{what}: no image given")
    return items


def _groups(identities: Any) -> list[Any]:
    """Identities as given -> one item per identity (an image, or a list of one person's images)."""
    groups = [identities] if _is_image(identities) else _sequence(identities, "identities")
    if not groups:
        raise G2GError("identities: no image given")
    return groups


def _sequence(x: Any, what: str) -> list[Any]:
    if isinstance(x, (list, tuple, np.ndarray)):
        return list(x)
    raise G2GError(f"{what} must be an image (PIL, or a numpy array) or a list of them, got a {type(x).__name__}")


def _loaded(image: Any) -> LoadedImage | SkipImage:
    """An image in memory as the aligner takes a file: decoded RGB, or why not (a damaged file Image.open opened)."""
    try:
        return rgb_in_memory(image)
    except G2GError:
        raise
    except Exception as e:  # a lazily opened PIL file that turns out truncated or corrupt: a skip, as in mix
        return SkipImage("corrupt", f"{type(e).__name__}: {e}")


def _result(p: int, i: int, pose: Any, sink: _Sink, rec: dict[str, Any]) -> MixResult:
    from PIL import Image

    image = sink.images.get(rec["output"]) if rec.get("status") == "ok" else None
    if image is not None and isinstance(pose, Image.Image):
        image = Image.fromarray(image)
    public = {**rec, **{k: None for k in FILE_FIELDS if k in rec}, "identity_crops": []}
    if isinstance(rec.get("faces"), list):
        public["faces"] = [{k: v for k, v in f.items() if k not in FILE_FIELDS} for f in rec["faces"]]
    return MixResult(p, i, image, public)


__all__ = ["Model", "MixResult", "load_model", "mix_images"]
