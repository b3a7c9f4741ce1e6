"""How a warped identity face becomes part of a photograph: the mechanisms that remove what gives a mix away.

A plain expression paste (the identity photo warped onto its own face shape with
the pose's expression, :mod:`g2g.methods.expression_paste`) is recognisable as a paste: the warp
softens the face, the identity photo's light meets the pose's head, a closed mouth
shows the teeth of an open one squeezed into a sliver, occluders of either photo
are carried over or painted over. Each mechanism below removes one give-away, on
aligned crops, from the 68 points only (no network), and each is a switch of
:class:`Fixes` (``g2g mix --fixes``), so that its effect on realism, identity and
expression is measured on its own (docs/realism.md). On by default, because they
made the faces harder to tell from photographs at the same identity and expression:

- ``mouth``: the pose's own mouth opening (teeth, tongue, the dark inside) warped
  onto the target geometry, however small; where the pose's lips meet, white
  pixels between them (an open mouth's teeth, squeezed) take the lips' colour.
- ``sharp``: the warps are bicubic at twice the resolution, area-averaged back.
- ``tone``: the face's low-frequency colour (skin tone, light) from the pose,
  measured on skin only; its detail (the identity's features) kept; grain matched.

Off by default (each measured; see docs/realism.md for what it costs):

- ``eyes``: the pose's own eye interior (iris, sclera: the gaze).
- ``skin``: in the upper face, non-skin pixels of the identity face that are none
  of its features (hair, a hat brim, a glasses frame) are not pasted. Skin is the
  face's own colour (a robust Gaussian in Lab, chroma first, fitted on its cheeks).
- ``pose-occluders``: the pose's non-skin pixels in the upper face that are none of
  its features (glasses, a fringe), and skin-coloured pixels over its lips (a
  finger), stay the pose's.
- ``occlusion``: of the K identity photos warped onto one geometry, pixels that
  only the chosen photo shows (a hand, sunglasses in one photo) come from the others.
- ``seam``: multi-band (Laplacian pyramid) blending at the mask's edge.
- ``quality``: of the K photos, the sharpest of those close in pose.

Torch-free; numpy and OpenCV on uint8 (S, S, 3) RGB crops.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from g2g.errors import G2GError
from g2g.faces.geometry import (Triangulation, blend, face_mask, inner_mouth_mask, match_colour, transfer_expression,
                                warp_onto)
from g2g.faces.landmarks import EYE_L, EYE_R, INNER_LIPS, interocular68, mouth_opening

MOUTH_OPEN = 0.08  # inner-lip gap over the IOD above which a mouth shows its inside (dlib's fit jitters below)
OCCLUSION_LAB = 28.0  # Lab distance of a pixel from the K photos' median beyond which it is one photo's occluder
SKIN_SIGMAS = (2.5, 4.0)  # robust z-score of a pixel's colour: skin below the first, not skin above the second
TONE_SIGMA = 0.5  # low-frequency scale of the tone transfer, in inter-ocular distances
PYRAMID_LEVELS = 3  # bands of the seam blend (at 128 px: 128, 64, 32)


@dataclass(frozen=True)
class Fixes:
    """Which give-away removers run. The defaults are the ones that earned their place on held-out people (a
    classifier tells the faces from photos less often, at the same identity and expression: docs/realism.md);
    ``Fixes.all()`` runs every one, ``Fixes.none()`` is the plain expression paste."""

    mouth: bool = True  # the pose's own mouth opening, however small; a closed mouth drawn closed
    sharp: bool = True  # bicubic warps at twice the resolution: the warped face keeps the photo's detail
    tone: bool = True  # the pose's low-frequency tone and light, grain matched
    eyes: bool = False  # the pose's eye interior (gaze)
    skin: bool = False  # non-skin pixels of the identity's upper face (hair, hat, glasses) are not pasted
    pose_occluders: bool = False  # the pose's own occluders in the upper face and over the lips stay
    occlusion: bool = False  # the identity's occluders in one of K photos: K-photo consensus
    seam: bool = False  # multi-band blending at the mask's edge
    quality: bool = False  # of the K photos, the sharpest of those close in pose (not only the closest)

    @classmethod
    def none(cls) -> "Fixes":
        return cls(**{f.name: False for f in fields(cls)})

    @classmethod
    def all(cls) -> "Fixes":
        return cls(**{f.name: True for f in fields(cls)})

    @classmethod
    def names(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(cls)]

    @classmethod
    def parse(cls, spec: str) -> "Fixes":
        """``default`` | ``all`` | ``none`` | a comma list of names, each ``-name`` to turn it off:
        ``"default,-tone"``, ``"default,eyes"``, ``"eyes,mouth"`` (only those)."""
        items = [s.strip() for s in str(spec).split(",") if s.strip()] or ["default"]
        bases = {"default": cls(), "all": cls.all(), "none": cls.none()}
        on: dict[str, bool] = {}
        base = cls.none()
        for it in items:
            name = it.lstrip("+-")
            if name in bases:
                base, on = bases[name], {}
                continue
            if name not in cls.names():
                raise G2GError(f"--fixes: unknown fix {name!r}; choose from default, all, none, "
                               f"{', '.join(cls.names())}", usage=True)
            on[name.replace("-", "_")] = not it.startswith("-")
        return cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, **on})

    def spec(self) -> str:
        """The canonical spelling (``default``, ``all``, ``none`` or the names of those on), for hashes and
        reports."""
        for name, value in (("default", type(self)()), ("all", self.all()), ("none", self.none())):
            if self == value:
                return name
        return ",".join(n for n in self.names() if getattr(self, n.replace("-", "_")))


def base_fixes(spec: str) -> Fixes | None:
    """The fixes of a model's ``base_fixes`` (``ModelConfig``): None for "none" (the decoder draws over the plain
    warped paste; "" in bundles made before the field), else :meth:`Fixes.parse` of it."""
    return None if spec.strip() in ("", "none") else Fixes.parse(spec)


# --- regions from the 68 points -----------------------------------------------------------------------------------


def _poly(canvas: np.ndarray, pts: np.ndarray, closed: bool = True, thickness: int = 0) -> None:
    p = np.round(np.asarray(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
    if thickness:
        cv2.polylines(canvas, [p], closed, 1.0, thickness, lineType=cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(canvas, [p], 1.0, lineType=cv2.LINE_AA, shift=4)


def feature_mask(lm: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32 in [0, 1]: eyes, brows, nose and mouth, the eyes, nose and mouth grown by about a tenth of
    the IOD: the parts of a face that are not skin by nature, so no skin test ever takes them for an occluder."""
    lm = np.asarray(lm, np.float64)
    iod = float(interocular68(lm))
    out = np.zeros((size, size), np.float32)
    for eye in (EYE_L, EYE_R):
        c = lm[eye].mean(0)
        _poly(out, c + (lm[eye] - c) * np.array([1.3, 2.2]))
    _poly(out, lm[[31, 32, 33, 34, 35, 30]])  # nostrils and the tip
    _poly(out, lm[27:31], closed=False, thickness=max(1, int(round(0.08 * iod))))
    c = lm[48:60].mean(0)
    _poly(out, c + (lm[48:60] - c) * 1.15)
    k = max(3, int(round(0.12 * iod)) | 1)
    out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    t = max(1, int(round(0.14 * iod)))  # the brows as they are: the hair just above them is not a brow
    _poly(out, lm[17:22], closed=False, thickness=t)
    _poly(out, lm[22:27], closed=False, thickness=t)
    return np.clip(cv2.GaussianBlur(out, (0, 0), 0.04 * iod), 0.0, 1.0)


