"""Face geometry on aligned crops: the face mask, piecewise-affine warps, expression transfer, colour matching.

Everything works from the 68 points of :mod:`g2g.faces.landmarks` in crop pixels.

- ``face_mask``: the region a mix replaces, brows to chin (the convex hull of the
  jaw and the brows, raised a little above the brows and scaled about its centre).
  Training jitters its scale and outline ("mask shuffling", REFace 2024) so the
  outline teaches the model nothing about whose face was there.
- ``warp_to``: an image moved so that its landmarks land on other landmarks,
  piecewise affine over a Delaunay triangulation of the destination points (plus
  the crop border, which stays put), the warp of skimage's
  ``PiecewiseAffineTransform`` done with one ``cv2.remap`` (about 300x faster).
  The destination side (:class:`Triangulation`) is computed once for every image
  warped onto the same points (a pair warps its identity photo and its pose).
- ``transfer_expression``: landmarks with the identity's face shape (jaw, nose,
  eye and brow positions) and the pose's expression (mouth shape and opening, eye
  opening, brow height): where an identity photo must be warped to show the pose's
  expression without taking the pose person's face shape.
- ``match_colour``: the identity face's colour statistics moved onto the pose's
  (per channel in Lab, inside the masks), so a pasted face takes the pose's light.

Torch-free; all functions take and return numpy arrays.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from g2g.faces.landmarks import BROWS, EYES_AND_BROWS, INNER_LIPS, JAW, MOUTH, interocular68, mouth_opening

MASK_SCALE = 1.2  # 1.2x the brows-to-chin hull: dlib still finds the pose person in 12.5% of masked held-out
# rests (nearest of 40, chance 2.5%), against 37.5% at 1.0x and 92.5% unmasked (docs/how-it-works.md)
MASK_SOFT = 0.04  # soft edge (Gaussian sigma) as a fraction of the crop side
BROW_LIFT = 0.25  # the mask's top edge sits this many inter-ocular distances above the brows


def _hull_points(lm: np.ndarray) -> np.ndarray:
    """Jaw and brow points, the brows lifted by BROW_LIFT x IOD: the brows-to-chin outline (N, 2)."""
    iod = float(interocular68(lm))
    brows = lm[BROWS].copy()
    brows[:, 1] -= BROW_LIFT * iod
    return np.vstack([lm[JAW], brows])


def face_mask(lm: np.ndarray, size: int, scale: float = MASK_SCALE, soft: float = MASK_SOFT,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """(size, size) float32 in [0, 1]: 1 on the face interior (brows to chin), soft edge.

    ``rng`` jitters it for training: scale x U(0.9, 1.15), each outline point moved
    by up to 4% of the crop, softness x U(0.5, 1.5).
    """
    pts = _hull_points(np.asarray(lm, np.float64))
    if rng is not None:
        scale = scale * rng.uniform(0.9, 1.15)
        pts = pts + rng.uniform(-0.04, 0.04, pts.shape) * size
        soft = soft * rng.uniform(0.5, 1.5)
    centre = pts.mean(0)
    pts = (pts - centre) * scale + centre
    hull = cv2.convexHull(np.round(pts * 4).astype(np.int32))  # 2 fractional bits of sub-pixel precision
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA, shift=2)
    sigma = soft * size
    if sigma > 0.3:
        k = int(2 * round(3 * sigma) + 1)
        # erode by the blur's reach first, so that the soft edge stays inside the hull and the
        # hull's outside is exactly 0 (paste-back changes nothing beyond it)
        mask = erode_ellipse(mask, k)
        mask = cv2.GaussianBlur(mask, (k, k), sigma)
    mask[mask > 0.999] = 1.0  # exactly 1 inside: the masked rest holds nothing of the face interior
    mask[mask < 0.001] = 0.0  # exactly 0 outside: nothing beyond the mask is changed
    return np.clip(mask, 0.0, 1.0)


def erode_ellipse(image: np.ndarray, k: int) -> np.ndarray:
    """``cv2.erode`` of ``image`` by OpenCV's k x k ellipse, to the bit: the minimum of its erosions by the few
    centred rectangles whose union the ellipse is. A rectangle is a row pass and a column pass; the ellipse itself
    is a minimum over each of its ~0.8 k² pixels (a face mask's k is a quarter of the crop: about twice as slow)."""
    out = None
    for kernel in _ellipse_rects(k):
        e = cv2.erode(image, kernel)
        out = e if out is None else np.minimum(out, e, out=out)
    return out


@functools.lru_cache(maxsize=16)
def _ellipse_rects(k: int) -> tuple[np.ndarray, ...]:
    """Rectangular kernels whose union is ``cv2.getStructuringElement(MORPH_ELLIPSE, (k, k))``: for each half-width
    of its rows, as tall as the rows that are at least that wide (checked; else the ellipse itself)."""
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    half, c = se.sum(1) // 2, k // 2
    rects = []
    union = np.zeros_like(se)
    for w in sorted(set(half.tolist())):
        h = max(abs(r - c) for r in range(k) if half[r] >= w)
        rects.append(np.ones((2 * h + 1, 2 * w + 1), np.uint8))
        union[c - h : c + h + 1, c - w : c + w + 1] = 1
    return tuple(rects) if np.array_equal(union, se) else (se,)


def _border(size: int) -> np.ndarray:
    s = size - 1.0
    return np.array([[0, 0], [s / 2, 0], [s, 0], [s, s / 2], [s, s], [s / 2, s], [0, s], [0, s / 2]], np.float64)


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) float64 pixel coordinates of an S x S image (read-only: shared by every warp of that size)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


