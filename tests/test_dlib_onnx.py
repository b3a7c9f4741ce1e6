"""dlib's ResNet built as ONNX with numpy (g2g.faces.dlib_graph): parity with PyTorch and with dlib, no torch on the
inference path, the user cache's sidecar check, and the ``.dat`` reader's errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from g2g import weights
from g2g.faces import dlib_graph
from g2g.faces.dlib_dat import DatFormatError, dlib_state, read_dat, state_shapes
from g2g.faces.dlib_graph import FEATURE_DIM, checked_bytes, identity_model, realism_model
from g2g.io.cache import sidecar
from g2g.io.files import sha256_file

SIZE = 64


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return dlib_state()


def session(model):
    import onnxruntime as ort

    return ort.InferenceSession(checked_bytes(model), providers=["CPUExecutionProvider"])


def masks(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 1, S, S): a hard disc, then a soft random mask, alternately."""
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).astype(np.float32)
    return np.stack([disc if i % 2 == 0 else rng.random((size, size), dtype=np.float32) for i in range(n)])[:, None]


# --- parity with the PyTorch references -------------------------------------------------------------------------------


@pytest.mark.parametrize("size, zoom", [(SIZE, 1.3), (96, 1.0)])
def test_identity_graph_matches_pytorch(state, size, zoom):
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (the training install)")
    from g2g.train.identity_net import load_identity_net

    net = load_identity_net("dlib", zoom)
    sess = session(identity_model(zoom, size, state))
    rng = np.random.default_rng(0)
    for n in (1, 3):  # the dynamic batch axis too
        x = rng.uniform(-1, 1, (n, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        out = sess.run(["embeddings"], {"crops": x})[0]
        assert out.shape == ref.shape == (n, 128)
        assert np.abs(out - ref).max() <= 1e-4


def test_realism_graph_matches_pytorch(state):
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (the training install)")
    from g2g.export.texture_onnx import TextureStats
    from g2g.train.identity_net import load_identity_net

    net = TextureStats(load_identity_net("dlib", 1.3)).eval()
    sess = session(realism_model(1.3, SIZE, state))
    rng = np.random.default_rng(1)
    for n in (1, 3):
        x = rng.uniform(-1, 1, (n, 3, SIZE, SIZE)).astype(np.float32)
        m = masks(n, SIZE, rng)
        with torch.no_grad():
            ref = net(torch.from_numpy(x), torch.from_numpy(m)).numpy()
        out = sess.run(["features"], {"crops": x, "mask": m})[0]
        assert out.shape == ref.shape == (n, FEATURE_DIM)
        assert np.abs(out - ref).max() <= 1e-3


def test_graphs_describe_themselves_as_the_pytorch_exports_do(tmp_path, state):
    pytest.importorskip("torch", reason="the PyTorch exports need torch (the training install)")
    import onnx

    from g2g.export.identity_onnx import export_identity
    from g2g.export.texture_onnx import export_realism

    pairs = [
        (export_identity(tmp_path / "id.onnx", "dlib", 1.3, SIZE, verbose=False), identity_model(1.3, SIZE, state)),
        (export_realism(tmp_path / "re.onnx", 1.3, SIZE, verbose=False), realism_model(1.3, SIZE, state)),
    ]
    for path, ours in pairs:
        ref = onnx.load(str(path))
        assert {p.key: p.value for p in ours.metadata_props} == {p.key: p.value for p in ref.metadata_props}
        assert ours.doc_string == ref.doc_string and ours.opset_import == ref.opset_import
        for a, b in ((ours.graph.input, ref.graph.input), (ours.graph.output, ref.graph.output)):
            assert [(v.name, str(v.type)) for v in a] == [(v.name, str(v.type)) for v in b]


def test_torch_port_weights_are_the_same_arrays(state):
    pytest.importorskip("torch", reason="the PyTorch port needs torch (the training install)")
    from g2g.train.dlib_resnet import load_dlib_resnet

    ported = load_dlib_resnet().state_dict()
    assert list(ported) == list(state_shapes())
    assert all(np.array_equal(ported[k].numpy(), state[k]) for k in ported)  # bit for bit


# --- real faces: dlib's own descriptors -------------------------------------------------------------------------------


def test_embeddings_match_dlib_on_real_faces(state):
    """At zoom 1 and 150 px a crop is dlib's chip, so the graph must give dlib's descriptor."""
    from conftest import celeba_chips, dlib_descriptors

    from g2g.faces.preprocess import to_input

    chips = celeba_chips(4)
    ref = dlib_descriptors(chips)
    out = session(identity_model(1.0, 150, state)).run(["embeddings"], {"crops": to_input(np.stack(chips))})[0]
    assert np.abs(ref).max() > 0.05  # real descriptors, not zeros
    assert np.abs(out - ref).max() < 1e-4


# --- no torch on the inference path -----------------------------------------------------------------------------------

NO_TORCH = """
import sys
for name in ("torch", "torchvision", "facenet_pytorch"):
    sys.modules[name] = None
import numpy as np
from g2g.errors import G2GError
from g2g.faces.embedder import IdentityEmbedder, cached_identity_onnx
from g2g.eval.texture import TextureFeatures, cached_realism_onnx

cache = sys.argv[1]
crops = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
regions = np.zeros((2, 64, 64), np.float32)
regions[:, 16:48, 16:48] = 1
emb = IdentityEmbedder(cached_identity_onnx("dlib", 1.3, 64, cache_dir=cache), device="cpu").embed(crops)
feats = TextureFeatures(cached_realism_onnx(1.3, 64, cache_dir=cache), device="cpu")(crops, regions)
assert emb.shape == (2, 128) and feats.shape == (2, 1024), (emb.shape, feats.shape)
assert np.isfinite(emb).all() and np.isfinite(feats).all()
import g2g.weights
g2g.weights.verified_sha256 = lambda name, download=False: "0" * 64  # as if facenet's weights were there
try:
    cached_identity_onnx("facenet-vggface2", 1.3, 64, cache_dir=cache)
    raise AssertionError("facenet built without torch")
except G2GError as e:
    print("facenet:", e)
assert all(sys.modules[name] is None for name in ("torch", "torchvision", "facenet_pytorch"))
"""


def test_eval_networks_build_without_torch(tmp_path):
    res = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert res.returncode == 0, res.stderr
    line = next(s for s in res.stdout.splitlines() if s.startswith("facenet:"))
    assert "PyTorch" in line and "g2g[train]" in line and "python -m g2g.export.identity_onnx facenet-vggface2" in line
    assert len(list(tmp_path.glob("*.onnx"))) == 2 and len(list(tmp_path.glob("*.onnx.sha256"))) == 2


# --- the user cache ---------------------------------------------------------------------------------------------------


def _identity(cache: Path) -> Path:
    from g2g.faces.embedder import cached_identity_onnx

    return cached_identity_onnx("dlib", 1.3, SIZE, cache_dir=cache)


def _realism(cache: Path) -> Path:
    from g2g.eval.texture import cached_realism_onnx

    return cached_realism_onnx(1.3, SIZE, cache_dir=cache)


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2 : len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 8])
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    else:  # the sidecar is gone
        sidecar(path).unlink()


