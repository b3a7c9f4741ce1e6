"""g2g.faces.align: geometry of the 5-point similarity alignment."""

from __future__ import annotations

import numpy as np
import pytest

from g2g.faces.align import align_face, estimate_similarity, invert_affine, outside_fraction, transform_points, warp_face
from g2g.config import AlignConfig


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (17, 2.3, 40, -12), (-63, 0.4, 150, 220), (180, 1.1, 5, 5)])
def test_known_similarity_is_recovered(angle, scale, tx, ty):
    template = np.asarray(AlignConfig(size=128).template())
    S = _similarity(angle, scale, tx, ty)  # crop -> photo
    photo_pts = transform_points(S, template)
    M = estimate_similarity(photo_pts, template)  # photo -> crop
    np.testing.assert_allclose(M, invert_affine(S), atol=1e-9)
    np.testing.assert_allclose(transform_points(M, photo_pts), template, atol=1e-9)


def test_least_squares_with_noise_is_unbiased():
    rng = np.random.default_rng(0)
    template = np.asarray(AlignConfig().template())
    S = _similarity(10, 1.7, 30, 50)
    pts = transform_points(S, template) + rng.normal(0, 0.5, (5, 2))
    M = estimate_similarity(pts, template)
    assert np.abs(transform_points(M, pts) - template).max() < 1.5
    np.testing.assert_allclose(M[:, :2], invert_affine(S)[:, :2], atol=0.01)
    clean = transform_points(S, template)
    assert np.abs(transform_points(M, clean) - template).max() < 0.5  # 0.5 px photo noise, averaged over 5 points


def test_degenerate_points_raise():
    with pytest.raises(ValueError):
        estimate_similarity(np.zeros((5, 2)), np.asarray(AlignConfig().template()))


def test_invert_affine_roundtrip():
    M = _similarity(33, 0.8, -4, 9)
    pts = np.array([[0.0, 0.0], [10, 20], [-5, 7.5]])
    np.testing.assert_allclose(transform_points(invert_affine(M), transform_points(M, pts)), pts, atol=1e-9)


def _dots_image(h: int, w: int, pts: np.ndarray, radius: float) -> np.ndarray:
    """Black image with a bright Gaussian blob at each point (sub-pixel centres)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for x, y in pts:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius**2))
    return np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)


def _blob_centre(crop: np.ndarray, near: np.ndarray, r: int = 6) -> np.ndarray:
    """Intensity-weighted centre of the blob near ``near`` in the crop."""
    g = crop[..., 0].astype(np.float64)
    x0, y0 = np.round(near).astype(int)
    ys, xs = np.mgrid[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
    wgt = g[ys, xs]
    return np.array([(xs * wgt).sum() / wgt.sum(), (ys * wgt).sum() / wgt.sum()])


@pytest.mark.parametrize("angle,scale", [(12, 1.6), (-25, 3.5), (40, 0.7)])  # 3.5: crop downscales the photo ~3.5x
def test_warp_puts_landmarks_on_the_template(angle, scale):
    cfg = AlignConfig(size=128, zoom=1.3)
    template = np.asarray(cfg.template())
    S = _similarity(angle, scale, 0, 0)  # crop -> photo
    S[:, 2] = np.array([300.0, 260.0]) - S[:, :2] @ [64.0, 64.0]  # crop centre -> centre of a 600 x 520 photo
    photo_pts = transform_points(S, template)
    img = _dots_image(520, 600, photo_pts, radius=2.0 * scale)
    crop, M = align_face(img, photo_pts, cfg)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    for found, want in zip((_blob_centre(crop, t) for t in template), template):
        assert np.linalg.norm(found - want) < 0.25, (found, want)  # measured ~0.01 px


def test_warp_fills_outside_by_mirroring():
    img = np.full((100, 100, 3), 200, np.uint8)
    M = np.array([[1.0, 0, 60], [0, 1.0, 0]])  # crop x < 60 is left of the photo
    crop = warp_face(img, M, 128)
    assert crop.min() == 200  # mirrored, not black bars
    assert 0.4 < outside_fraction((100, 100), M, 128) < 0.7
    assert outside_fraction((1000, 1000), np.array([[1.0, 0, 0], [0, 1.0, 0]]), 128) == 0.0
