"""``realism``: can a classifier tell the run's mixed faces from real photos of the same people?

A classifier two-sample test (g2g.eval.c2st) on texture statistics of the face
region (g2g.eval.texture: masked means and stds of dlib's face ResNet activations
after its stem and each resolution stage, every crop greyed outside the
brows-to-chin region of its own 68 landmarks). Real faces are the run's own
aligned identity and pose crops, or ``--real DIR`` (aligned crops in per-person
folders). Folds are grouped: a mixed face goes with its pose photo (with the pose
person's real crops where the run names that person: a first folder or a stem
that is an identity) and with its identity, a real face with its person; no test
face shares one of these with a training face (g2g.eval.c2st).

Beside the AUC: the same test between two random halves of the real people (it
should sit near 0.5), the Fréchet distance of mixed vs real features with its
real-vs-real control, each output's out-of-fold probability of being a mix
("detectability", per_image.csv) and a sheet of the most and least detectable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from g2g.config import AlignConfig, EvalConfig
from g2g.eval.c2st import C_DEFAULT, as_keys, c2st, fd_test, n_folds, split_groups
from g2g.eval.runs import MixRun, map_crops, mixed_crop, read_crop
from g2g.eval.report import EvalError

MIN_MIXED = 10  # fewer mixed faces: no test
MIN_PEOPLE = 2  # fewer real people: no grouped folds (the real-vs-real control needs twice as many)
SEEDS = 5  # fold splits (and real halves) averaged
SHEET_K = 16  # most and least detectable outputs shown
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class RealFaces:
    features: np.ndarray  # (M, D)
    groups: list[str]  # the person of each face
    source: str  # where they came from, in words
    notes: list[str] = field(default_factory=list)


def pose_group(pose: str, people: set[str]) -> str:
    """The fold group of a pose photo: its person where the run names one (first folder, or a stem that is an
    identity), else the photo itself."""
    parts = Path(str(pose)).parts
    if len(parts) > 1:
        return f"person:{parts[0]}"
    stem = Path(str(pose)).stem
    return f"person:{stem}" if stem in people else f"photo:{pose}"


def _run_real(run: MixRun, net, cfg: EvalConfig) -> RealFaces:
    """The run's own aligned identity crops (person = folder) and pose crops (grouped as :func:`pose_group`)."""
    people = set(run.gallery)
    rels = {c: f"person:{name}" for name, cs in run.gallery.items() for c in cs}
    for r in run.ok:
        rels.setdefault(r["pose_crop"], pose_group(r["pose"], people))
    feats = map_crops(net, run.out, list(rels), run.align.size, cfg.batch_size, "eval realism (real)")
    keep = [r for r in rels if r in feats]
    X = np.stack([feats[r] for r in keep]) if keep else np.zeros((0, net.dim), np.float32)
    return RealFaces(X, [rels[r] for r in keep], "the run's aligned identity and pose crops")


def _real_zoom(root: Path) -> float | None:
    """The alignment zoom a prepare folder (prepare_config.json) or mix output (run.json) records, else None."""
    import json

    for name, keys in (("prepare_config.json", ("zoom",)), ("run.json", ("align", "zoom"))):
        try:
            value: Any = json.loads((root / name).read_text())
            for k in keys:
                value = value.get(k)
            if value is not None:
                return float(value)
        except (OSError, ValueError, AttributeError, TypeError):
            continue
    return None


