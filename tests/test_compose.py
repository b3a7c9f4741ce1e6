"""Each give-away remover of g2g.methods.compose does what it says on a constructed case, and nothing when it is off."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import aligned_faces

SIZE = 128


@pytest.fixture(scope="module")
def faces():
    from g2g.faces.geometry import face_mask
    from g2g.faces.landmarks import landmarks68

    crops = aligned_faces(4, SIZE)
    lm = landmarks68(crops, 1.3)
    return crops, lm, np.stack([face_mask(p, SIZE) for p in lm])


def _compose(pose, pose_lm, ids, ids_lm, spec: str):
    from g2g.methods.compose import Fixes, compose
    from g2g.faces.geometry import face_mask

    return compose(pose, pose_lm, face_mask(pose_lm, SIZE), ids, ids_lm, Fixes.parse(spec))


def _disk(img: np.ndarray, centre, radius: float, colour) -> np.ndarray:
    out = img.copy()
    cv2.circle(out, tuple(int(round(v)) for v in centre), int(round(radius)), tuple(int(c) for c in colour), -1)
    return out


def _lab(x: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(x, cv2.COLOR_RGB2LAB).astype(np.float32)


def _geom(ids_lm, pose_lm):
    from g2g.faces.geometry import transfer_expression

    return transfer_expression(ids_lm[0], pose_lm)


def test_fixes_parse_and_spell():
    from g2g.methods.compose import Fixes
    from g2g.errors import G2GError

    assert Fixes.parse("default") == Fixes() and Fixes.parse("none") == Fixes.none() and Fixes.parse("all") == Fixes.all()
    assert Fixes.parse("all,-tone").tone is False and Fixes.parse("all,-tone").eyes
    assert Fixes.parse("default,eyes").eyes and Fixes.parse("default,eyes").mouth and not Fixes.parse("default").eyes
    assert Fixes.parse("eyes,mouth") == Fixes(**{**{k: False for k in vars(Fixes.none())}, "eyes": True, "mouth": True})
    assert Fixes.parse("pose-occluders").pose_occluders
    assert Fixes().spec() == "default" and Fixes.none().spec() == "none" and Fixes.all().spec() == "all"
    assert Fixes.parse("seam,eyes").spec() == "eyes,seam"
    with pytest.raises(G2GError, match="unknown fix 'glow'"):
        Fixes.parse("all,-glow")


def test_no_fixes_is_the_plain_expression_paste(faces):
    from g2g.config import AlignConfig
    from g2g.methods.base import IdentityFaces, PoseFace
    from g2g.methods.expression_paste import ExpressionPasteMixer

    crops, lm, masks = faces
    plain = ExpressionPasteMixer(AlignConfig(size=SIZE))
    pose, ident = PoseFace(crops[0], lm[0], masks[0]), IdentityFaces(crops[1:2], lm[1:2], masks[1:2])
    want, _ = plain.mix([pose], [ident])
    got, mask = _compose(crops[0], lm[0], crops[1:2], lm[1:2], "none")
    assert np.abs(got.astype(int) - want[0].astype(int)).max() <= 1  # the same paste (rounding of one blend)
    assert np.array_equal(got[mask == 0], crops[0][mask == 0])  # nothing beyond the mask changes


def test_all_fixes_change_nothing_beyond_the_mask(faces):
    crops, lm, _ = faces
    ids = np.stack([crops[1], crops[2], crops[3]])
    out, mask = _compose(crops[0], lm[0], ids, lm[1:4], "all")
    assert np.array_equal(out[mask == 0], crops[0][mask == 0])
    assert np.abs(out.astype(int) - crops[0].astype(int))[mask > 0.99].mean() > 5  # and the face did change


def test_an_occluder_in_one_of_k_photos_does_not_reach_the_output(faces):
    crops, lm, _ = faces
    rng = np.random.default_rng(0)
    ids = np.stack([np.clip(crops[1].astype(int) + rng.integers(-3, 4, crops[1].shape), 0, 255).astype(np.uint8)
                    for _ in range(3)])
    cheek = (lm[1][3] + lm[1][31]) / 2
    iod = np.linalg.norm(lm[1][42:48].mean(0) - lm[1][36:42].mean(0))
    ids[0] = _disk(ids[0], cheek, 0.18 * iod, (30, 220, 40))  # a green occluder in the photo that is used
    ids_lm = np.stack([lm[1]] * 3)
    at = (_geom(ids_lm, lm[0])[3] + _geom(ids_lm, lm[0])[31]) / 2
    region = _disk(np.zeros((SIZE, SIZE, 3), np.uint8), at, 0.1 * iod, (1, 1, 1))[..., 0] > 0

    def green(spec: str) -> float:
        out, _ = _compose(crops[0], lm[0], ids, ids_lm, spec)
        px = out[region].astype(float)
        return float((px[:, 1] - (px[:, 0] + px[:, 2]) / 2).mean())

    assert green("none") > 60  # a plain paste carries it
    assert green("occlusion") < 15  # the two photos that agree fill it


def test_a_fringe_of_the_identity_is_not_pasted(faces):
    from g2g.methods.compose import feature_mask
    from g2g.faces.geometry import face_mask

    crops, lm, _ = faces
    clean, l1 = crops[1], lm[1]
    fringe = clean.copy()
    fringe[: int(l1[17:27, 1].max()), int(l1[17, 0]):int(l1[26, 0])] = (40, 25, 15)  # dark hair down to the brows
    geom = _geom(lm[1:2], lm[0])
    mask = np.maximum(face_mask(lm[0], SIZE), face_mask(geom, SIZE))
    band = (mask > 0.5) & (np.arange(SIZE)[:, None] < geom[17:27, 1].max()) & (feature_mask(geom, SIZE) < 0.1)
    band &= (np.arange(SIZE)[None, :] > geom[18, 0]) & (np.arange(SIZE)[None, :] < geom[25, 0])
    assert band.sum() > 40

    def reach(spec: str) -> float:
        """How much the fringe changes the output's forehead (L, mean)."""
        a = _compose(crops[0], lm[0], fringe[None], lm[1:2], spec)[0]
        b = _compose(crops[0], lm[0], clean[None], lm[1:2], spec)[0]
        return float(np.abs(_lab(a)[band, 0] - _lab(b)[band, 0]).mean())

    assert reach("none") > 40
    assert reach("skin") < 0.5 * reach("none")


