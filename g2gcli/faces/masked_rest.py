"""The masked-rest recipe's inputs, shared by training, ``g2g mix`` and expression-paste (torch-free).

Why this design. A FUNIT-style pooled identity code competes with a content
encoder that sees the whole face: the objective is met by copying the rest and
ignoring the code (the shortcut). Here identity can only come in through E_B:

- E_A reads the **masked rest**: the pose crop with its face interior (brows to
  chin, :func:`g2g.faces.geometry.face_mask`) removed, the mask, and the **target
  geometry** as six landmark sketch channels (jaw, brows, nose, eyes, outer and
  inner lips). The mask hides expression, so the sketch carries it back.
- The target geometry is the identity's face shape with the pose's expression
  (:func:`g2g.faces.geometry.transfer_expression`): warping the identity photo onto the
  pose person's own 68 points would carry the pose person's face shape, which is
  part of who they are.
- E_B reads the identity crops **warped onto that geometry** (piecewise affine)
  and colour-matched to the pose's face, and keeps their spatial features at
  every resolution; the decoder fuses them with E_A's.
- The decoder draws a residual on top of the warped, colour-matched paste
  (``base``), inside the mask; outside it, the output is the pose crop exactly.
  An untrained decoder is the expression-transferring paste; training teaches it
  what the paste cannot do (mouth interiors, lighting, seams, blur).

In training the identity photos of a target are always other photos of the same
person (never the target), so nothing in the input holds the target's own face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from g2g.faces.geometry import face_mask, match_colour, transfer_expression, warp_to, with_pose_mouth
from g2g.faces.preprocess import to_input

if TYPE_CHECKING:
    from g2g.methods.compose import Fixes

SKETCH_GROUPS = (  # (polylines of point indices, closed): one channel each
    ((range(0, 17),), False),  # jaw
    ((range(17, 22), range(22, 27)), False),  # brows
    ((range(27, 31), range(31, 36)), False),  # nose bridge, nostrils
    ((range(36, 42), range(42, 48)), True),  # eyes
    ((range(48, 60),), True),  # outer lips
    ((range(60, 68),), True),  # inner lips
)
SKETCH_CHANNELS = len(SKETCH_GROUPS)
CONTENT_CHANNELS = 3 + 1 + SKETCH_CHANNELS  # masked rest, mask, sketch


def sketch(lm: np.ndarray, size: int) -> np.ndarray:
    """(68, 2) landmarks -> (SKETCH_CHANNELS, S, S) float32 line drawings in [0, 1], slightly blurred."""
    out = np.zeros((SKETCH_CHANNELS, size, size), np.float32)
    thickness = max(1, int(round(size / 64)))
    for c, (lines, closed) in enumerate(SKETCH_GROUPS):
        canvas = np.zeros((size, size), np.float32)
        for idx in lines:
            pts = np.round(lm[list(idx)] * 16).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [pts], closed, 1.0, thickness, lineType=cv2.LINE_AA, shift=4)
        out[c] = cv2.GaussianBlur(canvas, (0, 0), 0.6 * size / 64)
    return np.clip(out, 0.0, 1.0)


@dataclass
class PairInputs:
    """Network inputs of one (rest, identity) pair, float32, NCHW without N, in [-1, 1] unless said."""

    content: np.ndarray  # (CONTENT_CHANNELS, S, S): masked rest (3), mask (1, in [0,1]), sketch (6, in [0,1])
    identity: np.ndarray  # (K, 3, S, S) identity crops warped onto ``geometry``, colour-matched (or as they are)
    base: np.ndarray  # (3, S, S) the warped paste of identity[0] onto the rest (or the masked rest)
    mask: np.ndarray  # (S, S) in [0, 1]: what the output may change
    rest: np.ndarray  # (3, S, S) the unmasked rest (outside the mask the output is this)
    geometry: np.ndarray  # (68, 2) target landmarks


def _float(x: np.ndarray) -> np.ndarray:
    """One uint8 crop (S, S, 3) as the networks read it (3, S, S)."""
    return to_input(np.asarray(x)[None])[0]


def rest_inputs(rest: np.ndarray, rest_lm: np.ndarray, geometry: np.ndarray,
                rng: np.random.Generator | None = None, rest_mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(content (CONTENT_CHANNELS, S, S), mask (S, S), rest (3, S, S)) of the rest crop ``rest`` (S, S, 3) uint8.

    The mask covers the rest's face and the target ``geometry``'s; ``rng`` jitters it (training).
    ``rest_mask``: the rest's own face mask where the caller has it already (mix; not with ``rng``).
    E_A's input holds nothing of the rest's pixels where the mask is 1.
    """
    size = rest.shape[0]
    if rest_mask is None or rng is not None:
        rest_mask = face_mask(rest_lm, size, rng=rng)
    mask = np.maximum(rest_mask, face_mask(geometry, size, rng=rng))
    rest_f = _float(rest)
    m = mask[None]
    content = np.concatenate([rest_f * (1 - m), m, sketch(geometry, size)]).astype(np.float32)
    return content, mask, rest_f


