"""``g2g export --onnx``: parity (fp32, fp16), dynamic N and K, metadata, integrity checks."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from g2g.bundle import NO_DEFAULT, BundleError, default_model_dir, open_bundle, read_bundle_meta  # noqa: E402
from g2g.config import ModelConfig, TrainConfig, from_dict, model_preset  # noqa: E402
from g2g.export import parts  # noqa: E402
from g2g.export.onnx_export import ExportError, export_bundle, load_check_faces  # noqa: E402
from g2g.runtime import read_metadata  # noqa: E402

PARTS = ("content_encoder.onnx", "class_encoder.onnx", "decoder.onnx")


def make_run(root: Path, seed: int = 0) -> Path:
    """A RUN folder with one checkpoint of an untrained tiny generator (64 px)."""
    from g2g.train.checkpoint import save_checkpoint
    from g2g.train.model import Generator

    torch.manual_seed(seed)
    cfg = model_preset("tiny")
    gen = Generator(cfg)
    ema = Generator(cfg)  # differs from the raw weights, so the test sees which one was exported
    save_checkpoint(root / "checkpoints" / "last.pt", {
        "config": asdict(TrainConfig(model=cfg)), "step": 123,
        "generator": gen.state_dict(), "generator_ema": ema.state_dict(),
    })
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def bundle32(tmp_path_factory, run_dir, prepared_small):
    out = tmp_path_factory.mktemp("model32")
    return out, export_bundle(run_dir, out, check_images=prepared_small, identity=True)


@pytest.fixture(scope="module")
def bundle16(tmp_path_factory, run_dir, prepared_small):
    out = tmp_path_factory.mktemp("model16")
    return out, export_bundle(run_dir, out, fp16=True, check_images=prepared_small, identity=False)


def ema_generator(run_dir: Path):
    from g2g.train.checkpoint import load_generator

    gen, _, _ = load_generator(run_dir, ema=True)
    return gen


def test_fp32_parity_on_real_faces(bundle32):
    out, rep = bundle32
    assert "real aligned faces" in rep.parity_source
    assert set(rep.parity) == {"content_encoder", "class_encoder", "decoder", "mix"}
    for part, diff in rep.parity.items():
        assert diff <= rep.bounds[part], (part, diff)
    assert max(rep.parity.values()) < 1e-4  # measured ~1e-5; fp32 must be nearly exact
    print("fp32 parity", rep.parity)


def test_bundle_files_are_single_checked_and_summed(bundle32):
    out, rep = bundle32
    names = sorted(p.name for p in out.iterdir())
    # no sidecars, no staging left; the folder marker says which verb made it
    assert names == sorted([*PARTS, "identity.onnx", "g2g_model.json", "SHA256SUMS", ".g2g-folder.json"])
    for name in [*PARTS, "identity.onnx"]:
        model = onnx.load(str(out / name), load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        onnx.checker.check_model(str(out / name), full_check=True)
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {*PARTS, "identity.onnx", "g2g_model.json"}
    for name, sha in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha, name


def test_metadata_round_trip(bundle32, run_dir):
    out, rep = bundle32
    meta = json.loads((out / "g2g_model.json").read_text())
    assert meta["format"] == "g2g-onnx-bundle/1"
    assert from_dict(ModelConfig, meta["model"]) == model_preset("tiny")
    assert from_dict(TrainConfig, meta["train"]).model == model_preset("tiny")
    assert meta["align"]["size"] == 64 and meta["align"]["zoom"] == 1.3 and len(meta["align"]["template"]) == 5
    assert meta["normalisation"] == {"mean": 0.5, "std": 0.5, "range": [-1, 1], "channels": "RGB"}
    assert meta["step"] == 123 and meta["fp16"] is False
    assert meta["checkpoint_sha256"] == hashlib.sha256((run_dir / "checkpoints" / "last.pt").read_bytes()).hexdigest()
    assert meta["parity"] == rep.parity
    assert set(meta["files"]) == {*PARTS, "identity.onnx"}
    embedded = {k: v for k, v in meta.items() if k != "files"}
    for name in [*PARTS, "identity.onnx"]:
        props = read_metadata(out / name)
        assert json.loads(props["g2g"]) == embedded, name
        assert props["g2g_part"] == name.removesuffix(".onnx")
    ident = read_metadata(out / "identity.onnx")  # the identity network keeps its own keys for g2g eval
    assert ident["identity_net"] == "dlib" and ident["input_size"] == "64"
    b = open_bundle(out, "cpu")
    assert b.model == model_preset("tiny") and b.align.size == 64
    assert b.sha256 == hashlib.sha256((out / "g2g_model.json").read_bytes()).hexdigest()


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("k", [1, 2])
def test_dynamic_batch_and_k(bundle32, run_dir, prepared_small, n, k):
    out, _ = bundle32
    gen = ema_generator(run_dir)
    faces, _ = load_check_faces(prepared_small, 64, limit=n * k)
    assert len(faces) == n * k
    b = open_bundle(out, "cpu", batch_size=64)
    t = torch.from_numpy
    with torch.no_grad():
        content = gen.content_encoder(t(faces[:n])).numpy()
        code = gen.encode_class(t(faces.reshape(n, k, 3, 64, 64))).numpy()
        image = gen.decoder(t(content), t(code)).numpy()
    c = b.encode_content(faces[:n])
    z = b.encode_class(faces.reshape(n, k, 3, 64, 64))
    y = b.decode(content, code)
    assert c.shape == content.shape and z.shape == code.shape and y.shape == (n, 3, 64, 64)
    assert np.abs(c - content).max() < 1e-4
    assert np.abs(z - code).max() < 1e-5
    assert np.abs(y - image).max() < 1e-4


def test_check_faces_bring_their_manifest_landmarks_so_the_export_needs_no_dlib(prepared_small, tmp_path):
    from g2g.io.files import read_jsonl

    faces, lm = load_check_faces(prepared_small, 32, limit=3)  # prepared at 64 px, read at 32
    by_output = {r["output"]: r["crop_landmarks68"] for r in read_jsonl(prepared_small / "manifest.jsonl")
                 if r.get("status") == "ok"}
    assert faces.shape == (3, 3, 32, 32) and lm.shape == (3, 68, 2)
    assert any(np.allclose(lm[0], np.asarray(v) * 0.5) for v in by_output.values())
    bare = tmp_path / "bare"  # crops without a manifest: no landmarks, dlib finds them at export
    bare.mkdir()
    for f in sorted(prepared_small.rglob("*.png"))[:2]:
        shutil.copy(f, bare / f"{f.parent.name}_{f.name}")
    assert load_check_faces(bare, 32)[1] is None


def test_exports_the_ema_weights(bundle32, run_dir, prepared_small):
    from g2g.train.checkpoint import load_generator

    out, _ = bundle32
    raw, _, _ = load_generator(run_dir, ema=False)
    faces, _ = load_check_faces(prepared_small, 64, limit=2)
    b = open_bundle(out, "cpu")
    with torch.no_grad():
        ref_ema = ema_generator(run_dir).content_encoder(torch.from_numpy(faces)).numpy()
        ref_raw = raw.content_encoder(torch.from_numpy(faces)).numpy()
    got = b.encode_content(faces)
    assert np.abs(got - ref_ema).max() < 1e-4 < np.abs(got - ref_raw).max()


def test_fp16_parity_and_float32_io(bundle16, bundle32):
    out, rep = bundle16
    assert rep.fp16
    assert rep.parity["decoder"] <= 5e-2 and rep.parity["mix"] <= 5e-2
    for part, diff in rep.parity.items():
        assert diff <= rep.bounds[part], (part, diff)
    assert rep.parity["decoder"] > 0  # it really is a float16 graph
    print("fp16 parity", rep.parity)
    for name in PARTS:
        model = onnx.load(str(out / name))
        io = list(model.graph.input) + list(model.graph.output)
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io), name
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer), name
        assert (out / name).stat().st_size < 0.6 * (bundle32[0] / name).stat().st_size
    assert json.loads((out / "g2g_model.json").read_text())["fp16"] is True
    b = open_bundle(out, "cpu")
    x = np.random.default_rng(1).uniform(-1, 1, (3, 2, 3, 64, 64)).astype(np.float32)
    assert b.encode_class(x).dtype == np.float32 and b.encode_class(x).shape == (3, 32)


def test_parity_bound_is_enforced(tmp_path, run_dir, monkeypatch):
    monkeypatch.setattr(parts, "BOUNDS_FP32", {k: 1e-12 for k in parts.BOUNDS_FP32})
    with pytest.raises(ExportError, match=r"disagrees .* on random input \(no --check-data") as e:
        export_bundle(run_dir / "checkpoints" / "last.pt", tmp_path / "m", identity=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m" / "g2g_model.json").exists()  # a failed export is not a bundle
    assert [p.name for p in (tmp_path / "m").iterdir()] == [".g2g-folder.json"]  # and leaves no staging folder behind


def test_tampered_or_missing_files_are_named(tmp_path, bundle16):
    src, _ = bundle16
    m = tmp_path / "m"
    shutil.copytree(src, m)
    read_bundle_meta(m)  # intact copy verifies
    data = bytearray((m / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (m / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError) as e:
        open_bundle(m, "cpu")
    msg = str(e.value)
    assert "decoder.onnx" in msg and "sha256" in msg and "\n" not in msg
    (m / "decoder.onnx").unlink()
    with pytest.raises(BundleError, match="decoder.onnx is missing"):
        open_bundle(m, "cpu")
    (m / "g2g_model.json").unlink()
    with pytest.raises(BundleError, match="not a g2g model folder"):
        open_bundle(m, "cpu")
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(tmp_path / "nope", "cpu")


def test_bad_checkpoint_is_one_line(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError) as e:
        export_bundle(tmp_path / "bad.pt", tmp_path / "m")
    assert "\n" not in str(e.value)
    with pytest.raises(ExportError, match="no checkpoint"):
        export_bundle(tmp_path / "empty_run", tmp_path / "m")


def test_default_model_message(tmp_path, monkeypatch):
    try:
        path = default_model_dir()
    except BundleError as e:
        assert str(e) == NO_DEFAULT
    else:  # a default model ships: it must verify and open
        read_bundle_meta(path)
        assert open_bundle(None, device="cpu").sha256
    import g2g.bundle

    monkeypatch.setattr(g2g.bundle, "DEFAULT_MODEL_DIR", tmp_path / "no-model")
    with pytest.raises(BundleError, match="no default model ships yet"):
        default_model_dir()


# --- g2g train --init-from: an export (or checkpoint) gives a new run its generator -------------------------------


def test_init_from_bundle_reads_back_the_exported_weights(bundle32, run_dir):
    from g2g.train.init_weights import load_init_weights

    want = ema_generator(run_dir).state_dict()
    for source in (bundle32[0], run_dir):
        init = load_init_weights(source)
        assert init.model == model_preset("tiny") and init.step == 123
        assert init.state.keys() == want.keys()
        for k, v in want.items():
            assert torch.equal(init.state[k], v), (source, k)


def test_init_from_refuses_what_is_not_a_model(tmp_path, bundle32):
    from g2g.train.init_weights import InitError, load_init_weights

    with pytest.raises(InitError, match="no such file"):
        load_init_weights(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitError, match="no checkpoint"):
        load_init_weights(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(bundle32[0], bad)
    (bad / "decoder.onnx").write_bytes((bad / "decoder.onnx").read_bytes()[:-10])
    with pytest.raises(InitError, match="decoder.onnx"):
        load_init_weights(bad)


def test_train_init_from_starts_at_the_source_weights(bundle32, run_dir, prepared_small, tmp_path, one_thread):
    """lr 0: after one step the new run's generator is still exactly the source's; the architecture is the source's."""
    from g2g.train.checkpoint import load_checkpoint
    from g2g.train.trainer import build_config, train

    cfg = build_config(prepared_small, "small", 32, steps=1, batch_size=2, lr_gen=0.0, lr_dis=0.0, weight_decay=0.0,
                       workers=0, device="cpu", log_every=1, delta_id=0.0, alpha_vgg=0.0)
    train(prepared_small, tmp_path / "ft", cfg, progress=False, init_from=bundle32[0])
    state = load_checkpoint(tmp_path / "ft")
    assert from_dict(TrainConfig, state["config"]).model == model_preset("tiny")
    want = ema_generator(run_dir).state_dict()
    for key in ("generator", "generator_ema"):
        for k, v in want.items():
            assert torch.equal(state[key][k], v), (key, k)
    recorded = json.loads((tmp_path / "ft" / "config.json").read_text())["init_from"]
    assert recorded["step"] == 123 and str(bundle32[0].resolve()) in recorded["source"]
    assert state["init_from"] == recorded  # in the checkpoint too, so that the export can say where the weights began
    export_bundle(tmp_path / "ft", tmp_path / "ft-model", identity=False)
    meta, _ = read_bundle_meta(tmp_path / "ft-model")
    assert meta["init_from"] == recorded and meta["step"] == 1


