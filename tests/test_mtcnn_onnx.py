"""g2g.faces.mtcnn: MTCNN on ONNX Runtime and numpy gives facenet-pytorch's detections, without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import WILD, need_shared
from g2g.errors import G2GError
from g2g.faces import mtcnn

# mixed sizes; 098149 holds 4 faces, 071599 and 058405 three, 143029 and 132009 two
PHOTOS = ["7298/098149.jpg", "7201/071599.jpg", "7336/058405.jpg", "7243/143029.jpg", "7337/132009.jpg",
          "7288/043171.jpg", "7349/095710.jpg", "7314/052922.jpg", "7207/014220.jpg", "7418/095204.jpg"]
BOX_TOL, POINT_TOL, PROB_TOL = 0.05, 0.05, 1e-4  # px, px, probability


def _photo(rel: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(WILD / rel).convert("RGB"))


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """The photos, a tiny downscaled one (48 px wide) and a blank grey image."""
    from PIL import Image

    need_shared()
    out = {rel: _photo(rel) for rel in PHOTOS}
    out["tiny"] = np.asarray(Image.fromarray(out["7288/043171.jpg"]).resize((48, 45), Image.BILINEAR))
    out["blank"] = np.full((120, 160, 3), 128, np.uint8)
    return out


@pytest.fixture(scope="module")
def reference():
    """facenet-pytorch's MTCNN as g2g.faces.detect builds it, on the CPU."""
    pytest.importorskip("torch", reason="parity needs torch (the reference implementation)")
    fp = pytest.importorskip("facenet_pytorch", reason="parity needs facenet-pytorch (the reference implementation)")
    return fp.MTCNN(min_face_size=20, thresholds=[0.6, 0.7, 0.7], factor=0.709, keep_all=True, select_largest=False,
                    device="cpu")


@pytest.fixture(scope="module")
def detector() -> mtcnn.OnnxMTCNN:
    return mtcnn.OnnxMTCNN(device="cpu", threads=2)


def _assert_same(ref: tuple, got: tuple, box_tol: float, point_tol: float, prob_tol: float, label: str) -> None:
    """facenet-pytorch's (boxes, probs, points) and ours agree image by image."""
    for i, (rb, rp, rl, gb, gp, gl) in enumerate(zip(*ref, *got)):
        if rb is None:
            assert gb is None and gl is None and list(gp) == [None], f"{label}[{i}]: a face where facenet finds none"
            continue
        found = 0 if gb is None else len(gb)
        assert found == len(rb), f"{label}[{i}]: {found} faces, not {len(rb)}"
        assert np.abs(np.asarray(gb, float) - np.asarray(rb, float)).max() <= box_tol, label
        assert np.abs(np.asarray(gl, float) - np.asarray(rl, float)).max() <= point_tol, label
        assert np.abs(np.asarray(gp, float) - np.asarray(rp, float)).max() <= prob_tol, label
        assert np.asarray(gb).shape == (len(rb), 4) and np.asarray(gl).shape == (len(rb), 5, 2)


def test_parity_with_facenet_pytorch(images, reference, detector):
    found = 0
    for name, im in images.items():
        ref = reference.detect(im[None], landmarks=True)
        got = detector.detect(im[None], landmarks=True)
        _assert_same(ref, got, BOX_TOL, POINT_TOL, PROB_TOL, name)
        found += 0 if ref[0][0] is None else len(ref[0][0])
    assert found >= 18  # the group photos really are group photos
    assert detector.detect(images["blank"][None])[0][0] is None


def test_parity_batched(images, reference, detector):
    """A stack: one pyramid, and RNet/ONet runs over all images' boxes; the image index must not mix them up."""
    im = images["7298/098149.jpg"]
    stack = np.stack([im, im[:, ::-1], np.full_like(im, 255), im])
    _assert_same(reference.detect(stack, landmarks=True), detector.detect(stack, landmarks=True),
                 BOX_TOL, POINT_TOL, PROB_TOL, "stack")


def test_pipeline_is_exact_with_the_torch_nets(images, reference):
    """With facenet-pytorch's own nets plugged in, the numpy pipeline gives bit-identical results: every
    difference left in the ONNX parity comes from the networks' float arithmetic, none from the pipeline."""
    import torch

    def as_net(module, channels_last: bool):
        def run(x: np.ndarray) -> list[np.ndarray]:
            t = torch.from_numpy(x)
            if channels_last:  # facenet-pytorch's pyramid levels reach PNet channels-last
                t = t.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                return [o.contiguous().numpy() for o in module(t)]
        return run

    nets = mtcnn.Nets(as_net(reference.pnet, True), as_net(reference.rnet, False), as_net(reference.onet, False))
    for name in ["7298/098149.jpg", "7336/058405.jpg", "7349/095710.jpg", "tiny"]:
        stack = images[name][None]
        rb, rp, rl = reference.detect(stack, landmarks=True)
        gb, gp, gl = mtcnn.detect_face(stack, 20, (0.6, 0.7, 0.7), 0.709, nets)
        np.testing.assert_array_equal(np.asarray(rb[0], np.float32), gb[0], err_msg=name)
        np.testing.assert_array_equal(np.asarray(rp[0], np.float32), gp[0], err_msg=name)
        np.testing.assert_array_equal(np.asarray(rl[0], np.float32), gl[0], err_msg=name)


