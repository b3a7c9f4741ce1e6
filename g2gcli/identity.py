"""Identity embeddings on ONNX Runtime, for ``g2g eval`` and the benchmarks.

Runs the identity network that ``g2g.export.identity.export_identity`` wrote:
aligned crops in, descriptors out. The crop size, alignment zoom, distance metric
and same-person threshold travel inside the ONNX file's metadata, so nothing here
guesses preprocessing. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from g2g.preprocess import DEFAULT_ZOOM, to_input
from g2g.runtime import SessionInfo, open_session, read_metadata


@dataclass(frozen=True)
class DistanceConvention:
    metric: str  # the distance that separates identities best for this net
    threshold: float  # same person below this distance
    dim: int  # embedding size
    note: str


# dlib's descriptors of different people still have cosine similarity ~0.8, so the
# Euclidean distance (dlib's own 0.6 threshold) is the one to use; cosine is reported too.
CONVENTIONS: dict[str, DistanceConvention] = {
    "dlib": DistanceConvention("euclidean", 0.6, 128, "dlib's threshold (LFW 99.38%); cosine reported too"),
    # facenet's embeddings are L2-normalised: Euclidean and cosine rank pairs identically.
    # 1.1 is the usual operating point quoted for these weights, not measured here.
    "facenet-vggface2": DistanceConvention("euclidean", 1.1, 512, "unit-norm embeddings; threshold approximate"),
    "facenet-casia-webface": DistanceConvention("euclidean", 1.1, 512, "unit-norm embeddings; threshold approximate"),
}


def distance_convention(name: str) -> DistanceConvention:
    """How embeddings of identity net ``name`` are compared."""
    if name not in CONVENTIONS:
        raise ValueError(f"unknown identity net {name!r}; choose from {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance of (..., D) arrays (broadcasting)."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (..., D) arrays (broadcasting); 1 = same direction."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


class IdentityEmbedder:
    """Exported identity network on ONNX Runtime: uint8 crops (N, S, S, 3) -> embeddings (N, D)."""

    def __init__(self, model_path: Path, device: str = "auto", batch_size: int = 64):
        self.path = Path(model_path)
        self.meta = read_metadata(self.path)
        self.info: SessionInfo = open_session(self.path, device)
        self.size = int(self.meta.get("input_size", 0))
        self.zoom = float(self.meta.get("zoom", "nan"))
        self.name = self.meta.get("identity_net", "unknown")
        self.metric = self.meta.get("distance", "euclidean")
        self.threshold = float(self.meta.get("threshold", "nan"))
        self.batch_size = batch_size

    def embed(self, crops_uint8: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) RGB uint8 crops aligned at this model's size and zoom -> (N, D) float32."""
        crops = np.asarray(crops_uint8)
        if crops.ndim != 4 or crops.shape[3] != 3 or (self.size and crops.shape[1:3] != (self.size, self.size)):
            raise ValueError(f"expected crops (N, {self.size}, {self.size}, 3), got {crops.shape}")
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = to_input(crops[i : i + self.batch_size])  # (B, 3, S, S)
            out.append(self.info.session.run(["embeddings"], {"crops": x})[0])
        dim = int(self.meta.get("embedding_dim", 128))
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def cached_identity_onnx(name: str = "dlib", zoom: float = DEFAULT_ZOOM, size: int = 128,
                         cache_dir: Path | None = None) -> Path:
    """The identity network for (name, zoom, size) as ONNX, exported once into the user cache. Only that first
    export imports torch (g2g.export.identity); every later ``g2g eval`` finds the file."""
    import os

    from g2g.weights import verified_sha256

    weights = "dlib-resnet" if name == "dlib" else name
    root = Path(cache_dir or os.path.join(os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "g2g"))
    path = root / f"identity-{name}-s{size}-z{zoom:g}-{verified_sha256(weights)[:12]}.onnx"
    if not path.is_file():
        from g2g.export.identity import export_identity

        export_identity(path, name, zoom, size, verbose=False)
    return path
