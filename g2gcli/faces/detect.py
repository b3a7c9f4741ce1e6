"""Face detection with 5 landmarks: MTCNN on ONNX Runtime (``g2g.faces.mtcnn``), no torch.

The networks are facenet-pytorch's MTCNN weights, shipped as ONNX inside the
package and checked against their SHA256SUMS when a detector is built; the
pipeline around them reproduces facenet-pytorch's ``MTCNN.detect``.

Batching: MTCNN runs one pyramid over a stack of images, so a batch must share
one size. ``detect_batch`` groups the images of a batch by exact (H, W) and runs
each group as one MTCNN call; photos of a dataset resized to one size (CelebA
aligned, video frames) batch fully, mixed sizes fall back to smaller groups.
No padding to a common canvas: it would change the pyramid and the detections
near the padded edges, and correctness comes first. A group whose MTCNN call
fails is retried image by image, and an image that still fails gets an
``error`` entry instead of stopping the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MTCNN_MIN_FACE = 12  # px: MTCNN's P-Net window, the smallest face it can find


@dataclass
class Face:
    """One detection in source-photo pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float  # MTCNN's final-stage probability
    landmarks: np.ndarray = field(repr=False)  # (5, 2): left eye, right eye, nose, mouth left, mouth right

    @property
    def side(self) -> float:
        """Longer side of the box, px (what ``min_face`` compares against).

        The longer side, like MTCNN's own ``min_face_size`` (its square search
        window): MTCNN boxes are about 0.8x as wide as tall.
        """
        x1, y1, x2, y2 = self.box
        return float(max(x2 - x1, y2 - y1))

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


class DetectorError(RuntimeError):
    """MTCNN failed on one image (kept per image so the batch goes on)."""


class FaceDetector:
    """MTCNN on a device, returning every face above MTCNN's own thresholds.

    ``min_face`` is MTCNN's smallest searched face (px); policy (score, size,
    largest) is the caller's job so it can say why a face was rejected.
    ``device`` is where the nets really run and ``note`` says why CUDA was not
    used when it was asked for (ONNX Runtime falls back to the CPU).
    """

    def __init__(
        self,
        device: str = "auto",
        min_face: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ):
        from g2g.faces.mtcnn import OnnxMTCNN

        self.min_face = int(min_face)
        self.mtcnn = OnnxMTCNN(device, min_face=self.min_face, thresholds=thresholds, factor=factor)
        self.device, self.note = self.mtcnn.device, self.mtcnn.note

    def _run(self, stack: np.ndarray) -> list[list[Face]]:
        """One MTCNN call on (N, H, W, 3) uint8 images of one size."""
        h, w = stack.shape[1:3]
        if min(h, w) < self.min_face:  # MTCNN's scale pyramid is empty
            return [[] for _ in range(len(stack))]
        boxes, probs, points = self.mtcnn.detect(stack, landmarks=True)
        out: list[list[Face]] = []
        for b, p, lm in zip(boxes, probs, points):
            if b is None:
                out.append([])
                continue
            b, p, lm = np.asarray(b, np.float64), np.asarray(p, np.float64), np.asarray(lm, np.float64)
            out.append([Face(tuple(map(float, b[i, :4])), float(p[i]), lm[i].reshape(5, 2)) for i in range(len(b))])
        return out

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face] | DetectorError]:
        """Faces of each (H, W, 3) uint8 RGB image, in input order.

        An entry is a :class:`DetectorError` (not raised) when MTCNN failed on that image.
        """
        results: list[list[Face] | DetectorError | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape[:2]), []).append(i)
        for idx in groups.values():
            try:
                faces = self._run(np.stack([images[i] for i in idx]))
            except Exception:  # retry alone, so one bad image does not sink its group
                faces = []
                for i in idx:
                    try:
                        faces += self._run(images[i][None])
                    except Exception as e:
                        faces.append(DetectorError(f"{type(e).__name__}: {e}"))
            for i, f in zip(idx, faces):
                results[i] = f
        return results  # type: ignore[return-value]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces of one image; raises :class:`DetectorError` if MTCNN fails."""
        r = self.detect_batch([image])[0]
        if isinstance(r, DetectorError):
            raise r
        return r