@dataclass(frozen=True)
class Triangulation:
    """The destination side of a piecewise-affine warp: the Delaunay triangles of the destination points and the
    crop border, and which triangle each pixel centre lies in. Every image warped onto the same points shares it.

    The pixels' triangles are kept as runs along the rows (a face's 150 or so triangles cover a crop in a few
    thousand runs), so that a warp spreads each triangle's coefficients with ``np.repeat`` instead of gathering
    them pixel by pixel, and multiplies ``y`` once per run: the same float64 arithmetic as a per-pixel map, so the
    same maps to the bit, in a fraction of the time."""

    size: int
    points: np.ndarray  # (68 + 8, 2) float64: the destination landmarks, then the border
    simplices: np.ndarray  # (T, 3) triangles (indices into points)
    run_tri: np.ndarray  # (R,) the triangle of each run of pixels (row-major), 0 where none was rasterised
    run_len: np.ndarray  # (R,) its length in pixels (a run never leaves its row)
    run_y: np.ndarray  # (R,) float64 its row
    outside: np.ndarray  # flat indices of the pixel centres no triangle rasterised (a sliver at an edge)

    @classmethod
    def of(cls, dst_lm: np.ndarray, size: int) -> "Triangulation":
        """The triangulation of ``dst_lm`` (68, 2) in a ``size`` px crop."""
        dst = np.vstack([np.asarray(dst_lm, np.float64), _border(size)])
        tri = Delaunay(dst).simplices  # (T, 3) triangles of the destination
        index = np.full((size, size), -1, np.int32)
        for t, poly in enumerate(np.round(dst[tri] * 16).astype(np.int32)):
            cv2.fillConvexPoly(index, poly, t, lineType=cv2.LINE_8, shift=4)
        flat = index.ravel()
        new_run = np.empty(flat.size, bool)
        np.not_equal(flat[1:], flat[:-1], out=new_run[1:])
        new_run[::size] = True  # every row starts a run
        starts = np.flatnonzero(new_run)
        return cls(size, dst, tri, flat[starts].clip(min=0), np.diff(np.r_[starts, flat.size]),
                   (starts // size).astype(np.float64), np.flatnonzero(flat < 0))

    def maps(self, src_lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(map_x, map_y) (S, S) float32 for ``cv2.remap``: the source position of each destination pixel when the
        destination points come from ``src_lm`` (68, 2); pixels of no triangle map onto themselves."""
        size, tri = self.size, self.simplices
        src = np.vstack([np.asarray(src_lm, np.float64), _border(size)])
        # per triangle, the affine map destination -> source: solve [x y 1] A = [u v]
        ones = np.ones((len(tri), 3, 1))
        A = np.linalg.solve(np.concatenate([self.points[tri], ones], axis=2), src[tri])  # (T, 3, 2)
        a = A.reshape(len(tri), 6)[self.run_tri]  # (R, 6): each run's triangle's map

        def spread(per_run: np.ndarray) -> np.ndarray:
            return np.repeat(per_run, self.run_len).reshape(size, size)

        ys, xs = _pixel_grid(size)
        out = []
        for kx, ky, k1 in ((0, 2, 4), (1, 3, 5)):  # u = (x * a0 + y * a2) + a4, v = (x * a1 + y * a3) + a5
            m = xs * spread(a[:, kx])
            m += spread(self.run_y * a[:, ky])
            out.append(np.add(m, spread(a[:, k1]), out=np.empty((size, size), np.float32)))
            out[-1].flat[self.outside] = (xs if kx == 0 else ys).flat[self.outside]
        return out[0], out[1]


def warp_onto(image: np.ndarray, src_lm: np.ndarray, onto: Triangulation, interpolation: int = cv2.INTER_LINEAR
              ) -> np.ndarray:
    """:func:`warp_to` onto the points of ``onto``, whose triangulation is already made."""
    map_x, map_y = onto.maps(src_lm)
    return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_REFLECT)


def warp_to(image: np.ndarray, src_lm: np.ndarray, dst_lm: np.ndarray, interpolation: int = cv2.INTER_LINEAR
            ) -> np.ndarray:
    """``image`` (S, S, C) with its landmarks ``src_lm`` (68, 2) moved onto ``dst_lm``: piecewise affine
    (``interpolation``: an OpenCV flag; bicubic keeps more of a photo's detail than the default bilinear)."""
    return warp_onto(image, src_lm, Triangulation.of(dst_lm, image.shape[0]), interpolation)


def transfer_expression(id_lm: np.ndarray, pose_lm: np.ndarray, jaw_follow: float = 0.8) -> np.ndarray:
    """Landmarks (68, 2): the identity's face shape with the pose's expression.

    Kept from the identity: the jaw outline, the nose, the eye and brow positions
    and widths, the mouth position. Taken from the pose: the mouth's shape
    (width, lip curves and opening) around the identity's mouth centre, each
    eye's vertical opening, each brow's height above its eye, all scaled by the
    ratio of the two inter-ocular distances (a smile is as wide *relative to the
    face*). The chin drops by ``jaw_follow`` x the extra mouth opening.
    """
    out = np.array(id_lm, np.float64)
    pose = np.asarray(pose_lm, np.float64)
    k = float(interocular68(out)) / max(float(interocular68(pose)), 1e-6)  # expression is relative to the face's size
    mc_id, mc_pose = out[MOUTH].mean(0), pose[MOUTH].mean(0)
    out[MOUTH] = (pose[MOUTH] - mc_pose) * k + mc_id
    for eye, brow in EYES_AND_BROWS:
        ec_id, ec_pose = out[eye].mean(0), pose[eye].mean(0)
        out[eye, 1] = ec_id[1] + (pose[eye, 1] - ec_pose[1]) * k  # the pose's lid heights around the identity's eye
        lift = (pose[brow, 1].mean() - ec_pose[1]) * k - (out[brow, 1].mean() - ec_id[1])
        out[brow, 1] += lift
    opening = float(mouth_opening(pose) * k - mouth_opening(id_lm))
    w = np.exp(-0.5 * ((np.arange(17) - 8) / 3.0) ** 2)  # most at the chin (point 8), little at the ears
    out[JAW, 1] += jaw_follow * opening * w
    return out


def match_colour(src: np.ndarray, src_mask: np.ndarray, ref: np.ndarray, ref_mask: np.ndarray,
                 strength: float = 1.0) -> np.ndarray:
    """uint8 ``src`` (S, S, 3) with its Lab mean and spread inside ``src_mask`` moved to ``ref``'s inside ``ref_mask``."""
    a = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    b = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    wa, wb = src_mask[..., None] > 0.5, ref_mask[..., None] > 0.5
    if wa.sum() < 16 or wb.sum() < 16:
        return src
    ma, sa = _masked_stats(a, wa)
    mb, sb = _masked_stats(b, wb)
    gain = np.clip(sb / np.maximum(sa, 1.0), 0.5, 2.0)
    moved = (a - ma) * gain + mb
    out = a + strength * (moved - a)
    return cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _masked_stats(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sel = x[w[..., 0]]  # (n, 3): the pixels where w (S, S, 1) holds
    return sel.mean(0), sel.std(0)


def blend(face: np.ndarray, onto: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 ``face`` blended into ``onto`` (S, S, 3) through the soft ``mask`` (S, S)."""
    m = mask[..., None]
    return np.clip(np.rint(onto.astype(np.float32) * (1 - m) + face.astype(np.float32) * m), 0, 255).astype(np.uint8)


def inner_mouth_mask(lm: np.ndarray, size: int, grow: float = 0.15) -> np.ndarray:
    """(S, S) float32 in [0, 1]: the mouth opening (inside the inner lips, grown by ``grow`` x its own height so the
    lip edge blends), softened by about half a pixel at 64 px; empty for a closed mouth."""
    pts = np.asarray(lm, np.float64)[INNER_LIPS]
    c = pts.mean(0)
    pts = c + (pts - c) * np.array([1.0, 1.0 + 2 * grow])  # taller, not wider: the corners stay where they are
    canvas = np.zeros((size, size), np.float32)
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)], 1.0, lineType=cv2.LINE_AA, shift=4)
    return np.clip(cv2.GaussianBlur(canvas, (0, 0), 0.5 * size / 64), 0.0, 1.0)


def with_pose_mouth(face: np.ndarray, geometry: np.ndarray, pose: np.ndarray, pose_lm: np.ndarray) -> np.ndarray:
    """``face`` (S, S, 3) uint8, drawn on ``geometry``, with the pose photo's own mouth opening (teeth, tongue, the
    dark inside) warped onto that geometry: a warped closed mouth has no interior, so it would read as closed.
    FaceFusion's "mouth" mask region does the same for its swaps."""
    keep = inner_mouth_mask(geometry, face.shape[0])
    if keep.max() <= 0:
        return face
    return blend(warp_to(pose, pose_lm, geometry), face, keep)