def test_a_finger_over_the_pose_lips_survives(faces):
    from g2g.methods.compose import lips_mask

    crops, lm, _ = faces
    pose, p = crops[0].copy(), lm[0]
    skin = np.median(pose[int(p[29, 1]) - 2:int(p[29, 1]) + 2, int(p[29, 0]) - 2:int(p[29, 0]) + 2].reshape(-1, 3), 0)
    mouth_w = p[54, 0] - p[48, 0]
    cx = p[48:60, 0].mean()
    finger = np.zeros((SIZE, SIZE), np.uint8)
    cv2.rectangle(finger, (int(cx - 0.5 * mouth_w), int(p[33, 1] + 2)), (int(cx + 0.5 * mouth_w), SIZE - 1), 1, -1)
    pose[finger > 0] = skin.astype(np.uint8)  # a finger of the pose's own skin over its lips
    ids = np.stack([crops[1]] * 3)
    geom = _geom(lm[1:2], p)
    lips = lips_mask(geom, SIZE) > 0.5

    def off_finger(spec: str) -> float:
        out, _ = _compose(pose, p, ids, np.stack([lm[1]] * 3), spec)
        return float(np.linalg.norm(_lab(out)[lips] - _lab(skin[None, None].astype(np.uint8))[0, 0], axis=-1).mean())

    assert off_finger("none") > 2.5 * off_finger("pose-occluders")  # the identity's lips are painted over it
    assert off_finger("pose-occluders") < 12  # the finger stays


def test_a_closed_mouth_stays_closed(faces):
    from g2g.faces.geometry import inner_mouth_mask, warp_to
    from g2g.faces.landmarks import interocular68

    crops, lm, _ = faces
    iod = float(interocular68(lm[1]))
    open_lm = lm[1].copy()
    open_lm[[65, 66, 67, 56, 57, 58], 1] += 0.22 * iod  # the identity photo smiles with its teeth showing
    open_lm[5:12, 1] += 0.15 * iod
    ident = warp_to(crops[1], lm[1], open_lm)
    ident[inner_mouth_mask(open_lm, SIZE, grow=0.0) > 0.5] = (245, 245, 240)
    closed = lm[0].copy()
    closed[[65, 66, 67], 1] = closed[[63, 62, 61], 1] + 0.5  # the pose's lips meet (dlib leaves about this gap)
    geom = _geom(open_lm[None], closed)
    gap = inner_mouth_mask(geom, SIZE, grow=1.0) > 0.05
    lips = crops[0]

    def teeth(spec: str) -> int:
        """Pixels between and on the lips that are white (bright, hardly any colour): the squeezed teeth."""
        lab = _lab(_compose(lips, closed, ident[None], open_lm[None], spec)[0])[gap]
        return int(((lab[:, 0] > 215) & (np.hypot(lab[:, 1] - 128, lab[:, 2] - 128) < 24)).sum())

    assert teeth("none") > 15  # the squeezed teeth show as a white sliver
    assert teeth("mouth") < 0.2 * teeth("none")


