"""How the embeddings of each identity network are compared: metric, same-person threshold, size (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