@pytest.mark.parametrize("cached", [_identity, _realism], ids=["identity", "realism"])
def test_cache_rebuilds_a_damaged_file_only(tmp_path, monkeypatch, cached):
    path = cached(tmp_path)
    assert path.name.startswith(("identity-v2-", "realism-v2-"))
    good, stat = sha256_file(path), path.stat()
    assert sidecar(path).read_text() == f"{good}  {path.name}\n"
    with monkeypatch.context() as m:  # an intact file is used as it is: nothing is built
        for name in ("identity_model", "realism_model"):
            m.setattr(dlib_graph, name, lambda *a, **k: pytest.fail("rebuilt an intact file"))
        assert cached(tmp_path) == path
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_ino == stat.st_ino
    for how in ("flip", "truncate", "sidecar"):
        _damage(path, how)
        assert cached(tmp_path) == path
        assert sha256_file(path) == good == sidecar(path).read_text().split()[0], how  # rebuilt, the same bytes


# --- the .dat reader --------------------------------------------------------------------------------------------------


def test_bad_dat_is_a_one_line_error(tmp_path):
    data = weights.locate("dlib-resnet").read_bytes()
    bad = tmp_path / "dlib.dat"
    cases = {"truncated": (data[: len(data) // 2], "ends early"), "empty": (b"", "ends early"),
             "foreign": (b"\x01\x07" + data[2:], "not a dlib add_loss_layer")}
    for case, (content, match) in cases.items():
        bad.write_bytes(content)
        for read in (read_dat, dlib_state):
            with pytest.raises(DatFormatError, match=match) as e:
                read(bad)
            assert "\n" not in str(e.value) and str(bad) in str(e.value), (case, str(e.value))


def test_packed_copy_is_checked(tmp_path, monkeypatch, state):
    """The GPU kit's packed copy (g2g.weights.read_packed) stands in for the .dat; a wrong one is refused."""
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    packed = tmp_path / f"dlib-resnet{weights.PACKED_SUFFIX}"
    np.savez(packed, **weights.pack_state(dict(state), "dlib-resnet", "float16"))
    loaded = dlib_state()
    assert list(loaded) == list(state) and all(loaded[k].dtype == np.float32 for k in loaded)
    assert all(np.allclose(loaded[k], state[k], rtol=1e-3, atol=1e-6) for k in state)  # float16's precision
    short = {k: v for k, v in state.items() if k != "fc.weight"}
    np.savez(packed, **weights.pack_state(short, "dlib-resnet", "float16"))
    with pytest.raises(DatFormatError, match="packed dlib-resnet copy: .*keys differ"):
        dlib_state()
