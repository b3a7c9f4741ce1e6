"""``g2g eval``: metric functions on known numbers, then the evaluator on constructed mix folders.

The constructed OUT folders follow the output format g2g mix writes (g2gcli/mix/),
built from real aligned crops (``prepared_small``, skipped without ../shared) so
the real identity network and the real MTCNN measure them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from g2g.eval import metrics as M

# --- metrics.py ---------------------------------------------------------------------------------------------------


def test_retrieval_topk_on_known_matrix():
    # 4 queries x 6 gallery items; higher = better
    scores = np.array([
        [0.9, 0.1, 0.2, 0.3, 0.0, 0.0],  # truth 0: rank 0
        [0.5, 0.4, 0.6, 0.7, 0.1, 0.0],  # truth 1: 3 items above -> rank 3
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # truth 0: worst of 6 -> rank 5
        [0.5, 0.5, 0.1, 0.1, 0.1, 0.1],  # truth 1: tie with item 0 counts against -> rank 1
    ])
    truth = np.array([0, 1, 0, 1])
    ranks = M.retrieval_ranks(scores, truth)
    assert ranks.tolist() == [0, 3, 5, 1]
    assert M.top_k_accuracy(ranks, 1) == 0.25
    assert M.top_k_accuracy(ranks, 5) == 0.75
    # distances: lower is better, same answer for the negated matrix
    assert M.retrieval_ranks(-scores, truth, higher_is_better=False).tolist() == [0, 3, 5, 1]
    assert M.top_k_accuracy(np.array([]), 1) is None


def test_similarity_matrices_and_auc():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8))
    assert np.allclose(np.diag(M.cosine_matrix(a, a)), 1.0)
    assert np.allclose(np.diag(M.euclidean_matrix(a, a)), 0.0, atol=1e-6)
    assert np.allclose(M.euclidean_matrix(a, a[::-1])[0, 0], np.linalg.norm(a[0] - a[-1]))
    assert np.allclose(M.rowwise_cosine(a, 2 * a), 1.0)
    assert M.roc_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert M.roc_auc([0, 1], [2, 3]) == 0.0
    assert M.roc_auc([1, 1], [1, 1]) == 0.5
    assert M.roc_auc([], [1]) is None
    assert M.verification_rate(np.array([0.1, 0.5, 0.7, np.nan]), 0.6) == pytest.approx(2 / 3)
    s = M.stats([1.0, 2.0, np.nan, 3.0])
    assert s["n"] == 3 and s["mean"] == 2.0
    assert M.stats([])["mean"] is None


def test_head_pose_frontal_template_is_zero_and_signs():
    from g2g.config import AlignConfig

    for size, zoom in [(64, 1.3), (128, 1.0), (256, 1.5)]:
        tmpl = np.array(AlignConfig(size, zoom).template())[None]
        assert np.abs(M.head_pose(tmpl)).max() < 1e-6
    # synthetic turns of the generic 3D face come back with their sign and size
    for yaw, pitch, roll in [(20, 0, 0), (-25, 0, 0), (0, 15, 0), (0, -10, 0), (0, 0, 12), (-30, 10, 5)]:
        est = M.head_pose(M.project_face_model(yaw, pitch, roll, scale=0.5, centre=(32, 32))[None])[0]
        assert np.allclose(est, (yaw, pitch, roll), atol=0.5), (yaw, pitch, roll, est)
    pts = M.project_face_model(yaw=20)
    assert pts[2, 0] > pts[[0, 1, 3, 4], 0].mean()  # yaw > 0: nose toward the image's right
    assert M.head_pose(np.full((1, 5, 2), np.nan)).shape == (1, 3)
    assert np.isnan(M.head_pose(np.full((1, 5, 2), np.nan))).all()
    assert M.angle_difference(np.array([179.0]), np.array([-179.0]))[0] == pytest.approx(2.0)


def test_landmark_error_normalised_by_interocular():
    ref = np.array(M.project_face_model(scale=1.0))[None]  # IOD ~61 units
    assert M.landmark_error(ref, ref)[0] == 0.0
    shifted = ref + np.array([3.0, 4.0])  # every point 5 units away
    assert M.landmark_error(shifted, ref)[0] == pytest.approx(5.0 / M.interocular(ref)[0])


def test_psnr_cap_and_ssim():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert M.psnr(a, a) == M.PSNR_CAP_DB == 100.0
    b = a.astype(np.int16)
    b[0, 0, 0] = (b[0, 0, 0] + 128) % 256
    p = M.psnr(a, b.astype(np.uint8))
    assert 30 < p < M.PSNR_CAP_DB
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.ssim(a, 255 - a) < 0.5
    with pytest.raises(ValueError):
        M.psnr(a, a[:16])


# --- constructed mix runs -----------------------------------------------------------------------------------------


def _crops_by_identity(prepared: Path) -> dict[str, list[Path]]:
    from g2g.prepare import read_manifest

    out: dict[str, list[Path]] = {}
    for r in read_manifest(prepared):
        out.setdefault(r["identity"], []).append(prepared / r["output"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def make_mix_out(out: Path, pairs: list[tuple[Path, str, Path]], gallery: dict[str, list[Path]], size: int = 64,
                 skipped: int = 1, missing: int = 0) -> Path:
    """A mix OUT as g2g mix writes it: ``pairs`` = (pose crop, identity, mixed crop), crops copied in.

    Pose rel paths keep a per-person folder (``<person>/<stem>.jpg``), as a celeba-wild POSES folder would.
    ``skipped`` adds that many "skipped" lines; ``missing`` ok lines whose mixed crop is absent.
    """
    import shutil

    from g2g.config import AlignConfig, MixConfig
    from g2g.io.files import append_jsonl, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    align = AlignConfig(size=size, zoom=1.3)
    atomic_write_json(out / "run.json", {
        "poses_root": "/poses", "ids_root": "/ids", "model_dir": None, "model_sha256": "0" * 64,
        "mix": {**__import__("dataclasses").asdict(MixConfig()), "crop_only": True},
        "align": {"size": size, "zoom": 1.3, "template": align.template()}, "providers": ["CPUExecutionProvider"],
        "version": "test",
    })
    id_rel: dict[str, list[str]] = {}
    for name, crops in gallery.items():
        for c in crops:
            rel = f"aligned/ids/{name}/{c.stem}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(c, out / rel)
            id_rel.setdefault(name, []).append(rel)
    recs = []
    for pose, identity, mixed in pairs:
        pose_rel = f"{pose.parent.name}/{pose.stem}.jpg"
        pc = f"aligned/poses/{pose.parent.name}/{pose.stem}.png"
        (out / pc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pose, out / pc)
        mc = f"{pose.parent.name}/{pose.stem}__{identity}.png"
        (out / mc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mixed, out / mc)
        recs.append({"status": "ok", "reason": None, "message": "", "pose": pose_rel, "identity": identity,
                     "identity_sources": [f"{identity}/{Path(r).stem}.jpg" for r in id_rel[identity]],
                     "output": mc, "mixed_crop": mc, "pose_crop": pc, "identity_crops": id_rel[identity],
                     "affine": None, "model_sha256": "0" * 64, "settings_sha256": "1" * 64})
    for k in range(missing):
        recs.append({**recs[k], "pose": f"gone/missing{k}.jpg", "mixed_crop": f"gone/missing{k}.png",
                     "output": f"gone/missing{k}.png"})
    for k in range(skipped):
        ident = next(iter(gallery))
        recs.append({"status": "skipped", "reason": "no-face", "message": "MTCNN found no face",
                     "pose": f"blank/empty{k}.jpg", "identity": ident, "identity_sources": [], "output": None,
                     "mixed_crop": None, "pose_crop": None, "identity_crops": [], "affine": None,
                     "model_sha256": "0" * 64, "settings_sha256": "1" * 64})
    append_jsonl(out / "manifest.jsonl", recs)
    return out


@pytest.fixture(scope="module")
def crops(prepared_small) -> dict[str, list[Path]]:
    c = {k: v for k, v in _crops_by_identity(prepared_small).items() if len(v) >= 5}
    if len(c) < 4:
        pytest.skip(f"only {len(c)} identities with 5 aligned crops in prepared_small")
    return c


def _cfg(tmp: Path, **kw):
    from g2g.config import EvalConfig

    return EvalConfig(**{"device": "cpu", "batch_size": 16, "out_dir": str(tmp / "eval"), **kw})


def test_identical_images_give_similarity_one_and_zero_landmark_error(crops, tmp_path):
    from g2g.eval import evaluate

    names = list(crops)[:4]
    gallery = {n: [crops[n][0]] for n in names}  # one crop per identity: its mean is the crop itself
    pairs = [(crops[n][0], n, crops[n][0]) for n in names]  # output = pose = identity
    out = make_mix_out(tmp_path / "same", pairs, gallery, skipped=2, missing=1)
    rep = evaluate(out, ["all"], _cfg(tmp_path))
    assert rep.counts["ok"] == 4 and rep.counts["n_skipped"] == 3
    assert rep.counts["skipped"] == {"eval:missing-crop": 1, "no-face": 2}
    s = rep.results["id-sim"]["dlib"]
    assert s["n_outputs"] == 4
    assert s["dist_to_identity"]["mean"] < 1e-4
    assert s["cos_to_identity"]["mean"] > 1 - 1e-6
    assert s["nearest_identity_accuracy"] == 1.0
    assert rep.results["id-retrieval"]["dlib"]["top1"] == 1.0
    # one crop per identity: no same-person reference, and the report says so
    assert s["reference"]["same_person"]["n"] == 0
    assert any("no identity has 2 or more crops" in n for n in rep.notes)
    p = rep.results["pose"]
    assert p["n_measured"] == 4 and p["face_found_in_output"] == 1.0
    assert p["landmark_error"]["mean"] == 0.0 and p["d_yaw"]["mean"] == 0.0
    assert rep.networks[0]["name"] == "dlib" and "dlib" in json.dumps(rep.to_dict())
    csv_rows = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 4 + 3  # header, ok rows, skipped lines and the ok line whose crop is gone
    assert sum(",eval:missing-crop" in r for r in csv_rows) == 1
    for f in ("id_sim_hist.png", "examples.png", "report.json", "per_image.csv"):
        assert (tmp_path / "eval" / f).stat().st_size > 0
    # a later run of fewer metrics into the same folder keeps the earlier ones in report.json
    evaluate(out, ["pose"], _cfg(tmp_path))
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert {"id-sim", "id-retrieval", "pose"} <= set(saved["results"]) and "id-sim" in saved["kept_from_earlier_run"]


def _good_and_swapped(crops, tmp_path):
    names = list(crops)
    gallery = {n: crops[n][:3] for n in names}
    # a working model: the output of (pose of x, identity y) looks like y (an unseen photo of y)
    good = [(crops[x][4], y, crops[y][3]) for x in names for y in names if x != y]
    # a model that ignores the identity: the output is the pose photo of x
    swapped = [(crops[x][4], y, crops[x][4]) for x in names for y in names if x != y]
    return (make_mix_out(tmp_path / "good", good, gallery), make_mix_out(tmp_path / "swapped", swapped, gallery))


def test_swapped_identities_are_detected(crops, tmp_path):
    from g2g.eval import evaluate

    good_out, swapped_out = _good_and_swapped(crops, tmp_path)
    good = evaluate(good_out, ["id-sim", "id-retrieval"], _cfg(tmp_path / "g"))
    bad = evaluate(swapped_out, ["id-sim,id-retrieval"], _cfg(tmp_path / "b"))
    gs, bs = good.results["id-sim"]["dlib"], bad.results["id-sim"]["dlib"]
    assert gs["nearest_identity_accuracy"] >= 0.8
    assert bs["nearest_identity_accuracy"] <= 0.2
    assert good.results["id-retrieval"]["dlib"]["top1"] >= 0.8
    assert bad.results["id-retrieval"]["dlib"]["top1"] <= 0.2
    # the swapped outputs sit at the different-person level of the real photos, the good ones near same-person
    assert bs["identity_level"] < 0.3 < 0.6 < gs["identity_level"]
    assert bs["dist_to_pose"]["mean"] < 1e-4 and bs["closer_to_identity_than_pose"] == 0.0
    assert gs["closer_to_identity_than_pose"] >= 0.8
    ref = gs["reference"]
    assert ref["same_person"]["n"] > 0 and ref["different_person"]["n"] > 0
    assert ref["same_person"]["mean"] < 0.6 < ref["different_person"]["mean"]  # dlib's threshold separates real pairs
    assert "pose" not in good.results and good.counts["n_skipped"] == 1


def test_every_metric_handles_an_all_skipped_run(crops, tmp_path):
    from g2g.eval import evaluate

    names = list(crops)[:3]
    out = make_mix_out(tmp_path / "none", [], {n: crops[n][:2] for n in names}, skipped=3)
    rep = evaluate(out, ["all"], _cfg(tmp_path, json=str(tmp_path / "r.json")))
    assert rep.counts == {"planned": 3, "ok": 0, "skipped": {"no-face": 3}, "n_skipped": 3, "identities": 1}
    assert rep.results["id-sim"]["dlib"]["n_outputs"] == 0
    assert rep.results["id-sim"]["dlib"]["dist_to_identity"]["mean"] is None
    assert rep.results["id-retrieval"]["dlib"]["top1"] is None
    assert rep.results["pose"]["n_measured"] == 0 and rep.results["pose"]["landmark_error"]["mean"] is None
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["n_skipped"] == 3
    rep.table()  # renders with empty numbers


def test_cli_eval_and_one_line_errors(crops, tmp_path):
    from typer.testing import CliRunner

    from conftest import cli_error
    from g2g.cli import app

    good_out, _ = _good_and_swapped(crops, tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(good_out), "--metric", "id-retrieval", "--device", "cpu", "--json",
                              "--out-dir", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # --json: the report alone on stdout, the table on stderr
    assert data["metrics"] == ["id-retrieval"] and data["networks"][0]["name"] == "dlib"
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["metrics"] == ["id-retrieval"]
    old_form = runner.invoke(app, ["eval", str(good_out), "--metric", "id-retrieval", "--json", "out.json"])
    cli_error(old_form, 2, "--json is a flag now")  # the old --json PATH: its path fell into DATA
    assert str(good_out / "eval" / "report.json") in old_form.output
    assert (tmp_path / "ev" / "per_image.csv").exists()
    cli_error(runner.invoke(app, ["eval", str(good_out), "--metric", "nonsense"]), 2, "--metric")  # a usage error
    cli_error(runner.invoke(app, ["eval", str(good_out), "--eval-net", "arcface"]), 2, "--eval-net")
    cli_error(runner.invoke(app, ["eval", str(good_out), "--metric", "recon"]), 3)  # recon of a mix folder: bad input
    cli_error(runner.invoke(app, ["eval", str(tmp_path), "--metric", "id-sim"]), 3, "neither")


def test_facenet_without_weights_is_a_one_line_error(crops, tmp_path):
    from g2g.eval import EvalError, evaluate
    from g2g.weights import path_of

    if path_of("facenet-vggface2").is_file():
        pytest.skip("facenet-vggface2 weights are present here")
    good_out, _ = _good_and_swapped(crops, tmp_path)
    with pytest.raises(EvalError, match="facenet-vggface2"):
        evaluate(good_out, ["id-sim"], _cfg(tmp_path, eval_net="dlib,facenet-vggface2"))


# --- recon --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """An untrained tiny model (64 px, zoom 1.3) exported to ONNX."""
    import dataclasses

    import torch

    from g2g.config import TrainConfig, model_preset
    from g2g.export.onnx_export import export_bundle
    from g2g.train.checkpoint import save_checkpoint
    from g2g.train.model import Generator

    torch.manual_seed(0)
    mcfg = model_preset("tiny")
    gen = Generator(mcfg)
    root = tmp_path_factory.mktemp("tiny")
    sd = gen.state_dict()
    save_checkpoint(root / "ckpt.pt", {"config": dataclasses.asdict(TrainConfig(model=mcfg)), "step": 0,
                                        "generator": sd, "generator_ema": sd})
    export_bundle(root / "ckpt.pt", root / "model", identity=False)
    return root / "model"


@pytest.fixture(scope="module")
def lpips_xdg(tmp_path_factory) -> Path:
    """An XDG cache folder holding the ST-LPIPS ONNX file, exported once (by the subprocess eval itself starts)."""
    from g2g.eval.lpips import cached_lpips_onnx

    xdg = tmp_path_factory.mktemp("xdg")
    cached_lpips_onnx(64, cache_dir=xdg / "g2g")
    return xdg


def test_recon_untrained_model(tiny_bundle, prepared_small, tmp_path, lpips_xdg, monkeypatch):
    from g2g.eval import evaluate

    monkeypatch.setenv("XDG_CACHE_HOME", str(lpips_xdg))
    ids = sorted({r.parent.name for v in _crops_by_identity(prepared_small).values() for r in v})
    split = tmp_path / "run"
    split.mkdir()
    (split / "split.json").write_text(json.dumps({"train": ids[2:], "val": ids[:2]}))
    rep = evaluate(tiny_bundle, ["recon"], _cfg(tmp_path, split=str(split), max_images=8, batch_size=4),
                   data=prepared_small)
    rc = rep.results["recon"]
    assert rc["n_images"] == 8 and "2 validation identities" in rc["held_out"]
    assert "on ONNX Runtime" in rc["lpips"], rc["lpips"]
    for kind in ("self", "cycle", "floor"):
        for m in ("psnr", "ssim", "lpips"):
            assert rc[kind][m]["n"] == 8, (kind, m)
        assert 0 < rc[kind]["psnr"]["mean"] < 100.0 and -1 <= rc[kind]["ssim"]["mean"] <= 1
        assert 0 < rc[kind]["lpips"]["mean"] < 2, kind
    assert rc["self"]["lpips"]["mean"] > 0.05  # an untrained decoder does not reproduce faces
    assert rep.to_dict()["psnr_cap_db"] == 100.0 and rc["psnr_capped"] == 0
    assert (tmp_path / "eval" / "recon_per_image.csv").exists() and (tmp_path / "eval" / "recon_examples.png").exists()
    assert "recon" in rep.metrics and "id-sim" not in rep.results


def test_recon_without_lpips_reports_it_unavailable(tiny_bundle, prepared_small, tmp_path, monkeypatch):
    """No LPIPS file in the cache and no torch to export one: recon still runs and says why LPIPS is missing."""
    import g2g.eval.lpips as lpips
    from g2g.eval import evaluate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(lpips, "torch_installed", lambda: False)
    rep = evaluate(tiny_bundle, ["all"], _cfg(tmp_path, max_images=4, batch_size=4), data=prepared_small)
    rc = rep.results["recon"]
    assert rc["self"]["lpips"]["n"] == 0 and rc["self"]["psnr"]["n"] == 4
    assert rc["lpips"].startswith("LPIPS unavailable") and "pip install 'g2g[train]'" in rc["lpips"]
    assert any("LPIPS unavailable" in w for w in rep.warnings)
    assert not list((tmp_path / "xdg" / "g2g").glob("lpips-*"))


def test_lpips_onnx_matches_pytorch_on_real_crops(prepared_small, lpips_xdg):
    """The cached ONNX graph gives the trainer's ST-LPIPS on real faces: unrelated people, a 2 px shift, the same
    crop; on 64 px crops and on the same crops at 96 px (the graph's spatial side is dynamic)."""
    import torch

    from g2g.eval.lpips import lpips_cache_path, lpips_distance
    from g2g.eval.runs import read_crop
    from g2g.faces.preprocess import resize_to_model, to_input
    from g2g.train.perceptual import load_perceptual

    paths = [v[0] for v in _crops_by_identity(prepared_small).values()][:4]
    a = np.stack([read_crop(p) for p in paths])
    b = np.stack([a[1], np.roll(a[1], 2, axis=1), a[2], a[0]])  # other person, shifted copy, itself, other person
    fn, where = lpips_distance(lpips_cache_path(lpips_xdg / "g2g"), "cpu")
    net = load_perceptual("stlpips")
    for side in (64, 96):
        x = np.stack([resize_to_model(i, side) for i in a]) if side != 64 else a
        y = np.stack([resize_to_model(i, side) for i in b]) if side != 64 else b
        got = fn(x, y)
        with torch.no_grad():
            ref = net(torch.from_numpy(to_input(x)), torch.from_numpy(to_input(y))).numpy()
        assert got.shape == (4,) and where == "cpu"
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
        assert abs(got[2]) < 1e-6 and got[1] < min(got[0], got[3]), got  # same crop ~0, shift < another person
    assert fn(a[:0], b[:0]).shape == (0,)


def test_a_damaged_lpips_file_is_rebuilt(lpips_xdg, tmp_path, monkeypatch):
    """A cached file that no longer matches its sidecar is exported again (once); an intact one is used as is."""
    import shutil
    import subprocess

    import g2g.eval.lpips as lpips
    from g2g.io.cache import intact_file, sidecar

    good = lpips.lpips_cache_path(lpips_xdg / "g2g")
    cache = tmp_path / "g2g"
    cache.mkdir()
    path = cache / good.name
    shutil.copy(sidecar(good), sidecar(path))
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(data))
    assert not intact_file(path)
    runs = []
    real_run = subprocess.run

    def spy(cmd, **kw):
        runs.append(cmd)
        return real_run(cmd, **kw)

    monkeypatch.setattr(lpips.subprocess, "run", spy)
    assert lpips.cached_lpips_onnx(64, cache_dir=cache) == path
    assert len(runs) == 1 and runs[0][1:3] == ["-m", "g2g.export.lpips_onnx"]
    assert intact_file(path) and path.read_bytes() != bytes(data)
    fn, _ = lpips.lpips_distance(path, "cpu")
    ref, _ = lpips.lpips_distance(good, "cpu")
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(fn(x, x[::-1]), ref(x, x[::-1]), rtol=0, atol=1e-6)
    lpips.cached_lpips_onnx(64, cache_dir=cache)
    assert len(runs) == 1  # intact now: not exported again


def test_a_paste_run_is_not_warned_about_the_network_a_model_was_trained_against(crops, tmp_path):
    """A mix made without a model has no training to warn about; a run that names no method still gets the warning."""
    from g2g.eval import evaluate

    good_out, _ = _good_and_swapped(crops, tmp_path)
    unknown = evaluate(good_out, ["id-sim"], _cfg(tmp_path / "u"))
    assert any("trained against" in w for w in unknown.warnings)
    run = json.loads((good_out / "run.json").read_text())
    (good_out / "run.json").write_text(json.dumps({**run, "method": "expression-paste"}))
    paste = evaluate(good_out, ["id-sim"], _cfg(tmp_path / "p"))
    assert not any("trained against" in w for w in paste.warnings), paste.warnings
    assert paste.networks[0]["trained_against"] is False and "not trained" in paste.networks[0]["training"]
