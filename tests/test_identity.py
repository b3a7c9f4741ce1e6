"""The identity network: dlib port parity, geometry, gradients, ONNX export, weights registry, runtime."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import celeba, celeba_chips, dlib_descriptors

from g2g import weights
from g2g.config import DLIB_TEMPLATE_150, AlignConfig
from g2g.faces.distances import cosine, distance_convention, euclidean
from g2g.faces.embedder import IdentityEmbedder
from g2g.runtime import DeviceError, open_session, parse_device, read_metadata
from g2g.train.dlib_resnet import expected_kinds, load_dlib_resnet, read_dat
from g2g.train.identity_net import IdentityNet, load_identity_net
from g2g.weights import WeightsError

# where CelebA's aligned release puts the 5 landmarks (178x218 frame), for geometric alignment without a detector
CELEBA_5PT = np.array([[69.0, 111.0], [108.0, 111.0], [88.0, 136.0], [72.0, 152.0], [105.0, 152.0]])


@pytest.fixture(scope="module")
def resnet():
    return load_dlib_resnet()


@pytest.fixture(scope="module")
def idnet():
    return load_identity_net("dlib", zoom=1.3)


def port(net, chips: list[np.ndarray]) -> np.ndarray:
    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()  # (B, 3, 150, 150) in 0-255
    with torch.no_grad():
        return net(x).numpy()


# --- (a) port parity with dlib ----------------------------------------------------------------------------------------


def test_dat_layout():
    net = read_dat(weights.locate("dlib-resnet"))
    assert [layer.kind for layer in net.layers] == expected_kinds()
    assert sum(layer.kind == "con_4" for layer in net.layers) == 29
    assert net.input_size == (150, 150) and net.threshold == pytest.approx(0.6)
    assert net.input_mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)


def test_parity_with_dlib_synthetic(resnet):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:150, 0:150]
    blobs = np.stack([(xx * 1.7) % 256, (yy * 1.3) % 256, ((xx - 75) ** 2 + (yy - 75) ** 2) % 256], -1).astype(np.uint8)
    chips = [noise, blobs]
    diff = np.abs(port(resnet, chips) - dlib_descriptors(chips)).max()
    assert diff < 1e-4, diff


def test_parity_with_dlib_real_faces(resnet):
    chips = celeba_chips(4)
    ours, ref = port(resnet, chips), dlib_descriptors(chips)
    assert np.abs(ours - ref).max() < 1e-4
    assert np.abs(ref).max() > 0.05  # real descriptors, not zeros


# --- geometry and (b) identity separation ----------------------------------------------------------------------------


def test_crop_to_chip_geometry_is_exact():
    """Resampling a g2g crop to dlib's chip equals warping the photo to the chip directly."""
    import cv2

    from g2g.faces.align import estimate_similarity

    yy, xx = np.mgrid[0:300, 0:300].astype(np.float32)
    photo = np.stack([xx * 0.3 + 10, yy * 0.25 + 5, (xx + yy) * 0.1], -1)  # linear: bilinear sampling is exact
    landmarks = np.asarray(DLIB_TEMPLATE_150) * 1.3 + [40.0, 30.0]
    direct = cv2.warpAffine(photo, estimate_similarity(landmarks, np.asarray(DLIB_TEMPLATE_150)), (150, 150))
    for size, zoom in ((64, 1.3), (128, 1.3), (96, 1.0)):
        crop = cv2.warpAffine(photo, estimate_similarity(landmarks, np.asarray(AlignConfig(size, zoom).template())),
                              (size, size))
        net = IdentityNet(torch.nn.Identity(), "dlib", zoom, 150, 1.0, 128)
        via = net.to_chip(torch.from_numpy(crop).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        assert np.abs(via - direct)[2:-2, 2:-2].max() < 1e-2, (size, zoom)


def aligned_crops(size: int = 128, zoom: float = 1.3, identities: int = 4, per_id: int = 3):
    import cv2

    from g2g.faces.align import estimate_similarity

    M = estimate_similarity(CELEBA_5PT, np.asarray(AlignConfig(size, zoom).template()))
    items = celeba(identities, per_id)
    crops = np.stack([cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR) for _, img in items])
    return crops, [name for name, _ in items]