def test_train_init_from_refuses_crops_aligned_otherwise(bundle32, prepared_small, tmp_path):
    from g2g.train.trainer import TrainError, build_config, train

    data = tmp_path / "data"
    shutil.copytree(prepared_small, data)
    prep = json.loads((data / "prepare_config.json").read_text())
    prep["zoom"] = 1.5
    (data / "prepare_config.json").write_text(json.dumps(prep))
    cfg = build_config(data, "tiny", steps=1, batch_size=2, workers=0, device="cpu")
    with pytest.raises(TrainError, match="zoom 1.3.*zoom 1.5.*--zoom 1.3"):
        train(data, tmp_path / "ft", cfg, progress=False, init_from=bundle32[0])
    assert not (tmp_path / "ft").exists()  # refused before anything was written


def test_cli_export_prints_its_summary_as_json(tmp_path, run_dir):
    from typer.testing import CliRunner

    from g2g.cli import app

    res = CliRunner().invoke(app, ["export", str(run_dir), "-o", str(tmp_path / "m"), "--fp16", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # the summary alone on stdout; the table and progress lines go to stderr
    assert summary["fp16"] and set(summary["files"]) == {*PARTS, "g2g_model.json"}  # no identity.onnx by default
    assert "export: decoder (3/3), fp16" in res.stderr
