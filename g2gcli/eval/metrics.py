"""Pure numpy metrics for ``g2g eval``: identity similarity, retrieval, pose, image quality.

No model runs here: callers pass embeddings, landmarks or images, so every
function is testable on hand-made numbers.

Conventions
- Embeddings: (N, D) float arrays; similarity is ``cosine`` (higher = more alike)
  or ``euclidean`` distance (lower = more alike), dlib's native measure.
- Landmarks: (N, 5, 2) pixel coordinates in MTCNN order (left eye, right eye,
  nose, left mouth corner, right mouth corner; "left" = image left).
- Images: (H, W, 3) uint8 RGB; PSNR and SSIM use a data range of 255.
- PSNR of identical images is infinite; it is reported capped at
  :data:`PSNR_CAP_DB` (100 dB), and callers report how many values were capped.
"""

from __future__ import annotations

import math

import numpy as np

PSNR_CAP_DB = 100.0  # PSNR reported for identical images (mse = 0) instead of +inf

# --- identity similarity ------------------------------------------------------------------------------------------


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` (N,D) with every row of ``b`` (M,D) -> (N,M)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip(an @ bn.T, -1.0, 1.0)


def euclidean_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of ``a`` (N,D) to every row of ``b`` (M,D) -> (N,M)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of ``a`` and ``b`` (N,D) -> (N,)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return np.clip(num / den, -1.0, 1.0)


def rowwise_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of matching rows of ``a`` and ``b`` (N,D) -> (N,)."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=1)


def stats(values: np.ndarray | list[float]) -> dict[str, float | int | None]:
    """Summary of finite values: n, mean, std, median, 5th and 95th percentiles (None when empty)."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "p05": None, "p95": None}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(np.median(v)),
        "p05": float(np.percentile(v, 5)),
        "p95": float(np.percentile(v, 95)),
    }


def roc_auc(positives: np.ndarray | list[float], negatives: np.ndarray | list[float]) -> float | None:
    """Area under the ROC curve: P(score of a random positive > that of a random negative), ties count 1/2.

    Higher scores must mean "more positive"; pass ``-distance`` for distances.
    None when either side is empty.
    """
    p = np.asarray(positives, np.float64).ravel()
    n = np.sort(np.asarray(negatives, np.float64).ravel())
    p, n = p[np.isfinite(p)], n[np.isfinite(n)]
    if p.size == 0 or n.size == 0:
        return None
    below = np.searchsorted(n, p, side="left")  # negatives strictly below each positive
    equal = np.searchsorted(n, p, side="right") - below
    return float((below + 0.5 * equal).sum() / (p.size * n.size))


def verification_rate(values: np.ndarray, threshold: float, lower_is_match: bool = True) -> float | None:
    """Fraction of finite ``values`` that a network would call "same person" at ``threshold``."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return float(np.mean(v < threshold) if lower_is_match else np.mean(v > threshold))


# --- retrieval ----------------------------------------------------------------------------------------------------


def retrieval_ranks(scores: np.ndarray, truth: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """0-based rank of the true gallery item for each query.

    ``scores`` (N queries, M gallery items), ``truth`` (N,) gallery index of each
    query's right answer. Ties count against the query (rank = number of other
    items scoring at least as well), so a network that gives every identity the
    same score does not get credit.
    """
    s = np.asarray(scores, np.float64)
    if not higher_is_better:
        s = -s
    t = np.asarray(truth, np.int64)
    true_score = s[np.arange(len(t)), t]
    at_least = (s >= true_score[:, None]).sum(1) - 1  # minus the true item itself
    return at_least.astype(np.int64)


def top_k_accuracy(ranks: np.ndarray, k: int) -> float | None:
    """Fraction of queries whose true item ranks within the first ``k`` (None when there are no queries)."""
    r = np.asarray(ranks)
    return None if r.size == 0 else float(np.mean(r < k))


# --- landmarks and pose -------------------------------------------------------------------------------------------


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the two eye centres, (N,5,2) -> (N,)."""
    lm = np.asarray(landmarks, np.float64)
    return np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1)


def landmark_error(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean point-to-point distance of ``pred`` to ``ref`` (N,5,2), in units of ``ref``'s inter-ocular distance."""
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    err = np.linalg.norm(pred - ref, axis=2).mean(1)
    iod = interocular(ref)
    return np.where(iod > 1e-6, err / np.maximum(iod, 1e-6), np.nan)


# Generic 3D face at the 5 MTCNN points, in the units of dlib's 150 px chip template
# (g2g.config.DLIB_TEMPLATE_150, which is a frontal mean face): x right, y down, z away
# from the camera. Depths come from the generic head model often used with solvePnP
# (nose tip 135/330 of the eye-corner span in front of the eyes, mouth corners 10/330
# in front of them), scaled to the template's inter-ocular distance of ~61 units.
_T150 = np.array([(40.61, 35.26), (101.81, 35.99), (71.87, 71.55), (42.79, 100.47), (100.08, 101.09)])
_IOD150 = float(np.linalg.norm(_T150[1] - _T150[0]))
FACE_MODEL_3D = np.column_stack([_T150, -np.array([0.0, 0.0, 135.0, 10.0, 10.0]) / 330.0 * _IOD150])


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in degrees from 5 landmarks, (N,5,2) -> (N,3).

    Method: fit a scaled orthographic (weak-perspective) projection of the
    generic 3D 5-point face :data:`FACE_MODEL_3D` to the points by least squares
    (a 2x3 affine map of the centred points), orthonormalise its rows into a
    rotation (SVD) and read Euler angles from it (R = Rz(roll) Ry(yaw) Rx(pitch)).
    This is the POS/3DDFA approach; with 5 points, yaw comes mostly from the nose's
    horizontal offset against eyes and mouth, and pitch from its vertical one, so
    values beyond ~45 degrees are rough, and expression moves pitch (a wide smile
    lifts the mouth corners and reads as ~10-20 degrees of looking down): compare
    an output with its pose source, not absolute values across people. The
    frontal template gives exactly 0.

    Signs, in the image: yaw > 0 when the nose moves toward the image's right;
    pitch > 0 when it moves up (the face looks up); roll > 0 when the eye line
    turns clockwise (the eye on the image's right is lower). Rows with non-finite
    or degenerate landmarks give NaN.
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    model = FACE_MODEL_3D - FACE_MODEL_3D.mean(0)  # (5,3)
    out = np.full((len(lm), 3), np.nan)
    for i, pts in enumerate(lm):
        if not np.all(np.isfinite(pts)):
            continue
        x = pts - pts.mean(0)  # (5,2)
        a, *_ = np.linalg.lstsq(model, x, rcond=None)  # (3,2): x ~ model @ a
        r1, r2 = a[:, 0], a[:, 1]
        n1, n2 = np.linalg.norm(r1), np.linalg.norm(r2)
        if n1 < 1e-9 or n2 < 1e-9:
            continue
        r1, r2 = r1 / n1, r2 / n2
        u, _, vt = np.linalg.svd(np.stack([r1, r2, np.cross(r1, r2)]))
        rot = u @ vt
        if np.linalg.det(rot) < 0:  # keep a proper rotation
            rot = u @ np.diag([1.0, 1.0, -1.0]) @ vt
        yaw = math.degrees(math.asin(float(np.clip(-rot[2, 0], -1.0, 1.0))))
        pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
        roll = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
        # R rotates the model in camera axes (y down, z away): a positive rotation about y
        # moves the nose (z < 0) to the image's left and one about x moves it down, so flip both.
        out[i] = (-yaw, -pitch, roll)
    return out


def project_face_model(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, scale: float = 1.0,
                       centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Orthographic image (5,2) of :data:`FACE_MODEL_3D` turned by the given angles (degrees, :func:`head_pose`'s signs).

    For tests and for reading the angles: ``head_pose(project_face_model(yaw=20)[None])`` ~ (20, 0, 0).
    """
    y, p, r = (math.radians(v) for v in (-yaw, -pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    pts = (FACE_MODEL_3D - FACE_MODEL_3D.mean(0)) @ (rz @ ry @ rx).T
    return pts[:, :2] * scale + np.asarray(centre, np.float64)


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute difference of angles in degrees, wrapped to [0, 180]."""
    d = np.abs((np.asarray(a, np.float64) - np.asarray(b, np.float64) + 180.0) % 360.0 - 180.0)
    return d


# --- image quality ------------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, cap: float = PSNR_CAP_DB) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape images; identical images give ``cap``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float(cap)
    return float(min(cap, 10.0 * math.log10(data_range**2 / mse)))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity (scikit-image, Gaussian-free 7x7 windows, mean over RGB) of two (H,W,3) images."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    return float(structural_similarity(a, b, channel_axis=-1 if a.ndim == 3 else None, data_range=data_range))
