"""``g2g mix``: pairing, caching, paste-back geometry, resume, shards, bad inputs, CLI."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import pose_and_id_folders
from g2g.bundle import Bundle, BundleError, open_bundle
from g2g.faces.preprocess import to_image, to_input
from g2g.config import MixConfig
from g2g.io.files import read_jsonl
from g2g.mix import MixError, latest_records, mix_folders
from g2g.pairing import PairingError, build_plan, group_identities, parse_shard, shard
from g2g.faces.paste_back import feather_mask, paste_back

ALIGNED = MixConfig(aligned=True, fmt="png", workers=2, batch_size=5)


# ----------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from dataclasses import asdict

    from g2g.config import TrainConfig, model_preset
    from g2g.export.onnx_export import export_bundle
    from g2g.train.checkpoint import save_checkpoint
    from g2g.train.model import Generator

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("mixmodel")
    cfg = model_preset("tiny")  # untrained, 64 px
    gen = Generator(cfg).state_dict()
    save_checkpoint(root / "run" / "checkpoints" / "last.pt",
                    {"config": asdict(TrainConfig(model=cfg)), "step": 1, "generator": gen, "generator_ema": gen})
    export_bundle(root / "run", root / "model", identity=False)
    return root / "model"


@pytest.fixture(scope="module")
def crops(tmp_path_factory, prepared_small) -> tuple[Path, Path]:
    """POSES: 4 aligned crops (flat, from 4 people); IDS: 3 identity folders of 2 crops each."""
    people = sorted(d for d in prepared_small.iterdir() if d.is_dir())
    return pose_and_id_folders(tmp_path_factory.mktemp("crops"), people[:4], people[3:6], 2, "*.png", last=True)


def snapshot(folder: Path) -> dict[str, float]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------------------ pairing
POSES = ["a/1.jpg", "a/2.jpg", "b/1.jpg", "carol.jpg", "x/dave.jpg"]
IDS = group_identities(["a/p.jpg", "a/q.jpg", "b/r.jpg", "carol.jpg", "zed.png"])


def test_pairing_all_zip_byname():
    assert list(IDS) == ["a", "b", "carol", "zed"] and IDS["a"] == ["a/p.jpg", "a/q.jpg"]
    p = build_plan(POSES, IDS, "all").pairs
    assert len(p) == 20 and len(set(p)) == 20 and p[:4] == [("a/1.jpg", n) for n in ["a", "b", "carol", "zed"]]
    z = build_plan(POSES, IDS, "zip").pairs
    assert z == [("a/1.jpg", "a"), ("a/2.jpg", "b"), ("b/1.jpg", "carol"), ("carol.jpg", "zed"), ("x/dave.jpg", "a")]
    plan = build_plan(POSES, IDS, "by-name")
    assert plan.pairs == [("a/1.jpg", "a"), ("a/2.jpg", "a"), ("b/1.jpg", "b"), ("carol.jpg", "carol")]
    assert "1 of 5 poses match no identity" in plan.notes[0]
    with pytest.raises(PairingError, match="no pose matches"):
        build_plan(["q.jpg"], IDS, "by-name")
    with pytest.raises(PairingError, match="--pairs must be"):
        build_plan(POSES, IDS, "everything")


def test_pairing_random_is_deterministic_and_stable():
    a = build_plan(POSES, IDS, "random", per_pose=2, seed=3).pairs
    assert a == build_plan(list(reversed(POSES)), IDS, "random", per_pose=2, seed=3).pairs
    assert len(a) == 10 and all(c == 2 for c in Counter(p for p, _ in a).values())
    assert len(set(a)) == 10
    # a pose's draw depends only on (seed, its path): adding poses does not change it
    more = build_plan(POSES + ["zz/new.jpg"], IDS, "random", per_pose=2, seed=3).pairs
    assert [pr for pr in more if pr[0] != "zz/new.jpg"] == a
    draws = {tuple(build_plan(POSES, IDS, "random", per_pose=2, seed=s).pairs) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    capped = build_plan(POSES, IDS, "random", per_pose=9, seed=0)
    assert len(capped.pairs) == 20 and "using 4" in capped.notes[0]


def test_pairing_csv(tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text("pose,identity\ncarol.jpg,a\na/1.jpg,zed\n\ncarol.jpg,b\ncarol.jpg,a\n")
    # grouped by pose in order of first appearance, duplicates dropped
    assert build_plan(POSES, IDS, str(f)).pairs == [("carol.jpg", "a"), ("carol.jpg", "b"), ("a/1.jpg", "zed")]
    f.write_text("a/1.jpg,nobody\n")
    with pytest.raises(PairingError, match=r"pairs.csv:1: identity 'nobody'"):
        build_plan(POSES, IDS, str(f))
    f.write_text("pose,identity\nmissing.jpg,a\n")
    with pytest.raises(PairingError, match=r"pairs.csv:2: pose 'missing.jpg'"):
        build_plan(POSES, IDS, str(f))
    with pytest.raises(PairingError, match="does not exist"):
        build_plan(POSES, IDS, str(tmp_path / "none.csv"))


@pytest.mark.parametrize("mode", ["all", "zip", "random"])
def test_shards_cover_the_plan_exactly(mode):
    poses = [f"p{i:03d}.jpg" for i in range(37)]
    ids = group_identities([f"id{j}.jpg" for j in range(5)])
    plan = build_plan(poses, ids, mode, per_pose=3).pairs
    for n in (1, 2, 3, 7, 50):
        parts = [shard(plan, i, n) for i in range(1, n + 1)]
        assert [pr for part in parts for pr in part] == plan  # union in order, no overlap
        owner = {}
        for i, part in enumerate(parts):
            for p, _ in part:
                assert owner.setdefault(p, i) == i  # a pose is never split across shards
        if n <= len(poses):
            sizes = [len(x) for x in parts]
            assert max(sizes) - min(sizes) <= 2 * max(Counter(p for p, _ in plan).values())  # balanced
    assert shard(plan, 1, 3) == shard(list(plan), 1, 3)  # deterministic
    assert parse_shard("2/8") == (2, 8)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(PairingError):
            parse_shard(bad)


# -------------------------------------------------------------------------------------------------------- paste-back
def test_paste_back_lands_where_the_face_was():
    rng = np.random.default_rng(0)
    H, W, S = 260, 320, 64
    photo = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 3)  # smooth texture
    a, s = np.deg2rad(25), 0.55  # a known similarity: rotate, scale, and put the face centre at (170, 120)
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    M = np.hstack([R, ((S - 1) / 2 - R @ np.array([170.0, 120.0]))[:, None]])  # photo -> crop, (2, 3)
    crop = cv2.warpAffine(photo, M, (S, S), flags=cv2.INTER_LINEAR)

    # 1. a white crop pasted into a black photo: its centre maps back to M^-1(crop centre)
    white = paste_back(np.zeros_like(photo), np.full((S, S, 3), 255, np.uint8), M, feather=0.0)[..., 0]
    ys, xs = np.nonzero(white > 127)
    inv = cv2.invertAffineTransform(M)
    centre = inv @ np.array([(S - 1) / 2, (S - 1) / 2, 1.0])
    assert np.allclose(centre, [170, 120])
    assert abs(xs.mean() - centre[0]) < 0.5 and abs(ys.mean() - centre[1]) < 0.5
    assert abs(len(xs) - S * S / s**2) / (S * S / s**2) < 0.03  # area scales by 1/s^2

    # 2. the crop taken out of a photo, pasted back into a blank one, reproduces the photo there
    back = paste_back(np.zeros_like(photo), crop, M, feather=0.0).astype(int)
    inside = cv2.erode((white > 127).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert inside.sum() > 5000
    assert np.abs(back[inside] - photo[inside].astype(int)).mean() < 4.0
    # pixels away from the crop are untouched
    far = cv2.dilate((white > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    assert (back[far] == 0).all()

    # 3. the feathered mask is 1 inside, soft at the edge
    m = feather_mask(S, 0.1)
    assert m[S // 2, S // 2] == 1.0 and 0 < m[S // 2, 1] < 0.5 and m[0, 0] < 0.05
    soft = paste_back(np.zeros_like(photo), np.full((S, S, 3), 255, np.uint8), M, feather=0.1)[..., 0]
    assert ((soft > 10) & (soft < 245)).sum() > 200 and soft[int(centre[1]), int(centre[0])] == 255


# ----------------------------------------------------------------------------------------------- caching and outputs
def test_each_pose_and_identity_encoded_once(tmp_path, model_dir, crops, monkeypatch):
    poses, ids = crops
    rows: Counter = Counter()
    shapes: list[tuple] = []
    for name in ("encode_content", "encode_class", "decode"):
        orig = getattr(Bundle, name)

        def wrapped(self, *args, _orig=orig, _name=name):
            rows[_name] += len(args[0])
            shapes.append((_name, args[0].shape))
            return _orig(self, *args)

        monkeypatch.setattr(Bundle, name, wrapped)
    rep = mix_folders(poses, ids, tmp_path / "out", ALIGNED, model_dir=model_dir, progress=False)
    assert rep.planned == 12 and rep.written == 12 and not rep.any_skips
    assert rows == {"encode_content": 4, "encode_class": 3, "decode": 12}  # N + M encodings, N x M decodes
    assert ("encode_class", (3, 2, 3, 64, 64)) in shapes  # K = 2 photos averaged inside the class encoder
    assert rep.poses_encoded == 4 and rep.identities_encoded == 3


def test_mixed_crop_is_the_model_output(tmp_path, model_dir, crops):
    poses, ids = crops
    out = tmp_path / "out"
    rep = mix_folders(poses, ids, out, replace(ALIGNED, grid=True), model_dir=model_dir, progress=False)
    recs = list(read_jsonl(out / "manifest.jsonl"))
    assert len(recs) == 12 and all(r["status"] == "ok" for r in recs)
    run = json.loads((out / "run.json").read_text())
    assert run["providers"] == ["CPUExecutionProvider"] and run["align"]["size"] == 64
    assert run["poses_root"] == str(poses.resolve()) and run["mix"]["aligned"] is True
    r = next(r for r in recs if r["pose"] == sorted(p.name for p in poses.iterdir())[0])
    assert r["output"] == f"{Path(r['pose']).stem}__{r['identity']}.png" == r["mixed_crop"]
    assert r["pose_crop"] == f"aligned/poses/{Path(r['pose']).stem}.png" and r["affine"] is None
    assert r["identity_crops"] == [f"aligned/ids/{r['identity']}/{Path(s).stem}.png" for s in r["identity_sources"]]
    assert r["model_sha256"] == run["model_sha256"] and len(r["identity_sources"]) == 2
    # recompute with the bundle directly
    b = open_bundle(model_dir, "cpu")
    load = lambda p: np.asarray(Image.open(p).convert("RGB"))  # noqa: E731
    pose = to_input(load(poses / r["pose"])[None])
    idk = to_input(np.stack([load(ids / s) for s in r["identity_sources"]]))[None]  # (1, K, 3, S, S)
    want = to_image(b.decode(b.encode_content(pose), b.encode_class(idk)))[0]
    got = load(out / r["output"])
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert rep.grid is not None and Image.open(rep.grid).size[0] > 4 * 64


def test_raw_photos_paste_back_and_skip_reasons(tmp_path, model_dir, raw_small):
    """Detect + align raw photos, paste back into the pose photo; bad sources give reasons, never a crash."""
    people = sorted(d for d in raw_small.iterdir() if d.is_dir())
    poses, ids = tmp_path / "poses", tmp_path / "ids"
    (poses / "sub").mkdir(parents=True)
    shutil.copy(sorted(people[0].glob("*.jpg"))[0], poses / "p0.jpg")
    shutil.copy(sorted(people[1].glob("*.jpg"))[0], poses / "sub" / "p1.jpg")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(poses / "wall.jpg")  # no face
    (poses / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for d in people[2:4]:
        (ids / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.jpg"))[:2]:
            shutil.copy(f, ids / d.name / f.name)
    (ids / "ghost").mkdir()
    Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(ids / "ghost" / "blank.png")
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    rep = mix_folders(poses, ids, out, MixConfig(workers=2, min_score=0.9), model_dir=model_dir, progress=False)

    assert all(snapshot(tmp_path).get(k) == v for k, v in before.items())  # inputs untouched
    recs = latest_records(out)
    assert len(recs) == 4 * 3 == rep.planned
    ok = [r for r in recs.values() if r["status"] == "ok"]
    assert rep.written == len(ok) == 4  # 2 good poses x 2 good identities
    reasons = Counter(r["reason"] for r in recs.values() if r["status"] != "ok")
    assert reasons["no-face"] >= 3 + 2  # wall.jpg x 3 identities, ghost x 2 good poses
    assert sum(reasons.values()) == 8 and set(reasons) <= {"no-face", "corrupt", "truncated", "not-an-image"}
    assert rep.bad_sources[("pose", "no-face")] == 1 and rep.bad_sources[("identity", "no-face")] == 1
    assert rep.any_skips
    for r in ok:
        photo = np.asarray(Image.open(poses / r["pose"]).convert("RGB"))
        pasted = np.asarray(Image.open(out / r["output"]).convert("RGB"))
        assert pasted.shape == photo.shape and r["output"].endswith(f"__{r['identity']}.jpg")
        assert Path(r["output"]).parent == Path(r["pose"]).parent  # pose folder structure kept
        assert (out / r["mixed_crop"]).is_file() and r["mixed_crop"].startswith("aligned/mixed/")
        assert (out / r["pose_crop"]).is_file() and all((out / c).is_file() for c in r["identity_crops"])
        M = np.asarray(r["affine"])
        assert M.shape == (2, 3)
        # outside the pasted square, the photo is unchanged (up to JPEG re-encoding)
        H, W = photo.shape[:2]
        ys, xs = np.mgrid[0:H, 0:W]
        cx = M[0, 0] * xs + M[0, 1] * ys + M[0, 2]
        cy = M[1, 0] * xs + M[1, 1] * ys + M[1, 2]
        outside = (cx < -4) | (cx > 68) | (cy < -4) | (cy > 68)
        inside = (cx > 16) & (cx < 48) & (cy > 16) & (cy < 48)
        d = np.abs(pasted.astype(int) - photo.astype(int)).mean(axis=2)
        assert d[outside].mean() < 3 and d[inside].mean() > 10


# ------------------------------------------------------------------------------------------------------------ resume
def test_resume_after_kill(tmp_path, model_dir, crops, monkeypatch):
    import g2g.mix.pairs as mixmod

    poses, ids = crops
    out = tmp_path / "out"
    real = mixmod.atomic_save_image
    count = {"n": 0}

    def dying(path, image, **kw):
        if "__" in Path(path).name:
            count["n"] += 1
            if count["n"] > 5:
                raise RuntimeError("simulated kill")
        return real(path, image, **kw)

    monkeypatch.setattr(mixmod, "atomic_save_image", dying)
    with pytest.raises(RuntimeError, match="simulated kill"):
        mix_folders(poses, ids, out, replace(ALIGNED, workers=1), model_dir=model_dir, progress=False)
    monkeypatch.setattr(mixmod, "atomic_save_image", real)
    first = {k: r for k, r in latest_records(out).items() if r["status"] == "ok"}
    assert 5 <= len(first) < 12
    kept = {r["output"]: (out / r["output"]).stat().st_mtime_ns for r in first.values()}
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"status": "ok", "pose": "torn')  # a line cut short by the kill

    rep = mix_folders(poses, ids, out, ALIGNED, model_dir=model_dir, progress=False)
    assert rep.resumed == len(first) and rep.written == 12 - len(first)
    assert rep.poses_encoded <= 4
    recs = latest_records(out)
    assert sum(r["status"] == "ok" for r in recs.values()) == 12
    assert all((out / r["output"]).is_file() for r in recs.values())
    assert {o: (out / o).stat().st_mtime_ns for o in kept} == kept  # earlier outputs untouched
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line was cut, no merged lines

    # a third run has nothing left to do; a deleted output is redone
    (out / first[next(iter(first))]["output"]).unlink()
    rep3 = mix_folders(poses, ids, out, ALIGNED, model_dir=model_dir, progress=False)
    assert rep3.resumed == 11 and rep3.written == 1


def test_shards_share_one_out(tmp_path, model_dir, crops):
    poses, ids = crops
    out = tmp_path / "out"
    written = 0
    for i in (1, 2, 3):
        rep = mix_folders(poses, ids, out, replace(ALIGNED, shard=f"{i}/3"), model_dir=model_dir, progress=False)
        assert rep.total_plan == 12 and rep.resumed == 0
        written += rep.written
    recs = list(read_jsonl(out / "manifest.jsonl"))
    assert written == 12 and len(recs) == 12 and len({(r["pose"], r["identity"]) for r in recs}) == 12


def test_out_inside_poses_is_not_read_back(tmp_path, model_dir, crops):
    poses_src, ids = crops
    poses = tmp_path / "poses"
    shutil.copytree(poses_src, poses)
    out = poses / "mixed"
    r1 = mix_folders(poses, ids, out, replace(ALIGNED, pairs="zip"), model_dir=model_dir, progress=False)
    r2 = mix_folders(poses, ids, out, replace(ALIGNED, pairs="zip"), model_dir=model_dir, progress=False)
    assert r1.planned == r2.planned == 4 and r2.resumed == 4


# -------------------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_are_one_line_errors(tmp_path, model_dir, crops):
    poses, ids = crops
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    other = tmp_path / "other"  # one identity, named like no pose
    other.mkdir()
    shutil.copy(next(poses.iterdir()), other / "zzz.png")
    cases = [
        (dict(poses=empty, ids=ids), MixError, "no images found under POSES"),
        (dict(poses=poses, ids=empty), MixError, "no images found under IDS"),
        (dict(poses=tmp_path / "missing", ids=ids), MixError, "is not a folder"),
        (dict(poses=poses, ids=ids, cfg=replace(ALIGNED, shard="5/3")), PairingError, "1 <= i <= n"),
        (dict(poses=poses, ids=other, cfg=replace(ALIGNED, pairs="by-name")), PairingError, "no pose matches"),
        (dict(poses=poses, ids=ids, cfg=replace(ALIGNED, faces="many")), MixError, "--faces"),
        (dict(poses=poses, ids=ids, model_dir=tmp_path / "nomodel"), BundleError, "does not exist"),
        (dict(poses=poses, ids=ids, cfg=replace(ALIGNED, device="gpu")), MixError, "unknown device"),
    ]
    for kw, exc, msg in cases:
        kw = {"out": tmp_path / "out", "cfg": ALIGNED, "model_dir": model_dir, **kw}
        with pytest.raises(exc, match=msg) as e:
            mix_folders(kw["poses"], kw["ids"], kw["out"], kw["cfg"], model_dir=kw["model_dir"], progress=False)
        assert "\n" not in str(e.value)


def test_cuda_request_says_why_not(model_dir):
    b = open_bundle(model_dir, "cuda")
    if "CUDAExecutionProvider" in b.providers:
        pytest.skip("a usable GPU is here")
    assert b.providers == ["CPUExecutionProvider"] and b.note.startswith("CUDA not used:") and not b.io_binding


def test_io_binding_path_matches_plain_run(model_dir):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 64, 64)).astype(np.float32)
    plain = open_bundle(model_dir, "cpu", batch_size=2)
    bound = open_bundle(model_dir, "cpu", batch_size=2, io_binding=True)
    c = plain.encode_content(x)
    assert np.array_equal(c, bound.encode_content(x))
    z = plain.encode_class(x[:, None])
    assert np.array_equal(plain.decode(c, z), bound.decode(c, z))


# ---------------------------------------------------------------------------------------------------------------- CLI
def test_cli(tmp_path, model_dir, crops):
    from typer.testing import CliRunner

    from conftest import cli_error
    from g2g.cli import app

    poses, ids = crops
    bad = tmp_path / "ids"
    shutil.copytree(ids, bad)
    (bad / "broken.png").write_bytes(b"")  # an identity whose only photo is empty
    runner = CliRunner()
    args = ["mix", str(poses), str(bad), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--aligned",
            "--grid", "--pairs", "random", "--per-pose", "2", "--format", "png", "--batch-size", "3"]
    res = runner.invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "grid.jpg").is_file()
    summary = json.loads(res.stdout)  # --json: the summary alone on stdout
    assert summary["written"] + summary["n_skipped"] == summary["planned"] == 8
    recs = list(read_jsonl(tmp_path / "out" / "manifest.jsonl"))
    assert len(recs) == 8 and any(r["reason"] == "empty-file" for r in recs)  # seed 0 draws 'broken'
    res = runner.invoke(app, args + ["--strict"])  # resumes; the empty photo is skipped again
    assert res.exit_code == 1
    import g2g.bundle

    with pytest.MonkeyPatch.context() as mp:  # as on an install without the shipped model
        mp.setattr(g2g.bundle, "DEFAULT_MODEL_DIR", tmp_path / "no-model")
        res = runner.invoke(app, ["mix", str(poses), str(ids), "-o", str(tmp_path / "o2"), "--method", "model"])
    cli_error(res, 3, "no default model ships yet")


def test_same_stem_poses_get_distinct_outputs(tmp_path, model_dir, crops):
    poses_src, ids = crops
    poses = tmp_path / "poses"
    poses.mkdir()
    first = sorted(poses_src.iterdir())[0]
    shutil.copy(first, poses / "x.png")
    Image.open(first).save(poses / "x.jpg")
    rep = mix_folders(poses, ids, tmp_path / "out", ALIGNED, model_dir=model_dir, progress=False)
    outs = {r["output"] for r in latest_records(tmp_path / "out").values()}
    assert rep.written == 6 and len(outs) == 6 and any(o.startswith("x_jpg__") for o in outs)
