"""g2g prepare on a few real photos plus every kind of bad file: manifest, crops, resume, errors, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import need_shared
from g2g.faces.align import transform_points
from g2g.config import AlignConfig, PrepareConfig
from g2g.faces.detect import Face, FaceDetector
from g2g.photos import FacePolicy, select_faces
from g2g.prepare import MANIFEST_KEYS, PrepareError, prepare_folder, read_manifest


class CountingDetector:
    """A real MTCNN detector that counts the images it is asked about."""

    def __init__(self, inner: FaceDetector):
        self.inner, self.device, self.calls = inner, inner.device, 0

    def detect_batch(self, images):
        self.calls += len(images)
        return self.inner.detect_batch(images)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("cpu", min_face=20)


def _real_photos(n: int) -> list[Path]:
    wild = need_shared()
    return [p for d in sorted(wild.iterdir())[:2] for p in sorted(d.glob("*.jpg"))[:n]]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """2 identities x 3 real photos, converted variants, bad files and a flat photo (outside the repo)."""
    root = tmp_path_factory.mktemp("src")
    photos = _real_photos(3)
    for p in photos:
        (root / p.parent.name).mkdir(exist_ok=True)
        shutil.copy(p, root / p.parent.name / p.name)
    a, b = photos[0], photos[3]
    ida = root / a.parent.name
    Image.open(a).convert("L").save(ida / "gray.png")
    Image.open(a).convert("CMYK").save(ida / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated; displays upright after a 90 degree CCW turn
    Image.open(b).transpose(Image.Transpose.ROTATE_270).save(ida / "phone.jpg", exif=exif, quality=95)
    (ida / "empty.jpg").write_bytes(b"")
    data = a.read_bytes()
    (ida / "cut.jpg").write_bytes(data[: len(data) // 3])
    (ida / "text.jpg").write_text("not an image\n")
    (ida / "notes.txt").write_text("photographer: someone\n")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(ida / "blank.png")  # no face
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(ida / "tiny.png")
    shutil.copy(b, root / "flat_photo.jpg")  # a photo directly in SRC: its own identity
    return root


EXPECTED_SKIPS = {
    "empty.jpg": "empty-file", "cut.jpg": "truncated", "text.jpg": "not-an-image", "notes.txt": "not-an-image",
    "blank.png": "no-face", "tiny.png": "too-small",
}


@pytest.fixture(scope="module")
def prepared(src, tmp_path_factory, detector):
    out = tmp_path_factory.mktemp("data")
    counting = CountingDetector(detector)
    report = prepare_folder(src, out, PrepareConfig(size=96), progress=False, detector=counting)
    return out, report, counting


def test_manifest_schema(prepared, src):
    out, report, _ = prepared
    lines = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    n_files = sum(1 for p in src.rglob("*") if p.is_file())
    assert len(lines) == n_files == report.n_processed  # one line per source file (--faces largest)
    for rec in lines:
        assert set(rec) == set(MANIFEST_KEYS), rec["source"]
        for key, types in MANIFEST_KEYS.items():
            assert isinstance(rec[key], types), (rec["source"], key, rec[key])
        assert rec["status"] in ("ok", "skipped")
        assert (rec["reason"] is None) == (rec["status"] == "ok")
        assert rec["size"] == 96 and rec["zoom"] == 1.3
    cfg = json.loads((out / "prepare_config.json").read_text())
    assert cfg["size"] == 96 and len(cfg["template"]) == 5


def test_skips_have_the_right_reasons(prepared):
    out, report, _ = prepared
    by_name = {Path(r["source"]).name: r for r in read_manifest(out, ok_only=False)}
    for name, reason in EXPECTED_SKIPS.items():
        assert by_name[name]["status"] == "skipped" and by_name[name]["reason"] == reason, by_name[name]
        assert by_name[name]["message"]
    assert sum(report.skipped.values()) == len(EXPECTED_SKIPS)
    assert report.skipped["not-an-image"] == 2


def test_ok_crops_exist_and_landmarks_sit_on_the_template(prepared, src):
    out, report, _ = prepared
    ok = read_manifest(out)
    assert len(ok) == report.n_ok == 6 + 3 + 1  # real photos, gray/cmyk/phone variants, the flat photo
    template = np.asarray(AlignConfig(size=96).template())
    for rec in ok:
        crop = np.asarray(Image.open(out / rec["output"]))
        assert crop.shape == (96, 96, 3), rec["output"]
        cl = np.asarray(rec["crop_landmarks"])
        err = np.linalg.norm(cl - template, axis=1)
        # residual of a 5-point similarity fit: ~2 px on a frontal face, more on a turned head; wrong
        # alignment (swapped eyes, wrong scale) is tens of px
        assert err.mean() < 0.06 * 96 and err.max() < 0.12 * 96, (rec["source"], err)
        np.testing.assert_allclose(transform_points(np.asarray(rec["affine"]), rec["landmarks"]), cl, atol=0.02)
        assert rec["score"] >= 0.95 and rec["n_accepted"] >= 1 and rec["face_index"] == 0
        assert rec["identity"] == (Path(rec["source"]).parts[0] if "/" in rec["source"] else "flat_photo")
    by_name = {Path(r["source"]).name: r for r in ok}
    assert any("greyscale" in c for c in by_name["gray.png"]["conversions"])
    assert any("CMYK" in c for c in by_name["cmyk.jpg"]["conversions"])
    assert any("exif" in c for c in by_name["phone.jpg"]["conversions"])
    assert by_name["flat_photo.jpg"]["output"] == "flat_photo.png"
    # the EXIF-rotated copy aligns onto the same face as its upright original
    orig = next(r for r in ok if r["source"].endswith("/" + _real_photos(3)[3].name))
    assert by_name["phone.jpg"]["image_size"] == orig["image_size"]  # stored sideways, upright once decoded
    a = np.asarray(Image.open(out / orig["output"]), np.float64)
    b = np.asarray(Image.open(out / by_name["phone.jpg"]["output"]), np.float64)
    assert np.abs(a - b).mean() < 12


def test_resume_does_no_new_detection(prepared, src, detector):
    out, report, counting = prepared
    before = (out / "manifest.jsonl").read_text()
    assert counting.calls > 0
    again = CountingDetector(detector)
    r2 = prepare_folder(src, out, PrepareConfig(size=96), progress=False, detector=again)
    assert again.calls == 0 and r2.n_processed == 0
    assert r2.n_resumed == report.n_processed and r2.total_ok == report.n_ok
    assert (out / "manifest.jsonl").read_text() == before


def test_killed_run_redoes_only_the_missing(src, tmp_path, detector):
    out = tmp_path / "data"
    prepare_folder(src, out, PrepareConfig(size=64), progress=False, detector=detector)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    lost = [json.loads(s)["source"] for s in lines[-3:]]
    (out / "manifest.jsonl").write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:20])  # torn last line
    counting = CountingDetector(detector)
    r = prepare_folder(src, out, PrepareConfig(size=64), progress=False, detector=counting)
    assert r.n_processed == 3 and counting.calls <= 3
    sources = [rec["source"] for rec in read_manifest(out, ok_only=False)]
    assert sorted(sources[-3:]) == sorted(lost) and len(sources) == len(set(sources)) == len(lines)


def test_config_mismatch_is_an_error(prepared, src):
    out, _, _ = prepared
    with pytest.raises(PrepareError, match="size 96 -> 128"):
        prepare_folder(src, out, PrepareConfig(size=128), progress=False)
    with pytest.raises(PrepareError, match="zoom"):
        prepare_folder(src, out, PrepareConfig(size=96, zoom=1.5), progress=False)


def test_empty_or_bad_src_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no images"):
        prepare_folder(tmp_path / "empty", tmp_path / "out", progress=False)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(PrepareError, match="no images"):
        prepare_folder(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(PrepareError, match="not a folder"):
        prepare_folder(tmp_path / "missing", tmp_path / "out", progress=False)
    with pytest.raises(PrepareError, match="--size"):
        prepare_folder(tmp_path / "empty", tmp_path / "out", PrepareConfig(size=32), progress=False)


def test_two_faces_with_each_policy(tmp_path, detector):
    a, b = (Image.open(p).convert("RGB").resize((240, 300)) for p in _real_photos(1))
    pair = Image.new("RGB", (480, 300))
    pair.paste(a, (0, 0))
    pair.paste(b, (240, 0))
    (tmp_path / "src" / "p").mkdir(parents=True)
    pair.save(tmp_path / "src" / "p" / "two.jpg", quality=95)
    r = prepare_folder(tmp_path / "src", tmp_path / "all", PrepareConfig(size=64, faces="all"), False, detector)
    recs = read_manifest(tmp_path / "all")
    assert r.n_crops == 2 and [x["output"] for x in recs] == ["p/two_0.png", "p/two_1.png"]
    assert [x["face_index"] for x in recs] == [0, 1] and all(x["n_accepted"] == 2 for x in recs)
    prepare_folder(tmp_path / "src", tmp_path / "skip", PrepareConfig(size=64, faces="skip-multiple"), False, detector)
    assert read_manifest(tmp_path / "skip", ok_only=False)[0]["reason"] == "multiple-faces"


def _face(x: float, side: float, score: float) -> Face:
    return Face((x, 0.0, x + side, side), score, np.zeros((5, 2)))


def test_select_faces_policy():
    cfg = FacePolicy.of(PrepareConfig(min_face=40, min_score=0.95))
    assert select_faces([], cfg)[1] == "no-face"
    assert select_faces([_face(0, 100, 0.9)], cfg)[1] == "low-score"
    assert select_faces([_face(0, 30, 0.99)], cfg)[1] == "face-too-small"
    faces = [_face(0, 50, 0.99), _face(100, 200, 0.3), _face(300, 80, 0.97)]  # big one is unsure
    chosen, reason, _ = select_faces(faces, cfg)
    assert reason is None and chosen == [faces[2]]  # largest among the accepted, not the low-score one
    assert select_faces(faces, FacePolicy(faces="all"))[0] == [faces[2], faces[0]]
    assert select_faces(faces, FacePolicy(faces="skip-multiple"))[1] == "multiple-faces"


def test_cli_prepare(tmp_path):
    from typer.testing import CliRunner

    from conftest import cli_error
    from g2g.cli import app

    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    shutil.copy(_real_photos(1)[0], src / "x" / "a.jpg")
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", str(src), "-o", str(tmp_path / "d"), "--size", "64", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "d" / "x" / "a.png").exists() and "ok" in res.stderr
    summary = json.loads(res.stdout)  # --json: the summary alone on stdout
    assert summary["n_ok"] == 1 and summary["aligned_fraction"] == 1.0
    from PIL import Image

    one_row = Image.open(tmp_path / "d" / "preview.jpg").size[1]  # the crops of one identity
    (src / "x" / "broken.jpg").write_bytes(b"")
    res = runner.invoke(app, ["prepare", str(src), "-o", str(tmp_path / "d"), "--size", "64", "--device", "cpu",
                              "--strict"])
    assert res.exit_code == 1 and "--strict" in res.output  # a skipped photo, and --strict says so
    assert Image.open(tmp_path / "d" / "preview.jpg").size[1] > 1.8 * one_row  # a row of skipped photos
    (tmp_path / "e").mkdir()
    res = runner.invoke(app, ["prepare", str(tmp_path / "e"), "-o", str(tmp_path / "d2")])
    cli_error(res, 3, "no images")
    res = runner.invoke(app, ["prepare", str(src), "-o", str(tmp_path / "d3"), "--size", "9"])
    cli_error(res, 2, "--size")  # an option value no verb accepts: a usage error


def test_a_video_gets_the_extract_frames_hint(tmp_path):
    """A folder of video clips is not "no images found" alone: the line says how to get frames."""
    from typer.testing import CliRunner

    from g2g.cli import app

    src = tmp_path / "clips"
    src.mkdir()
    (src / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    res = CliRunner().invoke(app, ["prepare", str(src), "-o", str(tmp_path / "data")])
    assert res.exit_code == 3, res.output
    assert "1 video file(s) skipped" in res.output and "ffmpeg -i" in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "data").exists()