def _dir_real(root: Path, net, align: AlignConfig, cfg: EvalConfig) -> RealFaces:
    """``--real DIR``: aligned crops in per-person folders, resized to the run's size; a different zoom is refused."""
    from g2g.faces.preprocess import resize_to_model, same_zoom

    if not root.is_dir():
        raise EvalError(f"--real {root}: not a folder")
    zoom = _real_zoom(root)
    if zoom is not None and not same_zoom(zoom, align.zoom):
        raise EvalError(f"--real {root} holds crops aligned at zoom {zoom:g}, the run's are at {align.zoom:g}: "
                        f"prepare them with --zoom {align.zoom:g}")
    files = sorted(p for d in root.iterdir() if d.is_dir() for p in d.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    notes = []
    if len(files) > cfg.real_max:
        idx = np.sort(np.random.default_rng(cfg.seed).choice(len(files), cfg.real_max, replace=False))
        notes.append(f"realism: {cfg.real_max} of the {len(files)} crops in {root} used (--seed {cfg.seed})")
        files = [files[i] for i in idx]
    crops, groups, sizes = [], [], set()
    for p in files:
        a = read_crop(p)
        if a is not None and a.shape[0] == a.shape[1]:
            sizes.add(a.shape[0])
            crops.append(resize_to_model(a, align.size))
            groups.append(f"person:{p.parent.name}")
    if sizes - {align.size}:
        notes.append(f"realism: crops of {root} resized from {', '.join(map(str, sorted(sizes)))} px to the run's "
                     f"{align.size} px; resampling changes texture, so prefer real crops at the run's size")
    X = net(np.stack(crops)) if crops else np.zeros((0, net.dim), np.float32)
    if zoom is None:
        notes.append(f"realism: {root} records no alignment zoom; its crops are taken as zoom {align.zoom:g}")
    return RealFaces(X, groups, str(root), notes)


def mixed_keys(rec: dict[str, Any], gallery: set[str]) -> tuple[str, str]:
    """The groups a mixed face belongs to: its pose photo (or pose person), then its identity."""
    return pose_group(rec["pose"], gallery), f"person:{rec['identity']}"


def _skip(reason: str, n_mixed: int, n_real: int, people: int) -> dict[str, Any]:
    return {"auc": None, "skipped": reason, "n_mixed": n_mixed, "n_real": n_real, "n_real_people": people}


def _control(real: RealFaces, seeds: list[int]) -> dict[str, Any]:
    """The classifier between two random halves of the real people (a new split per seed); None under 4 people."""
    if len(set(real.groups)) < 2 * MIN_PEOPLE:
        return {"auc": None, "auc_std": None, "aucs": []}
    aucs = []
    for s in seeds:
        y = split_groups(real.groups, np.random.default_rng(s)).astype(np.int64)
        aucs.append(c2st(real.features, y, real.groups, [s])["auc"])
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "aucs": aucs}


