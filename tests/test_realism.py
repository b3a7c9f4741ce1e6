"""``g2g eval --metric realism``: the classifier two-sample test on real faces, damaged faces and a real mix run.

Real aligned crops of different people (CelebA's aligned set in ../shared, aligned
again by ``g2g prepare`` at 64 px) are the real side; skipped where ../shared is
absent.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ALIGNED, copy_subset, need_shared

SIZE = 64
PEOPLE = 60  # enough people that two random halves of them differ little by chance
PER_PERSON = 2
SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    """A ``g2g prepare`` folder: PER_PERSON aligned 64 px crops of each of PEOPLE real people."""
    need_shared()
    if not ALIGNED.is_dir():
        pytest.skip(f"{ALIGNED} not found")
    from g2g.config import PrepareConfig
    from g2g.prepare import prepare_folder

    raw = copy_subset(tmp_path_factory.mktemp("raw_aligned"), PEOPLE, PER_PERSON, root=ALIGNED)
    out = tmp_path_factory.mktemp("people")
    prepare_folder(raw, out, PrepareConfig(size=SIZE), progress=False)
    return out


@pytest.fixture(scope="module")
def faces(people) -> tuple[np.ndarray, list[str]]:
    """(crops (N, S, S, 3) uint8, person of each)."""
    from g2g.eval.runs import read_crop

    files = sorted(people.glob("*/*.png"))
    return np.stack([read_crop(p, SIZE) for p in files]), [p.parent.name for p in files]


@pytest.fixture(scope="module")
def net():
    from g2g.eval.texture import open_texture_features
    from g2g.faces.preprocess import DEFAULT_ZOOM

    return open_texture_features(SIZE, DEFAULT_ZOOM, "cpu", 32)


def _auc(net, fake: np.ndarray, real: np.ndarray, groups: list[str]) -> float:
    """C2ST AUC of damaged copies of the real faces vs the real faces; a face and its copy share a fold."""
    from g2g.eval.c2st import c2st

    X = np.concatenate([net(fake), net(real)])
    y = np.r_[np.ones(len(fake), np.int64), np.zeros(len(real), np.int64)]
    return c2st(X, y, groups + groups, SEEDS)["auc"]


def test_network_reads_the_face_region_only(net, faces):
    crops, _ = faces
    from g2g.eval.texture import face_regions

    regions = face_regions(crops[:2], net.zoom)
    assert regions.shape == (2, SIZE, SIZE) and 0.2 < regions.mean() < 0.8
    f = net(crops[:2], regions)
    assert f.shape == (2, net.dim) and net.dim == 1024 and np.isfinite(f).all()
    noisy = crops[:2].copy()
    outside = regions == 0
    noisy[outside] = np.random.default_rng(0).integers(0, 256, (int(outside.sum()), 3))
    assert np.allclose(net(noisy, regions), f, atol=1e-4)  # what lies outside the region changes nothing
    assert "mean and std" in net.description


def test_real_against_real_is_near_chance(net, faces):
    from g2g.eval.c2st import c2st, split_groups

    crops, groups = faces
    X = net(crops)
    aucs = [c2st(X, split_groups(groups, np.random.default_rng(s)).astype(np.int64), groups, [s])["auc"]
            for s in SEEDS]
    assert len(set(groups)) >= 50
    assert abs(np.mean(aucs) - 0.5) < 0.1, aucs


def test_blurred_and_ghosted_faces_are_detected(net, faces):
    from g2g.eval.texture import face_regions

    crops, groups = faces
    regions = face_regions(crops, net.zoom)[..., None]
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 1.5) for c in crops])
    blurred = np.rint(blurred * regions + crops * (1 - regions)).astype(np.uint8)
    assert _auc(net, blurred, crops, groups) > 0.85
    other = np.roll(crops, PER_PERSON, axis=0)  # the same slot of another person
    ghosted = np.rint(0.6 * crops + 0.4 * other).astype(np.uint8)
    assert _auc(net, ghosted, crops, groups) > 0.85


def test_other_real_photos_posing_as_mixes_are_not_detected(people, tmp_path):
    """Outputs that are real photos of their identities (not the gallery's) score near 0.5: the classifier cannot
    score a mix as real because it learnt that person from the real side (no person spans test and training)."""
    from g2g.config import EvalConfig
    from g2g.eval import evaluate
    from test_eval import make_mix_out

    dirs = sorted(d for d in people.iterdir() if len(list(d.glob("*.png"))) == 2)
    crops = {d.name: sorted(d.glob("*.png")) for d in dirs}
    names = list(crops)
    poses, idents = names[:20], names[20:60]
    pairs = [(crops[poses[i // 2]][0], y, crops[y][1]) for i, y in enumerate(idents)]  # each pose, two identities
    out = make_mix_out(tmp_path / "real", pairs, {y: crops[y][:1] for y in idents}, size=SIZE, skipped=0)
    r = evaluate(out, ["realism"], EvalConfig(device="cpu")).results["realism"]
    assert r["n_mixed"] == len(idents) and r["n_real_people"] == len(poses) + len(idents)
    assert abs(r["auc"] - 0.5) < 0.12, r["aucs"]


def _mix_inputs(tmp: Path, people: Path, n_poses: int = 6, n_ids: int = 6) -> tuple[Path, Path]:
    """tmp/poses: one crop of each of the first people (named by person); tmp/ids/<person>/: two crops of others."""
    dirs = sorted(d for d in people.iterdir() if d.is_dir() and len(list(d.glob("*.png"))) >= 2)
    poses, ids = tmp / "poses", tmp / "ids"
    poses.mkdir(parents=True)
    for d in dirs[:n_poses]:
        shutil.copy(sorted(d.glob("*.png"))[0], poses / f"{d.name}.png")
    for d in dirs[n_poses : n_poses + n_ids]:
        (ids / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.png"))[:2]:
            shutil.copy(f, ids / d.name / f.name)
    return poses, ids


def test_paste_run_end_to_end(people, tmp_path):
    from g2g.config import EvalConfig, MixConfig
    from g2g.eval import evaluate
    from g2g.mix import mix_folders

    poses, ids = _mix_inputs(tmp_path, people)
    out = tmp_path / "out"
    mix_folders(poses, ids, out, MixConfig(method="paste", aligned=True, size=SIZE, fmt="png"), progress=False)
    rep = evaluate(out, ["realism"], EvalConfig(device="cpu"))
    r = rep.results["realism"]
    assert r["n_mixed"] == 36 and r["n_real"] == 6 + 12 and r["n_real_people"] == 12
    assert 0.5 < r["auc"] <= 1.0 and 0.0 <= r["control_auc"] <= 1.0 and r["folds"] >= 2
    assert r["fd"] > 0 and r["fd_control"] > 0 and "principal components" in r["fd_space"]
    assert "1024 texture statistics" in r["features"]
    with open(out / "eval" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    scores = [float(row["realism_detectability"]) for row in rows]
    assert len(scores) == 36 and all(0.0 <= s <= 1.0 for s in scores)
    assert (out / "eval" / "realism_examples.png").stat().st_size > 0
    assert rep.files["realism_examples"].endswith("realism_examples.png")
    table = str([c for col in rep.table().columns for c in col._cells])
    assert "realism" in table and "cannot tell these faces from real photos" in table
    # real faces from a prepare folder instead of the run's own crops
    other = evaluate(out, ["realism"], EvalConfig(device="cpu", real=str(people), out_dir=str(tmp_path / "ev")))
    r = other.results["realism"]
    assert r["real_source"] == str(people) and r["n_real"] == len(list(people.glob("*/*.png")))
    assert r["n_real_people"] >= 50 and r["auc"] is not None


def test_too_few_faces_and_a_foreign_zoom(people, tmp_path):
    from g2g.config import EvalConfig, MixConfig
    from g2g.eval import EvalError, evaluate
    from g2g.io.files import atomic_write_json
    from g2g.mix import mix_folders

    poses, ids = _mix_inputs(tmp_path, people, n_poses=2, n_ids=2)
    out = tmp_path / "out"
    mix_folders(poses, ids, out, MixConfig(method="paste", aligned=True, size=SIZE, fmt="png"), progress=False)
    rep = evaluate(out, ["realism"], EvalConfig(device="cpu"))
    assert rep.results["realism"]["auc"] is None and "only 4 mixed faces" in rep.results["realism"]["skipped"]
    assert any(n.startswith("realism skipped") for n in rep.notes)
    rep.table()
    poses, ids = _mix_inputs(tmp_path / "one", people, n_poses=1, n_ids=12)  # 12 mixes of a single pose photo
    mix_folders(poses, ids, tmp_path / "one" / "out", MixConfig(method="paste", aligned=True, size=SIZE, fmt="png"),
                progress=False)
    one = evaluate(tmp_path / "one" / "out", ["realism"], EvalConfig(device="cpu")).results["realism"]
    assert one["auc"] is None and "from 1 pose photo" in one["skipped"]
    other = tmp_path / "other"
    shutil.copytree(people, other)
    atomic_write_json(other / "prepare_config.json", {"size": SIZE, "zoom": 1.0})
    poses, ids = _mix_inputs(tmp_path / "b", people)
    out = tmp_path / "out_b"
    mix_folders(poses, ids, out, MixConfig(method="paste", aligned=True, size=SIZE, fmt="png"), progress=False)
    with pytest.raises(EvalError, match=r"zoom 1,.*--zoom 1\.3"):
        evaluate(out, ["realism"], EvalConfig(device="cpu", real=str(other)))