def eye_interior_mask(lm: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32: inside both eyes' lids (iris and sclera), a little shrunk so the lid line stays."""
    lm = np.asarray(lm, np.float64)
    out = np.zeros((size, size), np.float32)
    for eye in (EYE_L, EYE_R):
        c = lm[eye].mean(0)
        _poly(out, c + (lm[eye] - c) * np.array([0.92, 0.85]))
    return np.clip(cv2.GaussianBlur(out, (0, 0), 0.4 * size / 64), 0.0, 1.0)


def upper_face(lm: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32: 1 above the middle of the nose, fading to 0 over a fifth of the IOD below it. Hair, a hat
    brim, a fringe and glasses sit there; below it, what is not skin is usually the person's own (a beard,
    stubble), so no skin test reaches there."""
    lm = np.asarray(lm, np.float64)
    cut, iod = float(lm[29, 1]), float(interocular68(lm))
    y = np.arange(size, dtype=np.float32)[:, None]
    return np.broadcast_to(np.clip((cut - y) / (0.2 * iod) + 0.5, 0.0, 1.0), (size, size)).astype(np.float32)


def lips_mask(lm: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32: the lips themselves (outer lip outline minus the opening)."""
    lm = np.asarray(lm, np.float64)
    outer, inner = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
    _poly(outer, lm[48:60])
    _poly(inner, lm[INNER_LIPS])
    return np.clip(outer - inner, 0.0, 1.0)


# --- skin ----------------------------------------------------------------------------------------------------------

_WEIGHTS = np.array([0.6, 1.0, 1.0], np.float32)  # L counts less than chroma: shading must not read as an occluder
_FLOOR = np.array([10.0, 2.5, 2.5], np.float32)  # smallest spread per Lab channel (a flat-lit face)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)


def skin_distance(lab: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(S, S) robust z-score of each pixel's colour against the face's own skin: the cheeks and the nose below the
    eyes (the face hull minus its features), median and MAD per Lab channel."""
    size = lab.shape[0]
    below_eyes = np.arange(size)[:, None] > np.asarray(lm)[36:48, 1].max()  # a fringe or a hat never reaches here
    ref = (face_mask(lm, size, scale=0.85, soft=0.0) > 0.5) & (feature_mask(lm, size) < 0.05) & below_eyes
    if ref.sum() < 32:
        return np.zeros(lab.shape[:2], np.float32)
    pix = lab[ref]
    med = np.median(pix, 0)
    spread = np.maximum(1.4826 * np.median(np.abs(pix - med), 0), _FLOOR)
    z = (lab - med) / spread * _WEIGHTS
    return np.sqrt((z * z).sum(-1))


def not_skin(lab: np.ndarray, lm: np.ndarray, distance: np.ndarray | None = None) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 where the colour is clearly not the face's skin, cleaned of specks
    (``distance``: :func:`skin_distance` of ``lab`` where the caller has it already)."""
    d = skin_distance(lab, lm) if distance is None else distance
    lo, hi = SKIN_SIGMAS
    m = np.clip((d - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    k = max(3, int(round(lab.shape[0] / 40)) | 1)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return cv2.GaussianBlur(m, (0, 0), 0.6 * lab.shape[0] / 64)


# --- the mechanisms ------------------------------------------------------------------------------------------------


def consensus(warped: np.ndarray, j: int, region: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8: photo ``j`` of ``warped`` (K, S, S, 3), all on one geometry, with
    the pixels where it disagrees with the K photos' median (what only it shows) taken from the photos nearest
    that median. K < 3 has no majority: photo ``j`` as it is."""
    face = warped[j]
    if len(warped) < 3:
        return face
    lab = np.stack([_lab(w) for w in warped])  # (K, S, S, 3)
    med = np.median(lab, 0)
    dev = np.sqrt(((lab - med) ** 2).sum(-1))  # (K, S, S)
    dev = np.stack([cv2.GaussianBlur(d, (0, 0), 1.0) for d in dev])
    occ = np.clip((dev[j] - OCCLUSION_LAB) / OCCLUSION_LAB, 0.0, 1.0) * region
    k = max(3, int(round(face.shape[0] / 32)) | 1)
    occ = cv2.GaussianBlur(cv2.dilate(occ, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))), (0, 0), k / 3)
    if occ.max() < 0.05:
        return face
    others = [i for i in range(len(warped)) if i != j]
    w = np.exp(-dev[others] / 8.0) + 1e-6  # (K-1, S, S): the photos near the median at each pixel
    fill = (warped[others].astype(np.float32) * w[..., None]).sum(0) / w.sum(0)[..., None]
    out = face.astype(np.float32) * (1 - occ[..., None]) + fill * occ[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def transfer_tone(face: np.ndarray, pose_w: np.ndarray, skin: np.ndarray, sigma: float) -> np.ndarray:
    """``face`` (S, S, 3) uint8 with its low frequencies in Lab (tone, light) replaced by ``pose_w``'s, both
    measured over ``skin`` (S, S) only, so eyes, brows and occluders do not bleed into the shading: normalised
    convolutions (the Gaussian mean over the skin), whose shared denominator is blurred once."""
    a, b = _lab(face), _lab(pose_w)
    w = skin[..., None]
    den = np.maximum(cv2.GaussianBlur(skin, (0, 0), sigma)[..., None], 1e-3)
    shift = cv2.GaussianBlur(b * w, (0, 0), sigma) / den - cv2.GaussianBlur(a * w, (0, 0), sigma) / den
    out = cv2.cvtColor(np.clip(np.rint(a + shift), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return out


def match_grain(face: np.ndarray, pose: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``face`` with the detail (what a 1 px blur removes) scaled to the pose face's, inside ``region``: a warp
    softens a face, a sharper photo around it gives it away."""
    f, p = face.astype(np.float32), pose.astype(np.float32)
    fb, pb = cv2.GaussianBlur(f, (0, 0), 1.0), cv2.GaussianBlur(p, (0, 0), 1.0)
    sel = region > 0.5
    if sel.sum() < 32:
        return face
    gain = float(np.clip((p - pb)[sel].std() / max((f - fb)[sel].std(), 1e-3), 0.6, 2.0))
    return np.clip(np.rint(fb + gain * (f - fb)), 0, 255).astype(np.uint8)


def closed_mouth(face: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """``face`` whose mouth on ``lm`` is (near) closed: white pixels between the lips (the teeth of a photo whose
    mouth was open, squeezed by the warp into a sliver) take the lips' own colour. Only the line where the lips
    meet is touched, and only pixels brighter and less red than the lips (teeth, not skin or a lip highlight)."""
    size = face.shape[0]
    pts = np.asarray(lm, np.float64)[INNER_LIPS]
    line = np.zeros((size, size), np.float32)
    _poly(line, pts, closed=True, thickness=max(2, int(round(size / 40))))
    line = np.maximum(line, inner_mouth_mask(lm, size, grow=0.5))
    lips = lips_mask(lm, size) > 0.5
    if lips.sum() < 8 or line.max() <= 0:
        return face
    lab = _lab(face)
    lip_colour = np.median(lab[lips], 0)
    teeth = (np.clip((lab[..., 0] - lip_colour[0] - 6.0) / 12.0, 0.0, 1.0)
             * np.clip((lip_colour[1] - lab[..., 1] - 3.0) / 6.0, 0.0, 1.0) * line)  # a* is the red-green axis
    if teeth.max() < 0.05:
        return face
    teeth = np.clip(cv2.GaussianBlur(teeth, (0, 0), 0.5 * size / 64) * 1.5, 0.0, 1.0) * (line > 0)
    target = lip_colour * np.array([0.85, 1.0, 1.0], np.float32)  # the line between closed lips is a little darker
    out = lab * (1 - teeth[..., None]) + target * teeth[..., None]
    return cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def pyramid_blend(face: np.ndarray, onto: np.ndarray, mask: np.ndarray, levels: int = PYRAMID_LEVELS) -> np.ndarray:
    """``face`` blended into ``onto`` (S, S, 3) uint8 through ``mask`` (S, S), band by band (Burt & Adelson):
    coarse bands over a wide transition, fine ones over a narrow one, so neither a tone step nor a ghost shows.

    The transitions are kept inside the mask (the band weights come from the mask eroded by the coarsest band's
    reach, and ``face`` is ``onto`` beyond the mask), so nothing beyond the mask changes: paste-back relies on it."""
    m = mask.astype(np.float32)
    reach = 2 ** (levels - 1) + 1
    inner = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach)))
    b = onto.astype(np.float32)
    a = face.astype(np.float32) * m[..., None] + b * (1 - m[..., None])  # the face, and the pose beyond the mask
    ga, gb, gm = [a], [b], [inner]
    for _ in range(levels):
        ga.append(cv2.pyrDown(ga[-1]))
        gb.append(cv2.pyrDown(gb[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    out = ga[-1] * gm[-1][..., None] + gb[-1] * (1 - gm[-1][..., None])
    for lvl in range(levels - 1, -1, -1):
        size = (ga[lvl].shape[1], ga[lvl].shape[0])
        la = ga[lvl] - cv2.pyrUp(ga[lvl + 1], dstsize=size)
        lb = gb[lvl] - cv2.pyrUp(gb[lvl + 1], dstsize=size)
        w = m[..., None] if lvl == 0 else gm[lvl][..., None]  # the finest band at the mask's own edge
        out = cv2.pyrUp(out, dstsize=size) + la * w + lb * (1 - w)
    out = np.where(m[..., None] > 0, out, b)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def sharpness(crops: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(K,) detail of each crop (K, S, S, 3) inside its face mask (K, S, S): the spread of the Laplacian of its
    grey image. A blurred or low-resolution identity photo pasted into a sharp pose gives itself away."""
    out = []
    for c, m in zip(crops, masks):
        lap = cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)
        sel = m > 0.5
        out.append(float(lap[sel].std()) if sel.sum() > 16 else 0.0)
    return np.asarray(out)


def choose_photo(ids_lm: np.ndarray, pose_lm: np.ndarray, detail: np.ndarray | None) -> int:
    """The identity photo to paste: the closest in pose and expression (g2g.faces.landmarks.closest_shape), or with
    ``detail`` (:func:`sharpness`) the sharpest of those not much further in shape than the closest."""
    from g2g.faces.landmarks import shape_distances

    dist = shape_distances(np.asarray(ids_lm, np.float64), np.asarray(pose_lm, np.float64))
    if detail is None:
        return int(np.argmin(dist))
    near = dist <= dist.min() * 1.5 + 0.01
    return int(np.argmax(np.where(near, detail, -1.0)))


# --- the whole composition -----------------------------------------------------------------------------------------


class GeometryWarp:
    """Images warped onto one target geometry, sharing its triangulation (a pair warps its identity photo and its
    pose onto the same points): :func:`g2g.faces.geometry.warp_to`, or with ``sharp`` bicubic at twice the
    resolution and area-averaged back down: a bilinear warp blurs even where the face barely moves, and a softer
    face than the photo gives a mix away."""

    def __init__(self, dst_lm: np.ndarray, size: int, sharp: bool):
        self.size, self.sharp = size, sharp
        self.onto = Triangulation.of(_twice(dst_lm), 2 * size) if sharp else Triangulation.of(dst_lm, size)

    def __call__(self, image: np.ndarray, src_lm: np.ndarray) -> np.ndarray:
        """``image`` (S, S, 3) uint8 with its landmarks ``src_lm`` (68, 2) moved onto the geometry."""
        if not self.sharp:
            return warp_onto(image, src_lm, self.onto)
        size = self.size
        big = cv2.resize(image, (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC)
        out = warp_onto(big, _twice(src_lm), self.onto, cv2.INTER_CUBIC)
        return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


def _twice(lm: np.ndarray) -> np.ndarray:
    """Landmarks (68, 2) in a crop of twice the side (pixel centres at integer coordinates)."""
    return (np.asarray(lm) + 0.5) * 2 - 0.5


def compose(pose: np.ndarray, pose_lm: np.ndarray, pose_mask: np.ndarray, ids: np.ndarray, ids_lm: np.ndarray,
            fixes: Fixes = Fixes()) -> tuple[np.ndarray, np.ndarray]:
    """The expression paste of identity crops ``ids`` (K, S, S, 3) uint8 (the one to use first) onto ``pose``
    (S, S, 3), with ``fixes``: (mixed crop (S, S, 3) uint8, mask (S, S) of what changed).

    The target geometry is ``ids[0]``'s face shape with the pose's expression
    (:func:`g2g.faces.geometry.transfer_expression`); with ``Fixes.none()`` this is the
    plain expression paste."""
    face, mask = composed_face(pose, pose_lm, pose_mask, ids, ids_lm, fixes)
    if fixes.seam:
        return pyramid_blend(face, pose, mask), mask
    return blend(face, pose, mask), mask


def composed_face(pose: np.ndarray, pose_lm: np.ndarray, pose_mask: np.ndarray, ids: np.ndarray, ids_lm: np.ndarray,
                  fixes: Fixes = Fixes()) -> tuple[np.ndarray, np.ndarray]:
    """:func:`compose` before the last blend: (the face, on the whole crop, mask): ``blend(face, pose, mask)`` is
    the mixed crop (without ``seam``), as a refiner's decoder composites its output (g2g.faces.masked_rest)."""
    size = pose.shape[0]
    geom = transfer_expression(ids_lm[0], pose_lm)
    if fixes.mouth:  # lips that meet exactly would fold the warp's triangles; keep half a pixel between them
        geom[[67, 66, 65], 1] = np.maximum(geom[[67, 66, 65], 1], geom[[61, 62, 63], 1] + 0.5)
    mask = np.maximum(pose_mask, face_mask(geom, size))
    hard = (mask > 0.5).astype(np.float32)
    n_used = len(ids) if fixes.occlusion else 1
    warp = GeometryWarp(geom, size, fixes.sharp)
    warped = np.stack([match_colour(warp(c, lm), hard, pose, hard) for c, lm in zip(ids[:n_used], ids_lm[:n_used])])
    face = consensus(warped, 0, mask) if fixes.occlusion else warped[0]
    inner = face_mask(geom, size, scale=1.0, soft=0.02)
    feats = feature_mask(geom, size)
    needs_pose_w = fixes.eyes or fixes.mouth or fixes.tone or fixes.pose_occluders or fixes.skin
    pose_w = warp(pose, pose_lm) if needs_pose_w else pose
    keep = np.zeros((size, size), np.float32)  # where the pose's own pixels stay
    if fixes.skin:
        keep = not_skin(_lab(face), geom) * (1 - feats) * mask * upper_face(geom, size)
    if fixes.pose_occluders:
        keep = np.maximum(keep, pose_occluders(pose_w, geom) * inner)
    if fixes.eyes:
        face = blend(pose_w, face, eye_interior_mask(geom, size))
    if fixes.mouth:
        face = blend(pose_w, face, inner_mouth_mask(geom, size))  # the pose's own opening, however small
        if float(mouth_opening(pose_lm)) < MOUTH_OPEN * float(interocular68(pose_lm)):
            face = closed_mouth(face, geom)
    if fixes.tone:
        skin = hard * (1 - feats) * (1 - keep)
        face = transfer_tone(face, pose_w, skin, TONE_SIGMA * float(interocular68(geom)))
        face = match_grain(face, pose, hard * (1 - feats))
    if keep.any():  # the pose's pixels: on the face's geometry inside the face, as they are around it
        face = blend(blend(pose_w, pose, inner), face, keep)
    return face, mask


def pose_occluders(pose_w: np.ndarray, geom: np.ndarray) -> np.ndarray:
    """(S, S) float32: what covers the pose's face, on the target geometry: non-skin pixels that are none of its
    features, and skin-coloured pixels over its lips (a finger)."""
    size = pose_w.shape[0]
    lab = _lab(pose_w)
    feats = feature_mask(geom, size)
    d = skin_distance(lab, geom)
    occ = not_skin(lab, geom, d) * (1 - feats) * upper_face(geom, size)
    lips = lips_mask(geom, size) > 0.5
    if lips.sum() >= 16:
        skin_like = ((d < 1.2) & lips).astype(np.float32)
        if skin_like.sum() > 0.35 * lips.sum():  # most of the lips look like skin: something covers them
            k = max(3, int(round(size / 20)) | 1)
            cover = cv2.dilate(skin_like, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            occ = np.maximum(occ, cv2.GaussianBlur(cover, (0, 0), k / 3))
    return np.clip(occ, 0.0, 1.0)