def realism_metrics(run: MixRun, cfg: EvalConfig, rows: dict[int, dict[str, Any]], out_dir: Path,
                    notes: list[str]) -> dict[str, Any]:
    """The realism numbers of one mix run; fills ``rows`` (per_image.csv) and writes realism_examples.png."""
    from g2g.eval.texture import REALISM_SCALE, open_texture_features

    recs = [r for r in run.ok if mixed_crop(r)]
    if len(recs) < MIN_MIXED:
        return _skip(f"only {len(recs)} mixed faces (needs {MIN_MIXED})", len(recs), 0, 0)
    net = open_texture_features(run.align.size, run.align.zoom, cfg.device, cfg.batch_size)
    real = _dir_real(Path(cfg.real), net, run.align, cfg) if cfg.real else _run_real(run, net, cfg)
    notes += real.notes
    people = len(set(real.groups))
    if people < MIN_PEOPLE:
        return _skip(f"real faces of only {people} people (needs {MIN_PEOPLE})", len(recs), len(real.groups), people)
    feats = map_crops(net, run.out, [mixed_crop(r) for r in recs], run.align.size, cfg.batch_size,
                      "eval realism (mixed)")
    recs = [r for r in recs if mixed_crop(r) in feats]
    fake = np.stack([feats[mixed_crop(r)] for r in recs]) if recs else np.zeros((0, net.dim), np.float32)
    keys = [mixed_keys(r, set(run.gallery)) for r in recs]
    X = np.concatenate([fake, real.features])
    y = np.r_[np.ones(len(fake), np.int64), np.zeros(len(real.features), np.int64)]
    if len(recs) < MIN_MIXED or not n_folds(y, as_keys(keys + real.groups)):
        poses = len({k[0] for k in keys})
        return _skip(f"{len(recs)} readable mixed faces from {poses} pose photo(s) (needs {MIN_MIXED} from 2 or more)",
                     len(recs), len(real.groups), people)
    seeds = [cfg.seed + i for i in range(SEEDS)]
    test = c2st(X, y, keys + real.groups, seeds)
    control = _control(real, seeds)
    fd = fd_test(fake, real.features, real.groups, seeds, [set(k) for k in keys])
    detect = test["scores"][: len(recs)]
    for r, p in zip(recs, detect):
        rows[id(r)]["realism_detectability"] = float(p)
    sheet = out_dir / "realism_examples.png"
    examples_sheet(sheet, run, recs, detect)
    return {
        "auc": test["auc"], "auc_std": test["auc_std"], "aucs": test["aucs"], "folds": test["folds"],
        "control_auc": control["auc"], "control_auc_std": control["auc_std"], "control_aucs": control["aucs"],
        "fd": fd["fd"], "fd_std": fd["fd_std"], "fd_control": fd["control"], "fd_control_std": fd["control_std"],
        "fd_space": fd["space"],
        "n_mixed": len(recs), "n_real": len(real.groups), "n_real_people": people, "real_source": real.source,
        "n_features": int(X.shape[1]),
        "features": f"{net.dim} texture statistics of the face region (g2g.faces.geometry.face_mask x {REALISM_SCALE} of each "
                    f"crop's own 68 landmarks, grey outside): {net.description}",
        "classifier": f"StandardScaler + L2 logistic regression (C = {C_DEFAULT}, balanced classes), "
                      f"{test['folds']} folds (StratifiedGroupKFold of the primary groups), ROC AUC of "
                      f"out-of-fold scores, mean of {len(seeds)} fold splits",
        "groups": "no test face shares a person or photo with a training face: a mixed face belongs to its pose "
                  "photo (its person where the run names one) and its identity, a real face to its person",
        "seeds": seeds, "sheet": str(sheet),
    }


def _captioned(crop: np.ndarray | None, text: str, cell: int) -> np.ndarray | None:
    """``crop`` at ``cell`` px with ``text`` on a dark strip along its bottom edge."""
    from PIL import Image, ImageDraw, ImageFont

    if crop is None:
        return None
    img = Image.fromarray(crop).resize((cell, cell), Image.Resampling.BICUBIC)
    px = max(9, cell // 12)
    try:
        font = ImageFont.load_default(size=px)
    except TypeError:  # pragma: no cover - older Pillow
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, cell - px - 5, cell, cell], fill=(0, 0, 0))
    draw.text((3, cell - px - 3), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def examples_sheet(path: Path, run: MixRun, recs: list[dict[str, Any]], detect: np.ndarray, k: int = SHEET_K,
                   per_row: int = 8) -> None:
    """The ``k`` most and ``k`` least detectable outputs, each captioned with its score, pose and identity."""
    from g2g.io.files import atomic_save_image
    from g2g.io.sheets import contact_sheet

    order = [int(i) for i in np.argsort(-detect, kind="stable")]
    most = order[:k]
    least = [i for i in order[::-1] if i not in set(most)][:k]
    cell = 128
    rows, labels = [], []
    for kind, picks in (("most detectable", most), ("least detectable", least)):
        for j in range(0, len(picks), per_row):
            cells = []
            for i in picks[j : j + per_row]:
                r = recs[i]
                crop = read_crop(run.out / mixed_crop(r), run.align.size)
                cells.append(_captioned(crop, f"{detect[i]:.2f} {Path(str(r['pose'])).stem}/{r['identity']}", cell))
            rows.append(cells)
            labels.append(kind if j == 0 else "")
    atomic_save_image(path, contact_sheet(rows, labels, None, cell=cell))
