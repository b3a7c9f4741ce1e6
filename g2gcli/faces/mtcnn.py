"""MTCNN face detection (boxes, scores, 5 landmarks) on ONNX Runtime and numpy, without torch.

The three networks are facenet-pytorch's PNet, RNet and ONet, exported once by
``python -m g2g.export.detector`` into ``g2g/assets/mtcnn`` and checked against
``SHA256SUMS`` before use. The pipeline around them is facenet-pytorch 2.5.3's
``detect_face`` step for step, in the same float32 operation order, so that the
detections are the same as ``MTCNN(keep_all=True, select_largest=False)`` gives:

- the image resampling is torch's ``interpolate(mode="area")`` (adaptive average
  pooling): bins ``[floor(i*in/out), ceil((i+1)*in/out))``, summed exactly from
  an integral image and divided by the bin height, then the bin width, in float32,
  as torch rounds them; the RNet and ONet crops are resampled the same way;
- NMS is ``torchvision.ops.batched_nms`` on the CPU (IoU > threshold suppressed,
  score ties in input order as its kernel keeps them, the per-class path above
  1,000 boxes), and the last stage uses facenet-pytorch's own "Min" NMS.

With facenet-pytorch's own nets plugged in (``Nets``), the results are bit-identical;
with the ONNX nets they differ only by the nets' float arithmetic. Two differences
remain by design: where a refined box lies wholly outside its image, facenet-pytorch
fails on the empty crop and here that box is dropped; an image smaller than
``minsize`` has no pyramid, which fails there and finds no face here. (Above 1,000
boxes torchvision re-sorts the kept boxes with torch's unstable sort, so boxes of
exactly equal score may come in another order there.) Torch-free.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from g2g.errors import G2GError
from g2g.io.files import sha256_file
from g2g.runtime import SessionInfo, open_session, run_bound

DEFAULT_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "mtcnn"
ASSETS_ENV = "G2G_MTCNN_DIR"  # a folder holding pnet/rnet/onet.onnx and SHA256SUMS instead of the packaged one
SUMS_FILE = "SHA256SUMS"
OUTPUTS = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}
CHUNK = 512  # crops per RNet/ONet run, as facenet-pytorch batches them
VANILLA_NMS_BOXES = 1000  # torchvision's batched_nms runs NMS per class above this many boxes (CPU)

Net = Callable[[np.ndarray], list[np.ndarray]]  # (K, 3, H, W) float32 -> outputs in OUTPUTS order


class DetectorAssetError(G2GError):
    """A shipped MTCNN file is missing or does not match SHA256SUMS (one-line message)."""


@dataclass(frozen=True)
class Nets:
    """The three networks as numpy callables, and the input convention they were exported with."""

    pnet: Net
    rnet: Net
    onet: Net
    rnet_size: int = 24
    onet_size: int = 48
    mean: float = 127.5
    scale: float = 0.0078125


# --- the packaged files --------------------------------------------------------------------------------------------
def asset_dir(folder: Path | str | None = None) -> Path:
    """``folder``, else ``$G2G_MTCNN_DIR``, else the files inside the package."""
    return Path(folder or os.environ.get(ASSETS_ENV) or DEFAULT_ASSETS)


def verified_paths(folder: Path) -> dict[str, Path]:
    """pnet/rnet/onet -> path, each checked against ``SHA256SUMS``: a damaged file is one line, not a protobuf error."""
    fix = "reinstalling g2g fixes it"
    try:
        lines = (folder / SUMS_FILE).read_text(errors="replace").splitlines()
    except OSError:
        raise DetectorAssetError(f"MTCNN detector list {folder / SUMS_FILE} is missing or unreadable; {fix}") from None
    sums = {p[1].lstrip("*"): p[0] for p in (ln.split(None, 1) for ln in lines) if len(p) == 2}
    paths = {}
    for name in OUTPUTS:
        path = folder / f"{name}.onnx"
        try:
            digest = sha256_file(path)
        except OSError:
            raise DetectorAssetError(f"MTCNN detector file {path} is missing or unreadable; {fix}") from None
        if digest != sums.get(path.name):
            raise DetectorAssetError(f"MTCNN detector file {path} is damaged (its sha256 does not match "
                                     f"{SUMS_FILE}); {fix}")
        paths[name] = path
    return paths


def _ort_net(info: SessionInfo, outputs: Sequence[str]) -> Net:
    """A session as a numpy callable returning ``outputs`` in that order."""
    names = [o.name for o in info.session.get_outputs()]
    order = [names.index(o) for o in outputs]

    def run(x: np.ndarray) -> list[np.ndarray]:
        got = run_bound(info, {"image": x})
        return [got[i] for i in order]

    return run


def open_nets(folder: Path | str | None = None, device: str = "auto",
              threads: int | None = None) -> tuple[Nets, dict[str, SessionInfo]]:
    """Verified sessions for the three nets, and the convention read from their metadata."""
    paths = verified_paths(asset_dir(folder))
    infos = {name: open_session(path, device, threads) for name, path in paths.items()}
    meta = {name: info.session.get_modelmeta().custom_metadata_map for name, info in infos.items()}
    nets = Nets(*(_ort_net(infos[n], OUTPUTS[n]) for n in OUTPUTS),
                rnet_size=int(meta["rnet"]["input_size"]), onet_size=int(meta["onet"]["input_size"]),
                mean=float(meta["pnet"]["mean"]), scale=float(meta["pnet"]["scale"]))
    return nets, infos


@functools.lru_cache(maxsize=1)
def _packaged_nets() -> Nets:
    """The packaged nets on the CPU, opened once per process (``detect_face`` without ``nets``)."""
    return open_nets(device="cpu")[0]


# --- area resampling (torch's interpolate(mode="area")) ------------------------------------------------------------
def integral_image(imgs: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, H+1, W+1, C) zero-padded 2-D cumulative sums: any window's sum in four look-ups.

    Integer images sum exactly (int32 while it cannot overflow), others in float64.
    """
    n, h, w, c = imgs.shape
    if np.issubdtype(imgs.dtype, np.integer):
        peak = 255 if imgs.dtype == np.uint8 else int(np.abs(imgs.astype(np.int64)).max(initial=0))
        dtype = np.int32 if peak * h * w < 2**31 else np.int64
    else:
        dtype = np.float64
    ii = np.zeros((n, h + 1, w + 1, c), dtype)
    np.cumsum(np.cumsum(imgs, axis=1, dtype=dtype), axis=2, dtype=dtype, out=ii[:, 1:, 1:])
    return ii