def test_same_person_closer_than_different(idnet):
    crops, ids = aligned_crops()
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        e = idnet(x).numpy()  # (12, 128)
    d = euclidean(e[:, None], e[None])
    same = np.array([[a == b for b in ids] for a in ids])
    off = ~np.eye(len(ids), dtype=bool)
    d_same, d_diff = d[same & off], d[~same]
    assert d_same.mean() + 0.15 < d_diff.mean(), (d_same.mean(), d_diff.mean())
    assert np.median(d_same) < 0.6 < np.median(d_diff)  # dlib's threshold splits them
    # every photo's nearest other photo is the same person
    nearest = np.where(off, d, np.inf).argmin(1)
    assert np.mean([ids[i] == ids[j] for i, j in enumerate(nearest)]) >= 0.9


# --- (c) gradients ----------------------------------------------------------------------------------------------------


def test_gradient_reaches_input_not_weights(idnet):
    crops = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    target = torch.zeros(2, 128)
    idnet.train()  # stays in eval: frozen
    assert not idnet.training
    loss = (idnet(crops) - target).pow(2).sum()
    loss.backward()
    assert crops.grad is not None and torch.isfinite(crops.grad).all() and crops.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in idnet.parameters())


# --- (d) ONNX export --------------------------------------------------------------------------------------------------


def test_onnx_export_parity_and_dynamic_batch(tmp_path, idnet):
    from g2g.export.identity_onnx import export_identity

    size = 64
    path = export_identity(tmp_path / "id.onnx", "dlib", zoom=1.3, size=size, verbose=False)
    meta = read_metadata(path)
    assert meta["identity_net"] == "dlib" and meta["input_size"] == "64" and float(meta["zoom"]) == 1.3
    assert meta["distance"] == "euclidean" and float(meta["threshold"]) == 0.6
    assert meta["weights_sha256"] == weights.REGISTRY["dlib-resnet"].sha256
    emb = IdentityEmbedder(path, device="cpu", batch_size=4)
    assert emb.info.providers == ["CPUExecutionProvider"]
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (5, size, size, 3), dtype=np.uint8)  # 5 = a batch of 4 and one of 1
    out = emb.embed(crops)
    idnet.zoom = 1.3
    with torch.no_grad():
        ref = idnet(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
    assert out.shape == (5, 128) and np.abs(out - ref).max() < 1e-4
    with pytest.raises(ValueError):
        emb.embed(crops[:, :32])  # wrong size


# --- (e) weights registry ---------------------------------------------------------------------------------------------


def test_weights_verified_and_cached(monkeypatch):
    calls = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: calls.append(p) or real(p))
    for name in ("dlib-resnet", "stlpips-vgg"):
        assert weights.locate(name).is_file()
        weights.locate(name)
    assert len(calls) <= 2  # hashed at most once per file per process


def test_corrupted_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    shutil.copy(weights.locate("dlib-resnet"), bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match=r"dlib-resnet: .*dlib_face_recognition_resnet_model_v1\.dat has sha256"):
        weights.verify("dlib-resnet", bad)
    with pytest.raises(WeightsError, match="cannot read"):
        weights.verify("dlib-resnet", tmp_path / "absent.dat")
    with pytest.raises(WeightsError, match="unknown model file"):
        weights.locate("no-such-net")


def test_missing_optional_weights_offline(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights.urllib.request, "urlopen", offline)
    monkeypatch.delenv(weights.DOWNLOAD_ENV, raising=False)
    with pytest.raises(WeightsError, match="downloads are off; pass --allow-download"):  # the default: no network
        weights.locate("facenet-vggface2")
    monkeypatch.setenv(weights.DOWNLOAD_ENV, "1")  # --allow-download, on a machine whose network is down
    with pytest.raises(WeightsError, match="facenet-vggface2: not available offline"):
        weights.locate("facenet-vggface2")
    with pytest.raises(WeightsError, match="not available offline"):
        load_identity_net("facenet-casia-webface")
    with pytest.raises(WeightsError, match="downloads are off"):
        weights.locate("facenet-vggface2", download=False)
    assert not any(tmp_path.rglob("*.part"))  # nothing half-written is left behind