def test_too_small_and_single_image(images, detector):
    """Smaller than the smallest face: no pyramid, no faces (facenet-pytorch fails there); a 3-D image gives
    that image's entries, as facenet-pytorch does."""
    boxes, probs, points = detector.detect(np.zeros((2, 16, 16, 3), np.uint8))
    assert list(boxes) == [None, None] and list(points) == [None, None]
    b, p, lm = detector.detect(images["7349/095710.jpg"])
    assert np.asarray(b, float).shape[1] == 4 and np.asarray(lm, float).shape[1:] == (5, 2) and len(p) == len(b)
    assert len(detector.detect(images["blank"], landmarks=False)) == 2


BLOCK_TORCH = """
import importlib.abc, json, sys
tried = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "facenet_pytorch"):
            tried.append(name)
            raise ImportError(f"{name} is blocked here")
sys.meta_path.insert(0, Block())
"""


def test_runs_without_torch():
    need_shared()
    code = BLOCK_TORCH + textwrap.dedent(f"""
        import numpy as np
        from PIL import Image
        from g2g.faces.mtcnn import OnnxMTCNN
        img = np.asarray(Image.open({str(WILD / PHOTOS[0])!r}).convert("RGB"))
        boxes, probs, points = OnnxMTCNN(device="cpu", threads=1).detect(img[None])
        print(json.dumps({{"faces": len(boxes[0]), "tried": tried,
                          "loaded": [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")]}}))
    """)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop(mtcnn.ASSETS_ENV, None)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"faces": 4, "tried": [], "loaded": []}


@pytest.mark.parametrize("victim", ["pnet.onnx", "rnet.onnx", "onet.onnx"])
def test_damaged_asset_is_one_line(tmp_path, monkeypatch, victim):
    folder = tmp_path / "mtcnn"
    shutil.copytree(mtcnn.DEFAULT_ASSETS, folder)
    data = bytearray((folder / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / victim).write_bytes(bytes(data))
    monkeypatch.setenv(mtcnn.ASSETS_ENV, str(folder))
    with pytest.raises(mtcnn.DetectorAssetError) as err:
        mtcnn.OnnxMTCNN(device="cpu")
    message = str(err.value)
    assert isinstance(err.value, G2GError) and "\n" not in message
    assert victim in message and "damaged" in message and "reinstalling g2g" in message
    assert err.value.__cause__ is None


def test_missing_asset_and_sums(tmp_path):
    folder = tmp_path / "mtcnn"
    shutil.copytree(mtcnn.DEFAULT_ASSETS, folder)
    (folder / "onet.onnx").unlink()
    with pytest.raises(mtcnn.DetectorAssetError, match="onet.onnx is missing.*reinstalling g2g"):
        mtcnn.OnnxMTCNN(device="cpu", assets=folder)
    (folder / mtcnn.SUMS_FILE).unlink()
    with pytest.raises(mtcnn.DetectorAssetError, match="SHA256SUMS is missing"):
        mtcnn.verified_paths(folder)


def test_assets_say_where_they_come_from():
    """Each shipped file names its source and licence and carries the input convention the pipeline reads."""
    import onnx

    for name, side in (("pnet", 0), ("rnet", 24), ("onet", 48)):
        model = onnx.load(str(mtcnn.DEFAULT_ASSETS / f"{name}.onnx"), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        assert "facenet-pytorch 2.5.3" in meta["source"] and "MTCNN" in meta["source"]
        assert meta["license"].startswith("MIT")
        assert (meta["input_size"], meta["mean"], meta["scale"]) == (str(side), "127.5", "0.0078125")
        assert [o.name for o in model.graph.output] == list(mtcnn.OUTPUTS[name])


@pytest.mark.parametrize("src,size", [((37, 53), (13, 29)), ((7, 5), (11, 3)), ((101, 99), (24, 24)),
                                      ((5, 9), (5, 9)), ((241, 187), (171, 133))])
def test_area_resize_is_torch_area_interpolation(src, size):
    torch = pytest.importorskip("torch", reason="compares against torch.nn.functional.interpolate")
    rng = np.random.default_rng(sum(src) + sum(size))
    pixels = rng.integers(0, 256, (2, *src, 3), dtype=np.uint8)
    noise = rng.standard_normal((2, *src, 3)).astype(np.float32)
    for x, tol in ((pixels, 0.0), (noise, 1e-5)):  # pixel images: bit-identical; floats: summation order only
        ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2).float(), size=size, mode="area")
        got = mtcnn.area_resize(x, size)
        assert got.shape == (2, 3, *size) and got.dtype == np.float32
        assert np.abs(got - ref.numpy()).max() <= tol


@pytest.mark.slow
def test_export_reproduces_the_shipped_files(tmp_path):
    """The exporter checks parity and writes the three files and SHA256SUMS; with the torch the shipped files were
    made with, it writes them byte for byte."""
    torch = pytest.importorskip("torch", reason="the export needs torch")
    pytest.importorskip("facenet_pytorch", reason="the export needs facenet-pytorch")
    import onnx

    from g2g.export.detector import export_detector

    shipped = onnx.load(str(mtcnn.DEFAULT_ASSETS / "pnet.onnx"), load_external_data=False)
    made_with = {p.key: p.value for p in shipped.metadata_props}["exporter"].rsplit("torch ", 1)[1]
    if made_with != torch.__version__.split("+")[0]:
        pytest.skip(f"shipped files were exported with torch {made_with}, this is {torch.__version__}")
    sums = export_detector(tmp_path, verbose=False)
    assert sorted(sums) == ["onet.onnx", "pnet.onnx", "rnet.onnx"]
    for name in [*sums, mtcnn.SUMS_FILE]:
        assert (tmp_path / name).read_bytes() == (mtcnn.DEFAULT_ASSETS / name).read_bytes(), name
