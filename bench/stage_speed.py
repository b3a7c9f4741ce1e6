"""Where ``g2g mix`` spends its time: CPU-ms per pair of each stage, for each method, on real photos, in one process.

For P pose photos x I identity photos (one photo per person, people from a folder
such as ../shared/faces/celeba-wild), every stage of a pair is timed by calling
the library functions that ``g2g mix`` calls, in mix's order and batch sizes:
read (JPEG decode), detect (MTCNN on ONNX Runtime), align (5 points), the
method's encoders (dlib's 68 landmarks and face masks, or a model's encoder),
its mix (warps and paste, or the model's networks; the inner functions that
take the time are shown under it), paste-back, and the writes (crops as PNG,
the output as JPEG q95, atomically, and the manifest line). A stage of a pose
photo serves its I pairs and one of an identity its P pairs: their time is
divided by the pairs they serve (column ``per``). CPU time is the process's
(all threads: OpenCV's and ONNX Runtime's too).

Beside each table: the floor (reading the pose photos and writing one JPEG per
pair, no face work), and the same photos run through ``mix_folders`` in this
process (:func:`end_to_end`), whose CPU time per pair the stage sum should
explain. Then the mix stage of each method against its code before the speed-up
(:func:`baseline`, kept callable here), on the same pairs in the same process:
CPU-ms per pair of both, their ratio, and the largest pixel difference (0: the
same bytes; tests/test_stage_speed_equivalence.py asserts it). Last, the
engines: each method's ``mix_folders`` run again with ``--engine ray`` and 1
and 2 mixing actors (``--engines``), on one local Ray cluster started once for
them, wall-clock pairs/s beside the local run's. Nothing here asserts a number.

    python bench/stage_speed.py                              # 8 poses x 4 identities, every method
    python bench/stage_speed.py --poses 32 --ids 8 --methods expression-paste
    python bench/stage_speed.py --engines local,ray:1,ray:2,ray:4 --ray-cpus 8
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from g2g.config import MIX_FACE_POLICIES, MixConfig
from g2g.faces.detect import MTCNN_MIN_FACE
from g2g.faces.paste_back import paste_back
from g2g.io.files import atomic_save_image
from g2g.io.images import SkipImage
from g2g.io.runfolder import Manifest
from g2g.methods import open_mixer
from g2g.mix import mix_folders
from g2g.mix.resume import quality_of
from g2g.mix.run import crop_side
from g2g.photos import FacePolicy, align_photo, detector_or_cpu, load_photo, select_faces

DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared" / "faces" / "celeba-wild"
METHODS = {  # bench name -> the MixConfig of `g2g mix --method NAME` (expression-paste as mix runs it by default)
    "paste": MixConfig(method="paste"),
    "warp-paste": MixConfig(method="warp-paste"),
    "expression-paste": MixConfig(method="expression-paste", fixes="default"),
    "model": MixConfig(method="model"),
}
# the inner functions of each method's mix shown under it: (module, attribute, label)
INNER = {
    "paste": [("g2g.faces.geometry", "match_colour", "colour match"), ("g2g.faces.geometry", "blend", "blend")],
    "warp-paste": [("g2g.faces.geometry", "warp_to", "warp (piecewise affine)"),
                   ("g2g.faces.geometry", "match_colour", "colour match"), ("g2g.faces.geometry", "blend", "blend")],
    "expression-paste": [("g2g.methods.compose:GeometryWarp", "__init__", "warps (2x bicubic)"),
                         ("g2g.methods.compose:GeometryWarp", "__call__", "warps (2x bicubic)"),
                         ("g2g.methods.compose", "transfer_tone", "tone"),
                         ("g2g.methods.compose", "match_colour", "colour match"),
                         ("g2g.methods.compose", "match_grain", "grain"),
                         ("g2g.methods.compose", "face_mask", "masks"),
                         ("g2g.methods.compose", "feature_mask", "masks"),
                         ("g2g.methods.compose", "inner_mouth_mask", "masks"),
                         ("g2g.methods.compose", "closed_mouth", "closed mouth"),
                         ("g2g.methods.compose", "blend", "blend")],
    "model": [("g2g.methods.appearance_mixer", "pair_inputs", "inputs (warp, colour match)"),
              ("bundle", "generate", "networks (ONNX Runtime)")],
}


@dataclass
class Stages:
    """CPU and wall seconds per stage, in the order first timed, with how many pairs each stage's one run serves."""

    cpu: Counter = field(default_factory=Counter)
    wall: Counter = field(default_factory=Counter)
    per: dict[str, str] = field(default_factory=dict)  # stage -> pair | pose | identity | run
    inner: Counter = field(default_factory=Counter)  # CPU seconds of the mix's inner functions (INNER)

    @contextmanager
    def time(self, stage: str, per: str) -> Iterator[None]:
        self.per.setdefault(stage, per)
        c, w = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[stage] += time.process_time() - c
            self.wall[stage] += time.perf_counter() - w