def test_facenet_loads_from_a_verified_cache_file(tmp_path, monkeypatch):
    """The facenet path with a stand-in weights file (the real one needs a download)."""
    from facenet_pytorch import InceptionResnetV1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = InceptionResnetV1(pretrained=None).state_dict()
    state["logits.weight"], state["logits.bias"] = torch.zeros(3, 512), torch.zeros(3)  # as in the release files
    path = weights.path_of("facenet-vggface2")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    entry = weights.REGISTRY["facenet-vggface2"]
    monkeypatch.setitem(weights.REGISTRY, "facenet-vggface2",
                        type(entry)(**{**entry.__dict__, "sha256": weights.sha256_file(path)}))
    net = load_identity_net("facenet-vggface2", zoom=1.3)
    with torch.no_grad():
        e = net(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert e.shape == (2, 512) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    assert net.chip == 160 and distance_convention(net.name).dim == 512


def test_missing_package_file(monkeypatch, tmp_path):
    entry = weights.REGISTRY["dlib-resnet"]
    monkeypatch.setitem(weights.REGISTRY, "dlib-resnet", type(entry)(**{**entry.__dict__, "relpath": "models/gone.dat"}))
    with pytest.raises(WeightsError, match=r"dlib-resnet: .*gone\.dat is missing"):
        weights.locate("dlib-resnet")


# --- runtime and helpers ----------------------------------------------------------------------------------------------


def test_device_parsing_and_session(tmp_path):
    assert parse_device("auto") == ("auto", 0) and parse_device("cuda:1") == ("cuda", 1)
    assert parse_device("CPU") == ("cpu", 0)
    for bad in ("gpu", "cpu:1", "cuda:x", ""):
        with pytest.raises(DeviceError):
            parse_device(bad)
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    model.metadata_props.add(key="k", value="v")
    onnx.save(model, tmp_path / "relu.onnx")
    assert read_metadata(tmp_path / "relu.onnx") == {"k": "v"}
    cpu = open_session(tmp_path / "relu.onnx", "cpu")
    assert cpu.providers == ["CPUExecutionProvider"] and cpu.note == "" and cpu.device == "cpu"
    auto = open_session(tmp_path / "relu.onnx", "auto")
    assert auto.providers == auto.session.get_providers()
    if "CUDAExecutionProvider" not in auto.providers:
        assert auto.note.startswith("CUDA not used: ")


def test_distance_helpers():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 1.0], [0.0, 4.0]])
    assert euclidean(a, b) == pytest.approx([np.sqrt(2), 2.0])
    assert cosine(a, b) == pytest.approx([0.0, 1.0])
    assert distance_convention("dlib").metric == "euclidean" and distance_convention("dlib").threshold == 0.6


def test_packed_int8_weights_stand_in_for_the_package_files(tmp_path, monkeypatch):
    """What the GPU kit carries: dlib's ResNet and ST-LPIPS as int8 copies, loaded through G2G_WEIGHTS_DIR."""
    from g2g.train.perceptual import load_stlpips

    ref_dlib, ref_lpips = load_dlib_resnet(), load_stlpips()
    for name, net in (("dlib-resnet", ref_dlib), ("stlpips-vgg", ref_lpips)):
        state = {k: v.numpy() for k, v in net.state_dict().items()}
        np.savez(tmp_path / f"{name}{weights.PACKED_SUFFIX}", **weights.pack_state(state, name, "int8"))
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    g = torch.Generator().manual_seed(0)
    chips = torch.rand(3, 3, 150, 150, generator=g) * 255
    a = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    b = (a + 0.2 * torch.randn(3, 3, 64, 64, generator=g)).clamp(-1, 1)
    dlib8, lpips8 = load_dlib_resnet(), load_stlpips()
    with torch.no_grad():
        moved = (dlib8(chips) - ref_dlib(chips)).norm(dim=1)
        rel = ((lpips8(a, b) - ref_lpips(a, b)).abs() / ref_lpips(a, b))
    assert 0 < moved.max() < 0.05  # the int8 copy, close: same-person pairs are about 0.46 apart
    assert 0 < rel.max() < 0.01
    assert weights.verified_sha256("dlib-resnet") == weights.REGISTRY["dlib-resnet"].sha256  # names its source
    (tmp_path / f"stlpips-vgg{weights.PACKED_SUFFIX}").replace(tmp_path / f"dlib-resnet{weights.PACKED_SUFFIX}")
    with pytest.raises(weights.WeightsError, match="holds 'stlpips-vgg'"):
        load_dlib_resnet()
