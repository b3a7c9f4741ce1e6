"""Identity embeddings on ONNX Runtime, for ``g2g eval`` and the benchmarks.

Runs the identity network that :func:`cached_identity_onnx` built (dlib's, from its
weights with numpy: ``g2g.faces.dlib_graph``) or ``g2g.export.identity_onnx`` exported:
aligned crops in, descriptors out. The crop size, alignment zoom, distance metric
and same-person threshold travel inside the ONNX file's metadata, so nothing here
guesses preprocessing. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from g2g.errors import G2GError
from g2g.faces.preprocess import DEFAULT_ZOOM, to_input
from g2g.runtime import CropNetwork


class IdentityEmbedder(CropNetwork):
    """Exported identity network on ONNX Runtime: uint8 crops (N, S, S, 3) -> embeddings (N, D)."""

    def __init__(self, model_path: Path, device: str = "auto", batch_size: int = 64):
        super().__init__(model_path, device, batch_size)
        self.name = self.meta.get("identity_net", "unknown")
        self.metric = self.meta.get("distance", "euclidean")
        self.threshold = float(self.meta.get("threshold", "nan"))

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


IDENTITY_GRAPH_TAG = "identity-v2"  # cache file names; v1 files were PyTorch exports without a .sha256 sidecar


def identity_cache_path(name: str, zoom: float, size: int, cache_dir: Path | None = None) -> Path:
    """Where the identity network for (name, zoom, size) lives in the user cache (named by its weights' sha256)."""
    from g2g.io.cache import cache_root
    from g2g.weights import verified_sha256

    weights = "dlib-resnet" if name == "dlib" else name
    return cache_root(cache_dir) / f"{IDENTITY_GRAPH_TAG}-{name}-s{size}-z{zoom:g}-{verified_sha256(weights)[:12]}.onnx"


def cached_identity_onnx(name: str = "dlib", zoom: float = DEFAULT_ZOOM, size: int = 128,
                         cache_dir: Path | None = None) -> Path:
    """The identity network for (name, zoom, size) as ONNX, built once into the user cache and checked against its
    ``.sha256`` sidecar on every later call (a damaged file is rebuilt). dlib's is written from its weights with
    numpy (g2g.faces.dlib_graph, no torch); a facenet net is exported from PyTorch by the training install
    (``python -m g2g.export.identity_onnx NAME``), and found here."""
    from g2g.io.cache import cached_file

    path = identity_cache_path(name, zoom, size, cache_dir)
    return cached_file(path, _dlib_build(zoom, size) if name == "dlib" else _not_built(name, zoom, size, path))


def _dlib_build(zoom: float, size: int) -> Callable[[], bytes]:
    """What writes dlib's identity network from its weights with numpy (no torch)."""

    def build() -> bytes:
        from g2g.faces.dlib_graph import checked_bytes, identity_model

        return checked_bytes(identity_model(zoom, size))

    return build


def _not_built(name: str, zoom: float, size: int, path: Path) -> Callable[[], bytes]:
    """A facenet network missing from the cache: one line saying how the training install builds it."""

    def build() -> bytes:
        raise G2GError(f"the {name} identity network is not built for {size} px crops at zoom {zoom:g} ({path} is "
                       f"missing or damaged); it is exported from PyTorch once: pip install 'g2g[train]', then "
                       f"python -m g2g.export.identity_onnx {name} --size {size} --zoom {zoom:g}")

    return build