@contextmanager
def spying(targets: list[tuple[Any, str, str]], into: Counter) -> Iterator[None]:
    """Replace each (object, attribute) with a wrapper adding its CPU seconds to ``into[label]``; a wrapped call made
    inside another counts to the outer one only. Restored on exit."""
    depth = [0]

    def wrap(fn: Callable, label: str) -> Callable:
        def timed(*args: Any, **kw: Any) -> Any:
            if depth[0]:
                return fn(*args, **kw)
            depth[0] += 1
            t = time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                into[label] += time.process_time() - t
                depth[0] -= 1
        return timed

    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in targets]
    try:
        for (obj, name, label), (_, _, fn) in zip(targets, saved):
            setattr(obj, name, wrap(fn, label))
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def inner_targets(method: str, mixer: Any) -> list[tuple[Any, str, str]]:
    """INNER's (object, attribute, label) of ``method``: ``module`` or ``module:Class``, or ``bundle`` (the mixer's)."""
    from g2g.methods import load

    return [(mixer.bundle if where == "bundle" else load(where) if ":" in where else importlib.import_module(where),
             attr, label) for where, attr, label in INNER[method]]


def machine() -> str:
    """The CPU model (/proc/cpuinfo) and the cores this process may use."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def choose_photos(src: Path, poses: int, ids: int, cfg: MixConfig) -> tuple[list[Path], list[Path]]:
    """The first photo with a usable face (mix's face policy) of the first ``poses`` people, and of the last
    ``ids`` people, so that every planned pair is mixed."""
    detector, _ = detector_or_cpu("cpu", cfg.min_face)
    policy = FacePolicy.of(cfg, MIX_FACE_POLICIES)

    def usable(p: Path) -> bool:
        im = load_photo(p, cfg.max_pixels, max(MTCNN_MIN_FACE, cfg.min_face // 2))
        return not isinstance(im, SkipImage) and select_faces(detector.detect(im.rgb), policy)[1] is None

    people = sorted(p for p in src.iterdir() if p.is_dir())

    def pick(order: list[Path], n: int) -> list[Path]:
        out = []
        for person in order:
            photo = next((p for p in sorted(person.glob("*.jpg"))[:3] if usable(p)), None)
            out += [photo] if photo else []
            if len(out) == n:
                return out
        raise SystemExit(f"only {len(out)} people with a usable face under {src}, {n} asked for")

    return pick(people, poses), pick(people[::-1], ids)


def link_inputs(photos: list[Path], dst: Path) -> None:
    """``dst/<person>/<photo>`` symlinks: mix reads them as it reads real folders (the photos stay where they are)."""
    for p in photos:
        (dst / p.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(p.resolve(), dst / p.parent.name / p.name)


def crops_of(paths: list[Path], role: str, cfg: MixConfig, detector: Any, size: int, template: np.ndarray,
             st: Stages, out: Path, per: str) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(photos, crops, affines) as mix's Aligner makes them: decode, MTCNN in batches, 5-point alignment; each crop
    written as mix keeps it (aligned/<role>s/*.png)."""
    min_side = max(MTCNN_MIN_FACE, cfg.min_face // 2)
    with st.time(f"read {role} (JPEG decode)", per):
        photos = [load_photo(p, cfg.max_pixels, min_side).rgb for p in paths]
    with st.time(f"detect {role} (MTCNN)", per):
        B = cfg.batch_size
        found = [f for b in range(0, len(photos), B) for f in detector.detect_batch(photos[b : b + B])]
    crops, affines = [], []
    with st.time(f"align {role} (5 points)", per):
        policy = FacePolicy.of(cfg, MIX_FACE_POLICIES)
        for rgb, faces in zip(photos, found):
            chosen, _, _ = select_faces(faces, policy)
            crop, M = align_photo(rgb, chosen[0].landmarks, template, size)
            crops.append(crop)
            affines.append(M)
    with st.time(f"write {role} crop (PNG)", per):
        for k, crop in enumerate(crops):
            save(out / "aligned" / f"{role}s" / f"{k}.png", crop, cfg)
    return photos, crops, affines


def save(path: Path, image: np.ndarray, cfg: MixConfig) -> None:
    from PIL import Image

    atomic_save_image(path, Image.fromarray(image), quality=quality_of(cfg))


def stage_run(name: str, cfg: MixConfig, poses: list[Path], ids: list[Path], pose_root: Path, out: Path
              ) -> tuple[Stages, Any, list[Any], list[Any]]:
    """Every stage of ``g2g mix`` on ``poses`` x ``ids`` (all pairs), one after the other, timed -> (the times, the
    mixer, its pose encodings, its identity encodings)."""
    st = Stages()
    with st.time("open models, --size auto probe", "run"):
        size, _ = crop_side(cfg, pose_root, [p.relative_to(pose_root).as_posix() for p in poses], None)
        mixer = open_mixer(cfg.method, None, device=cfg.device, batch_size=cfg.batch_size, size=size,
                           keep_mouth=cfg.keep_mouth, fixes=cfg.fixes)
        detector, _ = detector_or_cpu(cfg.device, cfg.min_face)
    template, side = np.asarray(mixer.align.template()), mixer.align.size
    _, id_crops, _ = crops_of(ids, "identity", cfg, detector, side, template, st, out, "identity")
    with st.time("encode identities", "identity"):
        codes = mixer.encode_identities([c[None] for c in id_crops])
    photos, pose_crops, affines = crops_of(poses, "pose", cfg, detector, side, template, st, out, "pose")
    with st.time("encode poses", "pose"):
        encoded = mixer.encode_poses(np.stack(pose_crops))
    jobs = [(p, i) for p in range(len(poses)) for i in range(len(ids))]
    mixed: list[tuple[np.ndarray, np.ndarray | None]] = []
    with spying(inner_targets(name, mixer), st.inner), st.time("mix", "pair"):
        for b in range(0, len(jobs), cfg.batch_size):
            batch = jobs[b : b + cfg.batch_size]
            images, masks = mixer.mix([encoded[p] for p, _ in batch], [codes[i] for _, i in batch])
            mixed += [(img, None if masks is None else masks[j]) for j, img in enumerate(images)]
    manifest = Manifest(out)
    for k, ((p, i), (crop, mask)) in enumerate(zip(jobs, mixed)):
        with st.time("write mixed crop (PNG)", "pair"):
            save(out / "aligned" / "mixed" / f"{k}.png", crop, cfg)
        with st.time("paste back", "pair"):
            pasted = paste_back(photos[p], crop, affines[p], cfg.feather, mask)
        with st.time("write output (JPEG q95)", "pair"):
            save(out / f"{k}.{cfg.fmt}", pasted, cfg)
        with st.time("manifest line", "pair"):
            manifest.append([{"status": "ok", "pose": str(poses[p]), "identity": str(ids[i]), "output": f"{k}.jpg"}])
    return st, mixer, encoded, codes


# --- the mix stage before its speed-up, frozen: one gather per pixel and plane in every warp, each warp its own
# triangulation, the tone's denominator blurred twice, face masks eroded by the ellipse itself ----------------------


def old_warp_to(image: np.ndarray, src_lm: np.ndarray, dst_lm: np.ndarray, interpolation: int = cv2.INTER_LINEAR
                ) -> np.ndarray:
    """g2g.faces.geometry.warp_to before the speed-up."""
    from scipy.spatial import Delaunay

    from g2g.faces.geometry import _border, _pixel_grid

    size = image.shape[0]
    dst = np.vstack([np.asarray(dst_lm, np.float64), _border(size)])
    src = np.vstack([np.asarray(src_lm, np.float64), _border(size)])
    tri = Delaunay(dst).simplices
    index = np.full((size, size), -1, np.int32)
    for t, poly in enumerate(np.round(dst[tri] * 16).astype(np.int32)):
        cv2.fillConvexPoly(index, poly, t, lineType=cv2.LINE_8, shift=4)
    ones = np.ones((len(tri), 3, 1))
    A = np.linalg.solve(np.concatenate([dst[tri], ones], axis=2), src[tri])
    ys, xs = _pixel_grid(size)
    a = A.reshape(len(tri), 6).T[:, index.clip(min=0)]
    map_x = xs * a[0] + ys * a[2] + a[4]
    map_y = xs * a[1] + ys * a[3] + a[5]
    outside = index < 0
    map_x[outside], map_y[outside] = xs[outside], ys[outside]
    return cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), interpolation,
                     borderMode=cv2.BORDER_REFLECT)


