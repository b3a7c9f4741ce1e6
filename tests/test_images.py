"""g2g.io.images: every kind of bad or unusual input, made on the fly."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from g2g.io.images import SkipImage, load_rgb, scan_folder


def _photo(w: int = 80, h: int = 60) -> np.ndarray:
    """A smooth RGB test image whose corners differ, so rotations are detectable."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(np.uint8)


def _save(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


def _skip_reason(path: Path, **kw) -> str:
    with pytest.raises(SkipImage) as e:
        load_rgb(path, **kw)
    assert e.value.message  # every skip explains itself
    return e.value.reason


def test_plain_rgb_jpeg(tmp_path):
    p = _save(tmp_path / "a.jpg", Image.fromarray(_photo()), quality=95)
    im = load_rgb(p)
    assert im.rgb.shape == (60, 80, 3) and im.rgb.dtype == np.uint8
    assert im.conversions == []
    assert np.abs(im.rgb.astype(int) - _photo().astype(int)).mean() < 4


def test_zero_byte(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert _skip_reason(p) == "empty-file"


def test_unreadable(tmp_path):
    assert _skip_reason(tmp_path / "missing.jpg") == "unreadable"
    d = tmp_path / "folder.jpg"
    d.mkdir()
    assert _skip_reason(d) == "unreadable"
    if os.name == "posix" and os.geteuid() != 0:
        p = _save(tmp_path / "locked.jpg", Image.fromarray(_photo()))
        p.chmod(0)
        try:
            assert _skip_reason(p) == "unreadable"
        finally:
            p.chmod(0o644)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("these are not pixels\n" * 20)
    assert _skip_reason(p) == "not-an-image"


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("PNG", "png")])
def test_truncated(tmp_path, fmt, suffix):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{suffix}"
    p.write_bytes(data[: len(data) // 2])
    assert _skip_reason(p) == "truncated"


def test_grayscale(tmp_path):
    p = _save(tmp_path / "g.png", Image.fromarray(_photo()).convert("L"))
    im = load_rgb(p)
    assert im.rgb.shape == (60, 80, 3)
    assert (im.rgb[..., 0] == im.rgb[..., 1]).all() and (im.rgb[..., 1] == im.rgb[..., 2]).all()
    assert any("greyscale" in c for c in im.conversions)


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((60, 80, 4), np.uint8)
    a[..., :3] = (10, 20, 30)
    a[:, 40:, 3] = 255  # left half fully transparent
    p = _save(tmp_path / "t.png", Image.fromarray(a, "RGBA"))
    im = load_rgb(p)
    assert (im.rgb[:, :40] == 255).all()  # transparent -> white
    assert (im.rgb[:, 40:] == (10, 20, 30)).all()  # opaque kept
    assert any("RGBA" in c and "white" in c for c in im.conversions)


def test_palette_and_la(tmp_path):
    p = _save(tmp_path / "p.png", Image.fromarray(_photo()).convert("P"))
    assert load_rgb(p).rgb.shape == (60, 80, 3)
    la = Image.fromarray(_photo()).convert("LA")
    assert load_rgb(_save(tmp_path / "la.png", la)).rgb.shape == (60, 80, 3)


def test_cmyk(tmp_path):
    rgb = Image.fromarray(_photo())
    p = _save(tmp_path / "c.jpg", rgb.convert("CMYK"), quality=95)
    assert Image.open(p).mode == "CMYK"
    im = load_rgb(p)
    assert im.rgb.shape == (60, 80, 3)
    assert any("CMYK" in c for c in im.conversions)
    assert np.abs(im.rgb.astype(int) - np.asarray(rgb).astype(int)).mean() < 12  # colours survive the round trip


def test_16bit_png(tmp_path):
    a16 = (np.linspace(0, 65535, 80)[None, :].repeat(60, 0)).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(a16).save(p)
    assert Image.open(p).mode.startswith("I")
    im = load_rgb(p)
    assert im.rgb.dtype == np.uint8 and im.rgb.shape == (60, 80, 3)
    assert im.rgb[0, 0, 0] == 0 and im.rgb[0, -1, 0] == 255  # full range scaled, not clipped
    assert abs(int(im.rgb[0, 40, 0]) - round(a16[0, 40] / 257)) <= 1
    assert any("16-bit" in c or "greyscale" in c for c in im.conversions)


def test_exif_rotated(tmp_path):
    a = _photo(80, 60)  # landscape pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = _save(tmp_path / "phone.jpg", Image.fromarray(a), exif=exif, quality=95)
    im = load_rgb(p)
    assert im.rgb.shape == (80, 60, 3)  # displayed portrait
    expected = np.rot90(a, k=-1)  # 90 degrees clockwise
    assert np.abs(im.rgb.astype(int) - expected.astype(int)).mean() < 4
    assert any("exif" in c for c in im.conversions)


def test_huge_is_skipped_before_decoding(tmp_path):
    p = _save(tmp_path / "big.png", Image.fromarray(_photo(200, 150)))
    assert _skip_reason(p, max_pixels=10_000) == "too-large"
    assert load_rgb(p, max_pixels=200 * 150).size == (200, 150)


def test_tiny(tmp_path):
    p = _save(tmp_path / "tiny.png", Image.fromarray(_photo(20, 16)))
    assert _skip_reason(p, min_side=32) == "too-small"


def test_scan_folder_reports_non_images(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for rel in ["b/2.JPG", "a/1.png", "a/notes.txt", "top.jpeg", ".DS_Store", "a/._1.png"]:
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "crop.png").write_bytes(b"x")
    images, others, unused = scan_folder(tmp_path, exclude=tmp_path / "out")
    assert [p.relative_to(tmp_path).as_posix() for p in images] == ["a/1.png", "b/2.JPG", "top.jpeg"]
    assert [p.relative_to(tmp_path).as_posix() for p in others] == ["a/notes.txt"]
    # hidden files are not used, and said so (the output folder inside is not an input at all)
    assert [(p.relative_to(tmp_path).as_posix(), why) for p, why in unused] == [(".DS_Store", "hidden"),
                                                                                ("a/._1.png", "hidden")]