def pair_inputs(rest: np.ndarray, rest_lm: np.ndarray, ids: np.ndarray, ids_lm: np.ndarray,
                rng: np.random.Generator | None = None, rest_mask: np.ndarray | None = None,
                warp: bool = True, keep_mouth: bool = False, fixes: Fixes | None = None) -> PairInputs:
    """Inputs for the rest crop ``rest`` (S, S, 3) uint8 and identity crops ``ids`` (K, S, S, 3) uint8.

    The target geometry is ``ids[0]``'s face shape with the rest's expression (mix puts
    the identity photo closest to the pose first). ``rng`` jitters the mask (training);
    ``rest_mask`` as in :func:`rest_inputs`. ``warp=False`` (the ``pooled`` and ``dlib``
    encoders, which pool identity into one code): the identity crops as they are, and
    ``base`` is the masked rest, so identity can only come in through that code. ``keep_mouth``: the paste
    (``base``) keeps the rest's own mouth opening (:func:`g2g.faces.geometry.with_pose_mouth`). ``fixes``
    (a refiner's ``ModelConfig.base_fixes``): ``base`` is the default method's face with those fixes, and the mask
    its mask (:func:`_refiner_inputs`), so the decoder's residual starts from that method's mixed crop.
    """
    geom = transfer_expression(ids_lm[0], rest_lm)
    content, mask, rest_f = rest_inputs(rest, rest_lm, geom, rng, rest_mask)
    m = mask[None]
    if not warp:
        identity = np.stack([_float(crop) for crop in ids])
        return PairInputs(content, identity, (rest_f * (1 - m)).astype(np.float32), mask, rest_f,
                          geom.astype(np.float32))
    hard = (mask > 0.5).astype(np.float32)
    warped = [match_colour(warp_to(crop, lm, geom), hard, rest, hard) for crop, lm in zip(ids, ids_lm)]
    if fixes is not None:
        return _refiner_inputs(rest, rest_lm, rest_f, ids, ids_lm, geom, mask, content, warped, fixes)
    paste = with_pose_mouth(warped[0], geom, rest, rest_lm) if keep_mouth else warped[0]
    base = rest_f * (1 - m) + _float(paste) * m
    return PairInputs(content, np.stack([_float(w) for w in warped]), base.astype(np.float32), mask, rest_f,
                      geom.astype(np.float32))


def _refiner_inputs(rest: np.ndarray, rest_lm: np.ndarray, rest_f: np.ndarray, ids: np.ndarray, ids_lm: np.ndarray,
                    geom: np.ndarray, mask: np.ndarray, content: np.ndarray, warped: list[np.ndarray], fixes: Fixes
                    ) -> PairInputs:
    """:func:`pair_inputs` of a refiner: ``base`` is the default method's face (g2g.methods.compose.composed_face)
    wherever the mask reaches, so that compositing it through the mask gives that method's mixed crop; the mask
    is the composition's (it may reach a little beyond the rest's), and E_A's masked rest follows it."""
    from g2g.methods.compose import composed_face

    face, mask = composed_face(rest, rest_lm, mask, ids, ids_lm, fixes)
    m = mask[None]
    content = np.concatenate([rest_f * (1 - m), m, content[4:]]).astype(np.float32)  # the sketch as it was
    base = np.where(m > 0, _float(face), rest_f)
    return PairInputs(content, np.stack([_float(w) for w in warped]), base.astype(np.float32), mask.astype(np.float32),
                      rest_f, geom.astype(np.float32))


def warp_map(src_lm: np.ndarray, dst_lm: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 2) float32 source coordinates (x, y) of each destination pixel of :func:`warp_to`, for grid_sample."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    coords = np.stack([xs, ys], -1)
    return warp_to(coords, src_lm, dst_lm)  # warping the coordinate image itself gives the sampling map