def area_bins(length: np.ndarray | int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-pooling bins of ``size`` cells over ``length`` (K,) inputs: start, end (K, size), end exclusive."""
    i = np.arange(size)
    length = np.asarray(length, np.int64).reshape(-1, 1)
    return (i * length) // size, -((-(i + 1) * length) // size)


def window_means(ii: np.ndarray, image: np.ndarray, rows: tuple[np.ndarray, np.ndarray],
                 cols: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Means of the windows ``rows x cols`` ((K, oh) and (K, ow) start/end) of image ``image[k]`` -> (K, C, oh, ow).

    Rounded as torch's adaptive average pooling does: float32(sum) / bin height / bin width.
    """
    (r0, r1), (c0, c1) = rows, cols
    k = np.asarray(image)[:, None, None]
    a, b, c, d = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
    sums = ii[k, b, d] - ii[k, a, d] - ii[k, b, c] + ii[k, a, c]  # (K, oh, ow, C)
    kh = (r1 - r0).astype(np.float32)[:, :, None, None]
    kw = (c1 - c0).astype(np.float32)[:, None, :, None]
    return (sums.astype(np.float32) / kh / kw).transpose(0, 3, 1, 2)


def area_resize(imgs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) -> (N, C, oh, ow) float32: ``torch.nn.functional.interpolate(x_nchw, size, mode="area")``."""
    imgs = np.asarray(imgs)
    n, h, w = imgs.shape[:3]
    return _resize_all(integral_image(imgs), (h, w), size)


def _resize_all(ii: np.ndarray, hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Every image of an integral-image stack resampled to ``size`` (the bins are shared: two 1-D gathers)."""
    r0, r1 = (b[0] for b in area_bins(hw[0], size[0]))
    c0, c1 = (b[0] for b in area_bins(hw[1], size[1]))
    rows = ii[:, r1] - ii[:, r0]  # (N, oh, W+1, C)
    sums = rows[:, :, c1] - rows[:, :, c0]  # (N, oh, ow, C), exact for integer images
    kh, kw = (r1 - r0).astype(np.float32)[:, None, None], (c1 - c0).astype(np.float32)[:, None]
    return (sums.astype(np.float32) / kh / kw).transpose(0, 3, 1, 2)


def crop_resize(ii: np.ndarray, image: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray,
                x1: np.ndarray, side: int) -> np.ndarray:
    """Crops ``[y0, y1) x [x0, x1)`` of images ``image`` (each (K,)), area-resampled to (K, C, side, side)."""
    r0, r1 = area_bins(y1 - y0, side)
    c0, c1 = area_bins(x1 - x0, side)
    return window_means(ii, image, (r0 + y0[:, None], r1 + y0[:, None]), (c0 + x0[:, None], c1 + x0[:, None]))


# --- box arithmetic (facenet-pytorch's, in its float32 order) ------------------------------------------------------
def scale_pyramid(h: int, w: int, minsize: float, factor: float) -> list[float]:
    """PNet's scales: the smallest face searched (``minsize``) maps to its 12 px window, down to a 12 px image."""
    m = 12.0 / minsize
    minl, scale, scales = min(h, w) * m, m, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    return scales


def generate_boxes(reg: np.ndarray, prob: np.ndarray, scale: float,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """PNet maps -> candidate boxes (K, 9: x1 y1 x2 y2 score reg*4) in image pixels, and their image index."""
    image, yy, xx = np.nonzero(prob >= np.float32(threshold))
    bb = np.stack([xx, yy], 1).astype(np.float32)
    s = np.float32(scale)
    q1, q2 = np.floor((2 * bb + 1) / s), np.floor((2 * bb + 12) / s)  # stride 2, 12 px cells
    boxes = np.concatenate([q1, q2, prob[image, yy, xx][:, None], reg[image, :, yy, xx]], 1)
    return boxes.astype(np.float32), image.astype(np.int64)


def rerec(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centres (side = the longer side)."""
    b = boxes.copy()
    h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2:4] = b[:, :2] + side[:, None]
    return b


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes moved by a net's regression (in units of the box's inclusive width and height)."""
    b = boxes.copy()
    w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    b[:, :4] = b[:, :4] + reg * np.stack([w, h, w, h], 1)
    return b


def pad(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1-based inclusive crop bounds y, ey, x, ex of each box, clipped to the image (as facenet-pytorch's ``pad``)."""
    b = np.trunc(boxes[:, :4]).astype(np.int32)
    return np.maximum(b[:, 1], 1), np.minimum(b[:, 3], h), np.maximum(b[:, 0], 1), np.minimum(b[:, 2], w)


# --- non-maximum suppression ---------------------------------------------------------------------------------------
def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's CPU ``nms``: indices kept, by descending score (ties in input order); IoU > threshold dropped."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[order, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep, rest = [], np.arange(len(order))
    while rest.size:
        i, rest = rest[0], rest[1:]
        keep.append(i)
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        rest = rest[~(iou.astype(np.float64) > threshold)]
    return order[np.array(keep, np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, image: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's CPU ``batched_nms``: NMS within each image; kept indices by descending score."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if len(boxes) > VANILLA_NMS_BOXES:  # per class, then all kept sorted by score
        keep = np.sort(np.concatenate([np.flatnonzero(image == c)[nms(boxes[image == c], scores[image == c], threshold)]
                                       for c in np.unique(image)]))
        return keep[np.argsort(-scores[keep], kind="stable")]
    offsets = image.astype(np.float32) * (boxes.max() + np.float32(1))  # images far apart: one NMS call
    return nms(boxes + offsets[:, None], scores, threshold)


def batched_nms_min(boxes: np.ndarray, scores: np.ndarray, image: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's ``batched_nms_numpy(..., "Min")``: overlap over the smaller box's (inclusive) area."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    b = boxes + (image.astype(np.float32) * (boxes.max() + np.float32(1)))[:, None]
    x1, y1, x2, y2 = (b[:, i].copy() for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = np.argsort(scores), []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / np.minimum(area[i], area[rest])
        order = rest[np.where(overlap <= threshold)]
    return np.array(keep, np.int64)


# --- the three stages ----------------------------------------------------------------------------------------------
def _normalise(x: np.ndarray, nets: Nets) -> np.ndarray:
    """facenet-pytorch's ``(x - 127.5) * 0.0078125`` (from the nets' metadata), as one contiguous float32 batch."""
    return np.ascontiguousarray((x - np.float32(nets.mean)) * np.float32(nets.scale), np.float32)


def propose(ii: np.ndarray, hw: tuple[int, int], scales: list[float], nets: Nets,
            threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: PNet over the pyramid (one run per scale on the whole stack) -> square boxes (K, 5), image index."""
    h, w = hw
    boxes, images = [np.zeros((0, 9), np.float32)], [np.zeros(0, np.int64)]
    for scale in scales:
        reg, prob = nets.pnet(_normalise(_resize_all(ii, hw, (int(h * scale + 1), int(w * scale + 1))), nets))
        b, i = generate_boxes(reg, prob[:, 1], scale, threshold)
        keep = batched_nms(b[:, :4], b[:, 4], i, 0.5)
        boxes.append(b[keep])
        images.append(i[keep])
    b, i = np.concatenate(boxes), np.concatenate(images)
    keep = batched_nms(b[:, :4], b[:, 4], i, 0.7)
    b, i = b[keep], i[keep]
    rw, rh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    q = b[:, :4] + b[:, 5:9] * np.stack([rw, rh, rw, rh], 1)
    return rerec(np.concatenate([q, b[:, 4:5]], 1)), i


def _run_crops(net: Net, widths: tuple[int, ...], ii: np.ndarray, boxes: np.ndarray, image: np.ndarray,
               hw: tuple[int, int], side: int, nets: Nets) -> tuple[np.ndarray, list[np.ndarray]]:
    """The boxes' crops through ``net`` in chunks -> (mask of boxes whose crop is not empty, outputs for those)."""
    y, ey, x, ex = (a.astype(np.int64) for a in pad(boxes, hw[1], hw[0]))
    ok = (ey > y - 1) & (ex > x - 1)
    idx = np.flatnonzero(ok)
    parts = [[np.zeros((0, width), np.float32) for width in widths]]
    for s in range(0, len(idx), CHUNK):
        j = idx[s:s + CHUNK]
        parts.append(net(_normalise(crop_resize(ii, image[j], y[j] - 1, ey[j], x[j] - 1, ex[j], side), nets)))
    return ok, [np.concatenate([p[o] for p in parts]) for o in range(len(widths))]


def _passed(boxes: np.ndarray, image: np.ndarray, prob: np.ndarray, threshold: float,
            *per_box: np.ndarray) -> tuple[np.ndarray, ...]:
    """The boxes whose face probability passes ``threshold``, rescored (K, 5), with their image index and
    ``per_box`` rows."""
    score = prob[:, 1]
    passed = score > np.float32(threshold)
    boxes = np.concatenate([boxes[passed, :4], score[passed, None]], 1)
    return (boxes, image[passed], *(a[passed] for a in per_box))


def refine(ii: np.ndarray, boxes: np.ndarray, image: np.ndarray, hw: tuple[int, int], nets: Nets,
           threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2: RNet on 24 px crops -> boxes rescored, NMS'd, regressed and squared."""
    if len(boxes) == 0:
        return boxes, image
    ok, (reg, prob) = _run_crops(nets.rnet, (4, 2), ii, boxes, image, hw, nets.rnet_size, nets)
    boxes, image, reg = _passed(boxes[ok], image[ok], prob, threshold, reg)
    keep = batched_nms(boxes[:, :4], boxes[:, 4], image, 0.7)
    return rerec(bbreg(boxes[keep], reg[keep])), image[keep]


def finish(ii: np.ndarray, boxes: np.ndarray, image: np.ndarray, hw: tuple[int, int], nets: Nets,
           threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 3: ONet on 48 px crops -> final boxes (K, 5), image index, landmarks (K, 5, 2)."""
    if len(boxes) == 0:
        return boxes, image, np.zeros((0, 5, 2), np.float32)
    ok, (reg, marks, prob) = _run_crops(nets.onet, (4, 10, 2), ii, boxes, image, hw, nets.onet_size, nets)
    boxes, image, reg, marks = _passed(boxes[ok], image[ok], prob, threshold, reg, marks)
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    px = w[:, None] * marks[:, :5] + boxes[:, 0:1] - 1
    py = h[:, None] * marks[:, 5:] + boxes[:, 1:2] - 1
    points = np.stack([px, py], 2)
    boxes = bbreg(boxes, reg)
    keep = batched_nms_min(boxes[:, :4], boxes[:, 4], image, 0.7)
    return boxes[keep], image[keep], points[keep]


def detect_face(imgs: np.ndarray, minsize: float = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                factor: float = 0.709, nets: Nets | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """Faces of each (H, W, 3) RGB image of ``imgs`` (N, H, W, 3), one size for the whole stack.

    Per image: boxes (k, 4) float32 x1 y1 x2 y2, probs (k,), points (k, 5, 2) (eyes, nose, mouth corners), by
    descending probability; each None when no face. ``nets`` defaults to the packaged ONNX nets on the CPU.
    """
    imgs = np.asarray(imgs)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise ValueError(f"expected images (N, H, W, 3), got shape {imgs.shape}")
    nets = _packaged_nets() if nets is None else nets
    n, h, w = imgs.shape[:3]
    ii = integral_image(imgs)
    boxes, image = propose(ii, (h, w), scale_pyramid(h, w, minsize, factor), nets, thresholds[0])
    boxes, image = refine(ii, boxes, image, (h, w), nets, thresholds[1])
    boxes, image, points = finish(ii, boxes, image, (h, w), nets, thresholds[2])
    out: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    for b in range(n):
        sel = image == b
        found = bool(sel.any())
        out[0].append(boxes[sel, :4] if found else None)
        out[1].append(boxes[sel, 4] if found else None)
        out[2].append(points[sel] if found else None)
    return out


class OnnxMTCNN:
    """MTCNN on ONNX Runtime: ``detect`` is ``facenet_pytorch.MTCNN(keep_all=True, select_largest=False).detect``.

    ``device`` is ``auto``, ``cpu`` or ``cuda[:N]`` (:func:`g2g.runtime.open_session`); ``self.device`` is where the
    nets really run and ``self.note`` says why CUDA was not used when it was asked for. ``assets`` overrides the
    folder of the ONNX files (default ``$G2G_MTCNN_DIR`` or the packaged files).
    """

    def __init__(self, device: str = "auto", min_face: float = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, threads: int | None = None, assets: Path | str | None = None):
        self.min_face, self.thresholds, self.factor = min_face, tuple(thresholds), factor
        self.nets, self.sessions = open_nets(assets, device, threads)
        self.device = self.sessions["pnet"].device
        self.note = self.sessions["pnet"].note

    def detect(self, img: np.ndarray, landmarks: bool = True) -> tuple[Any, ...]:
        """(N, H, W, 3) uint8 RGB -> (boxes, probs, points) as facenet-pytorch's object arrays: per image (k, 4),
        (k,), (k, 5, 2), or None, [None], None when no face. An (H, W, 3) image gives that image's entries."""
        img = np.asarray(img)
        stack = img[None] if img.ndim == 3 else img
        boxes, probs, points = detect_face(stack, self.min_face, self.thresholds, self.factor, self.nets)
        probs = [[None] if p is None else p for p in probs]
        res = tuple(np.array(v, dtype=object) for v in (boxes, probs, points))
        if img.ndim == 3:
            res = tuple(v[0] for v in res)
        return res if landmarks else res[:2]


__all__ = ["OnnxMTCNN", "detect_face", "area_resize", "open_nets", "verified_paths", "DetectorAssetError", "Nets"]