def test_the_pose_gaze_is_kept(faces):
    crops, lm, _ = faces
    pose, p = crops[0].copy(), lm[0]
    iod = np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0))
    for eye in (slice(36, 42), slice(42, 48)):
        inner = p[eye]
        pose = _disk(pose, (inner[:, 0].min() + 0.3 * (inner[:, 0].max() - inner[:, 0].min()), inner[:, 1].mean()),
                     0.08 * iod, (10, 60, 10))  # a green iris looking to the image's left
    geom = _geom(lm[1:2], p)

    def iris_left(spec: str) -> float:
        out, _ = _compose(pose, p, crops[1:2], lm[1:2], spec)
        score = []
        for eye in (slice(36, 42), slice(42, 48)):
            e = geom[eye]
            x = int(e[:, 0].min() + 0.3 * (e[:, 0].max() - e[:, 0].min()))
            y = int(round(e[:, 1].mean()))
            px = out[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(float)
            score.append((px[:, 1] - (px[:, 0] + px[:, 2]) / 2).mean())
        return float(np.mean(score))

    assert iris_left("eyes") > iris_left("none") + 15


def test_tone_follows_the_pose_light(faces):
    crops, lm, _ = faces
    light = np.linspace(1.35, 0.65, SIZE, dtype=np.float32)[None, :, None]  # the scene is lit from the left
    pose = np.clip(crops[0].astype(np.float32) * light, 0, 255).astype(np.uint8)
    inner = _inner(lm[0])
    left = np.arange(SIZE)[None, :] < SIZE / 2

    def left_minus_right(x: np.ndarray) -> float:
        L = _lab(x)[..., 0]
        return float(L[inner & left].mean() - L[inner & ~left].mean())

    want = left_minus_right(pose)
    assert want > 15

    def off(spec: str) -> float:
        return abs(left_minus_right(_compose(pose, lm[0], crops[1:2], lm[1:2], spec)[0]) - want)

    assert off("tone") < 0.6 * off("none")


def _inner(lm) -> np.ndarray:
    from g2g.faces.geometry import face_mask

    return face_mask(lm, SIZE) > 0.99


def test_the_seam_blend_spreads_a_tone_step_and_keeps_the_outside():
    from g2g.methods.compose import pyramid_blend
    from g2g.faces.geometry import blend

    rng = np.random.default_rng(0)
    onto = np.clip(120 + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    face = np.clip(onto.astype(int) + 45, 0, 255).astype(np.uint8)  # the same texture, a tone brighter
    mask = np.zeros((SIZE, SIZE), np.float32)
    cv2.circle(mask, (64, 64), 40, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.7)  # a near-hard edge: a plain blend shows the step there
    mask[mask < 0.001] = 0
    plain, multi = blend(face, onto, mask), pyramid_blend(face, onto, mask)
    assert np.array_equal(multi[mask == 0], onto[mask == 0])

    def steepest(x: np.ndarray) -> float:
        row = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.5)[64, :, 0]
        return float(np.abs(np.diff(row)).max())

    assert steepest(multi) < 0.6 * steepest(plain)


def test_auto_crop_side_follows_the_pose_face_resolution(tmp_path):
    from PIL import Image

    from conftest import need_shared
    from g2g.config import AlignConfig, MixConfig
    from g2g.photos import AUTO_SIDES, auto_side, native_sides

    wild = need_shared()
    photo = sorted(sorted(p for p in wild.iterdir() if p.is_dir())[0].glob("*.jpg"))[0]
    im = Image.open(photo).convert("RGB")
    im.save(tmp_path / "small.png")
    im.resize((im.width * 3, im.height * 3), Image.BICUBIC).save(tmp_path / "large.png")
    probe = AlignConfig(size=128)
    small, large = (native_sides(tmp_path, [n], MixConfig(device="cpu"), np.asarray(probe.template()), 128)
                    for n in ("small.png", "large.png"))
    assert len(small) == len(large) == 1
    assert 2.7 < large[0] / small[0] < 3.3  # three times the pixels across the face: three times the side
    assert auto_side([small[0]]) >= AUTO_SIDES[0] and auto_side([large[0]]) <= AUTO_SIDES[1]
    assert auto_side([150.0, 290.0, 300.0]) == 320 and auto_side([]) == AUTO_SIDES[0] and auto_side([2000.0]) == 512