class OldGeometryWarp:
    """g2g.methods.compose.sharp_warp before the speed-up, behind GeometryWarp's interface."""

    def __init__(self, dst_lm: np.ndarray, size: int, sharp: bool):
        self.dst_lm, self.sharp = dst_lm, sharp

    def __call__(self, image: np.ndarray, src_lm: np.ndarray) -> np.ndarray:
        if not self.sharp:
            return old_warp_to(image, src_lm, self.dst_lm)
        size = image.shape[0]
        big = cv2.resize(image, (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC)
        out = old_warp_to(big, (np.asarray(src_lm) + 0.5) * 2 - 0.5, (np.asarray(self.dst_lm) + 0.5) * 2 - 0.5,
                          cv2.INTER_CUBIC)
        return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


def old_transfer_tone(face: np.ndarray, pose_w: np.ndarray, skin: np.ndarray, sigma: float) -> np.ndarray:
    """g2g.methods.compose.transfer_tone before the speed-up."""
    from g2g.methods.compose import _lab

    def masked_blur(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        num = cv2.GaussianBlur(x * w[..., None], (0, 0), sigma)
        den = cv2.GaussianBlur(w, (0, 0), sigma)[..., None]
        return num / np.maximum(den, 1e-3)

    a, b = _lab(face), _lab(pose_w)
    shift = masked_blur(b, skin) - masked_blur(a, skin)
    return cv2.cvtColor(np.clip(np.rint(a + shift), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def old_erode_ellipse(image: np.ndarray, k: int) -> np.ndarray:
    """The erosion of g2g.faces.geometry.face_mask before the speed-up."""
    return cv2.erode(image, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


BASELINE = [("g2g.faces.geometry", "warp_to", old_warp_to), ("g2g.faces.masked_rest", "warp_to", old_warp_to),
            ("g2g.faces.geometry", "erode_ellipse", old_erode_ellipse),
            ("g2g.methods.compose", "GeometryWarp", OldGeometryWarp),
            ("g2g.methods.compose", "transfer_tone", old_transfer_tone)]


@contextmanager
def baseline() -> Iterator[None]:
    """Every method's mix runs its code from before the speed-up (BASELINE's replacements) while inside."""
    saved = [(importlib.import_module(mod), name) for mod, name, _ in BASELINE]
    saved = [(m, name, getattr(m, name)) for m, name in saved]
    try:
        for (m, name, _), (_, _, old) in zip(saved, BASELINE):
            setattr(m, name, old)
        yield
    finally:
        for m, name, fn in saved:
            setattr(m, name, fn)


def mix_all(mixer: Any, poses: list[Any], idents: list[Any], batch: int) -> np.ndarray:
    """Every (pose, identity) pair mixed in batches of ``batch``, as mix does -> the crops (P x I, S, S, 3)."""
    jobs = [(p, i) for p in poses for i in idents]
    return np.concatenate([mixer.mix([p for p, _ in jobs[b : b + batch]], [i for _, i in jobs[b : b + batch]])[0]
                           for b in range(0, len(jobs), batch)])


def before_after(mixer: Any, poses: list[Any], idents: list[Any], batch: int, repeats: int
                 ) -> tuple[float, float, int]:
    """(old, new) CPU seconds per pair of the mix stage (best of ``repeats``, interleaved so that a busy spell of
    the machine hits both), and the largest difference between their crops in grey levels."""
    old_t, new_t = [], []
    for _ in range(repeats):
        with baseline():
            t = time.process_time()
            old = mix_all(mixer, poses, idents, batch)
            old_t.append(time.process_time() - t)
        t = time.process_time()
        new = mix_all(mixer, poses, idents, batch)
        new_t.append(time.process_time() - t)
    n = len(poses) * len(idents)
    return min(old_t) / n, min(new_t) / n, int(np.abs(old.astype(int) - new.astype(int)).max())


def floor(poses: list[Path], n_ids: int, cfg: MixConfig, out: Path) -> float:
    """CPU seconds per pair of reading the pose photos (each once) and writing each pair's output JPEG: the photo as
    read, no face work."""
    t = time.process_time()
    min_side = max(MTCNN_MIN_FACE, cfg.min_face // 2)
    for k, p in enumerate(poses):
        rgb = load_photo(p, cfg.max_pixels, min_side).rgb
        for i in range(n_ids):
            save(out / f"{k}_{i}.{cfg.fmt}", rgb, cfg)
    return (time.process_time() - t) / (len(poses) * n_ids)


def end_to_end(poses: Path, ids: Path, out: Path, cfg: MixConfig) -> tuple[float, float, int]:
    """``mix_folders`` as ``g2g mix`` runs it -> (pairs/s, CPU seconds per pair, pairs written). ``cfg`` says how
    (method, engine, workers), so another way of running mix is one more call."""
    c = time.process_time()
    report = mix_folders(poses, ids, out, cfg, progress=False)
    cpu = time.process_time() - c
    n = max(report.written, 1)
    return report.written / report.elapsed, cpu / n, report.written


def engine_configs(spec: str, cfg: MixConfig) -> list[tuple[str, MixConfig]]:
    """``local,ray:1,ray:2`` -> (label, the MixConfig of that engine) for each: ``ray:N`` is ``--engine ray
    --ray-workers N``."""
    rows = []
    for item in (i.strip() for i in spec.split(",") if i.strip()):
        name, _, n = item.partition(":")
        if name not in ("local", "ray") or (n and not n.isdigit()):
            raise ValueError(f"engine {item!r}: local, ray or ray:N")
        rows.append((item, cfg if name == "local" else replace(cfg, engine="ray", ray_workers=int(n) if n else None)))
    return rows


@dataclass
class Result:
    """One method's figures: its stage times, and its run through mix_folders (:func:`end_to_end`), and its runs
    with each other engine (label -> end_to_end's figures)."""

    name: str
    st: Stages
    e2e: tuple[float, float, int]
    engines: dict[str, tuple[float, float, int]] = field(default_factory=dict)

    def per_pair(self, n_pairs: int) -> dict[str, float]:
        """CPU seconds per pair of each stage (the once-per-run setup left out)."""
        return {s: v / n_pairs for s, v in self.st.cpu.items() if self.st.per[s] != "run"}

    def setup(self) -> float:
        return sum(v for s, v in self.st.cpu.items() if self.st.per[s] == "run")

    def rate(self, n_pairs: int) -> float:
        """Pairs/s through the stages, one after the other (wall clock, setup left out)."""
        return n_pairs / sum(v for s, v in self.st.wall.items() if self.st.per[s] != "run")


def print_method(r: Result, n_pairs: int, n_poses: int, n_ids: int) -> None:
    """One method's stages with the mix's inner functions under it, and how much of mix_folders' CPU they explain."""
    serves = {"pair": "pair", "pose": f"pose /{n_ids}", "identity": f"id /{n_poses}"}
    pair_cpu = r.per_pair(n_pairs)
    total = sum(pair_cpu.values())
    print(f"\n{r.name}: {r.rate(n_pairs):.1f} pairs/s through the stages, {1e3 * total:.1f} CPU-ms per pair")
    print(f"  {'stage':34} {'per':>8} {'CPU-ms/pair':>12} {'share':>7}")
    for s, v in pair_cpu.items():
        print(f"  {s:34} {serves[r.st.per[s]]:>8} {1e3 * v:12.2f} {100 * v / total:6.1f}%")
        if s == "mix":
            rest = v * n_pairs - sum(r.st.inner.values())
            for label, iv in [*r.st.inner.most_common(), ("(the rest of the mix)", rest)]:
                print(f"    {label:32} {'':>8} {1e3 * iv / n_pairs:12.2f} {100 * iv / n_pairs / total:6.1f}%")
    rate, cpu, written = r.e2e
    print(f"  once per run (open the models, --size auto probe): {1e3 * r.setup():.0f} CPU-ms")
    print(f"  mix_folders: {rate:.1f} pairs/s, {1e3 * cpu:.1f} CPU-ms per pair ({written} pairs, setup included); "
          f"the stages and the setup account for {100 * (total + r.setup() / n_pairs) / cpu:.0f}% of it")


def print_summary(results: list[Result], n_pairs: int, floor_s: float) -> None:
    """Every method side by side: CPU-ms per pair and share of each stage, pairs/s, and the floor."""
    print(f"\nall methods, CPU-ms per pair (share of the stage sum); floor {1e3 * floor_s:.2f} CPU-ms per pair")
    print(f"  {'stage':30}" + "".join(f" {r.name:>18}" for r in results))
    per = [r.per_pair(n_pairs) for r in results]
    for s in per[0]:
        print(f"  {s:30}" + "".join(f" {1e3 * p[s]:10.2f} ({100 * p[s] / sum(p.values()):4.1f}%)" for p in per))
    rows = [("total per pair", [f"{1e3 * sum(p.values()):.2f}" for p in per]),
            ("x the floor", [f"{sum(p.values()) / floor_s:.0f}x" for p in per]),
            ("pairs/s, stages", [f"{r.rate(n_pairs):.1f}" for r in results]),
            ("pairs/s, mix_folders", [f"{r.e2e[0]:.1f}" for r in results]),
            ("CPU-ms/pair, mix_folders", [f"{1e3 * r.e2e[1]:.1f}" for r in results])]
    for label, cells in rows:
        print(f"  {label:30}" + "".join(f" {c:>18}" for c in cells))


def print_before_after(rows: list[tuple[str, float, float, int]]) -> None:
    print("\nmix stage before / after its speed-up (same pairs, same process, best of the repeats):")
    print(f"  {'method':18} {'before CPU-ms/pair':>18} {'after':>8} {'ratio':>7} {'max |diff|':>10}")
    for name, old, new, diff in rows:
        print(f"  {name:18} {1e3 * old:18.2f} {1e3 * new:8.2f} {old / new:6.2f}x {diff:10d}")


def print_engines(results: list[Result], labels: list[str], ray_cpus: int | None) -> None:
    """Wall-clock pairs/s of each method's mix_folders run by each engine, and the ratio to the local run."""
    if not any(r.engines for r in results):
        return
    print(f"\nengines, pairs/s of mix_folders (wall clock; ratio to the local run in this process); a local Ray "
          f"cluster of {ray_cpus or os.cpu_count()} CPUs started once for these runs, each run's actors started anew")
    print(f"  {'method':18}" + "".join(f" {label:>16}" for label in labels))
    for r in results:
        cells = [f"{r.engines[l][0]:.1f} ({r.engines[l][0] / r.e2e[0]:.2f}x)" if l in r.engines else "-" for l in labels]
        print(f"  {r.name:18}" + "".join(f" {c:>16}" for c in cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="a folder of people (one subfolder each)")
    ap.add_argument("--poses", type=int, default=8, help="pose photos (P)")
    ap.add_argument("--ids", type=int, default=4, help="identity photos (I): P x I pairs")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each mix stage for the before/after (best kept)")
    ap.add_argument("--engines", default="local,ray:1,ray:2",
                    help="engines to run mix_folders with: local, ray (its default actors) or ray:N (N actors)")
    ap.add_argument("--ray-cpus", type=int, default=None,
                    help="CPUs the local Ray cluster declares (default: this machine's)")
    args = ap.parse_args()
    try:
        engines = engine_configs(args.engines, MixConfig())
    except ValueError as e:
        ap.error(str(e))
    ray_rows = [label for label, c in engines if c.engine == "ray"]
    if ray_rows and importlib.util.find_spec("ray") is None:
        print("engines: ray is not installed (pip install 'g2g[ray]'); the Ray rows are left out")
        ray_rows = []
    if ray_rows:
        from g2g.cluster import ray_cluster

        ray_cluster_ctx: Any = ray_cluster(num_cpus=args.ray_cpus)
    else:
        ray_cluster_ctx = nullcontext()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")

    poses, ids = choose_photos(args.src, args.poses, args.ids, MixConfig())
    n_pairs = len(poses) * len(ids)
    print(f"g2g mix per stage: {len(poses)} poses x {len(ids)} identities = {n_pairs} pairs from {args.src}")
    print(f"machine: {machine()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print("per: pair = every pair; pose /I = once per pose photo, shared by its I pairs; id /P = once per identity, "
          "shared by its P pairs")
    print("encode: dlib's 68 landmarks and face masks (a funit model: its encoders); floor: reading the pose photos "
          "and writing one JPEG q95 per pair, no face work")
    with tempfile.TemporaryDirectory(prefix="g2g-stages-") as tmp:
        tmp = Path(tmp)
        link_inputs(poses, tmp / "poses")
        link_inputs(ids, tmp / "ids")
        pose_links = [tmp / "poses" / p.parent.name / p.name for p in poses]
        id_links = [tmp / "ids" / p.parent.name / p.name for p in ids]
        floor_s = floor(pose_links, len(ids), MixConfig(), tmp / "floor")
        for name in methods:  # warm-up: lazy imports, dlib's predictor, first ONNX Runtime runs
            stage_run(name, METHODS[name], pose_links[:1], id_links[:1], tmp / "poses", tmp / f"warm-{name}")
        results, rows = [], []
        for name in methods:
            cfg = METHODS[name]
            st, mixer, encoded, codes = stage_run(name, cfg, pose_links, id_links, tmp / "poses",
                                                  tmp / f"stages-{name}")
            results.append(Result(name, st, end_to_end(tmp / "poses", tmp / "ids", tmp / f"mix-{name}", cfg)))
            print_method(results[-1], n_pairs, len(poses), len(ids))
            rows.append((name, *before_after(mixer, encoded, codes, cfg.batch_size, args.repeats)))
        print_summary(results, n_pairs, floor_s)
        print_before_after(rows)
        with ray_cluster_ctx:
            if ray_rows:  # warm-up: the cluster's first worker processes, their imports
                end_to_end(tmp / "poses", tmp / "ids", tmp / "warm-ray", replace(METHODS[methods[0]], engine="ray"))
            for r in results:
                for label, ecfg in engine_configs(args.engines, METHODS[r.name]):
                    if ecfg.engine == "ray" and label in ray_rows:
                        r.engines[label] = end_to_end(tmp / "poses", tmp / "ids", tmp / f"mix-{r.name}-{label}", ecfg)
                    elif ecfg.engine == "local":
                        r.engines[label] = r.e2e
        print_engines(results, [label for label, c in engines if c.engine == "local" or label in ray_rows],
                      args.ray_cpus)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
