"""The faster warps, tone transfer and face-mask erosion give the same bytes as the code they replaced (kept
callable in bench/stage_speed.py as its baseline), on real faces, for every method of ``g2g mix``."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import aligned_faces

REPO = Path(__file__).resolve().parents[1]
SIZE = 160  # the side ``--size auto`` picks for the wild photos of ../shared


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("stage_speed", REPO / "bench" / "stage_speed.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def faces():
    from g2g.faces.geometry import face_mask
    from g2g.faces.landmarks import landmarks68

    crops = aligned_faces(5, SIZE)
    lm = landmarks68(crops, 1.3)
    return crops, lm, np.stack([face_mask(p, SIZE) for p in lm])


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(p, i) for p in range(n) for i in range(n) if p != i]


def test_warps_are_the_same_bytes(bench, faces):
    from g2g.faces.geometry import transfer_expression, warp_to
    from g2g.methods.compose import GeometryWarp

    crops, lm, _ = faces
    coords = np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE)), -1).astype(np.float32)  # training's warp_map
    for p, i in _pairs(len(crops)):
        geom = transfer_expression(lm[i], lm[p])
        for dst in (lm[p], geom):  # warp-paste's target, and expression-paste's
            assert np.array_equal(warp_to(crops[i], lm[i], dst), bench.old_warp_to(crops[i], lm[i], dst))
            assert np.array_equal(warp_to(coords, lm[i], dst), bench.old_warp_to(coords, lm[i], dst))
        for sharp in (True, False):  # both images of a pair onto one shared triangulation
            new, old = GeometryWarp(geom, SIZE, sharp), bench.OldGeometryWarp(geom, SIZE, sharp)
            assert np.array_equal(new(crops[i], lm[i]), old(crops[i], lm[i]))
            assert np.array_equal(new(crops[p], lm[p]), old(crops[p], lm[p]))


def test_pixels_of_no_triangle_map_onto_themselves():
    """Real faces leave no pixel centre outside every triangle; the rule for one that is, on a constructed case."""
    from g2g.faces.geometry import Triangulation

    size = 32
    pts = np.array([[8.0, 8.0], [24.0, 8.0], [16.0, 24.0]])
    lost = np.array([0, 5 * size + 7, size * size - 1])  # as if the rasteriser had missed these pixel centres
    map_x, map_y = replace(Triangulation.of(pts, size), outside=lost).maps(pts + 3.0)
    assert np.array_equal(map_x.flat[lost], lost % size) and np.array_equal(map_y.flat[lost], lost // size)
    inside = 16 * size + 16  # inside the triangle whose corners all moved by 3 px: moved by 3 px
    assert np.isclose(map_x.flat[inside], 19.0, atol=1e-4) and np.isclose(map_y.flat[inside], 19.0, atol=1e-4)


def test_face_masks_are_the_same_bytes(bench, faces):
    """The ellipse erosion as a minimum of rectangle erosions, alone and inside the face mask."""
    from g2g.faces.geometry import erode_ellipse, face_mask

    crops, lm, _ = faces
    rng = np.random.default_rng(0)
    for k in (3, 5, 9, 21, 39, 41, 77):
        x = rng.random((70, 90)).astype(np.float32)
        assert np.array_equal(erode_ellipse(x, k), bench.old_erode_ellipse(x, k)), k
    for points in lm:
        for size, soft in ((SIZE, 0.04), (SIZE, 0.02), (64, 0.04), (512, 0.04)):
            new = face_mask(points * size / SIZE, size, soft=soft)
            with bench.baseline():
                old = face_mask(points * size / SIZE, size, soft=soft)
            assert np.array_equal(new, old)


def test_tone_transfer_is_the_same_bytes(bench, faces):
    from g2g.faces.geometry import transfer_expression
    from g2g.methods.compose import TONE_SIGMA, feature_mask, transfer_tone
    from g2g.faces.landmarks import interocular68

    crops, lm, masks = faces
    for p, i in _pairs(len(crops)):
        geom = transfer_expression(lm[i], lm[p])
        skin = (masks[p] > 0.5) * (1 - feature_mask(geom, SIZE))
        sigma = TONE_SIGMA * float(interocular68(geom))
        assert np.array_equal(transfer_tone(crops[i], crops[p], skin.astype(np.float32), sigma),
                              bench.old_transfer_tone(crops[i], crops[p], skin.astype(np.float32), sigma))


@pytest.mark.parametrize("spec", ["default", "none", "all"])
def test_compose_is_the_same_bytes(bench, faces, spec):
    from g2g.methods.compose import Fixes, compose

    crops, lm, masks = faces
    fixes = Fixes.parse(spec)
    for p, i in _pairs(len(crops))[::2]:
        ids = [i] + [k for k in range(len(crops)) if k not in (p, i)][:2]  # K = 3: the occlusion fix has a majority
        new = compose(crops[p], lm[p], masks[p], crops[ids], lm[ids], fixes)
        with bench.baseline():
            old = compose(crops[p], lm[p], masks[p], crops[ids], lm[ids], fixes)
        assert np.array_equal(new[0], old[0]) and np.array_equal(new[1], old[1])


@pytest.mark.parametrize("method", ["paste", "warp-paste", "expression-paste", "model"])
def test_every_method_mixes_the_same_bytes(bench, faces, method):
    from g2g.methods import open_mixer

    crops, _, _ = faces
    cfg = bench.METHODS[method]
    mixer = open_mixer(cfg.method, None, device="cpu", size=SIZE, fixes=cfg.fixes)
    side = mixer.align.size
    small = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops])
    poses, idents = mixer.encode_poses(small[:2]), mixer.encode_identities([c[None] for c in small[2:]])
    new = bench.mix_all(mixer, poses, idents, batch=4)
    with bench.baseline():
        old = bench.mix_all(mixer, poses, idents, batch=4)
    assert new.shape == (6, side, side, 3) and np.array_equal(new, old)
