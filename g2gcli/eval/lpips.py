"""ST-LPIPS (the trainer's perceptual network) on ONNX Runtime, for ``g2g eval --metric recon``.

The graph is exported from PyTorch once into the user cache by the training install
(``python -m g2g.export.lpips_onnx``). Eval starts that export as a separate process, so the
eval process itself never imports torch; without torch (or without the weights) LPIPS is
reported unavailable. The graph takes any batch and any crop side ``S >= MIN_SIZE``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from g2g.errors import G2GError
from g2g.faces.preprocess import to_input

LPIPS_TAG = "lpips-v1"  # cache file names; bump when the graph changes
WEIGHTS = "stlpips-vgg"  # g2g.weights registry name of the checkpoint it is exported from
MIN_SIZE = 32  # the exported range starts here (the network itself fails below 18 px: its last BlurPool's padding)
BUILD_TIMEOUT_S = 1800  # the export takes about half a minute on two cores
BATCH = 16  # pairs per ONNX Runtime call


class LpipsUnavailable(G2GError):
    """LPIPS cannot be measured here (one-line reason)."""


def lpips_cache_path(cache_dir: Path | None = None) -> Path:
    """Where the ST-LPIPS ONNX file lives in the user cache (named by its weights' sha256; one file for every size)."""
    from g2g.io.cache import cache_root
    from g2g.weights import verified_sha256

    return cache_root(cache_dir) / f"{LPIPS_TAG}-stlpips-{verified_sha256(WEIGHTS)[:12]}.onnx"


def torch_installed() -> bool:
    """Whether torch could be imported (asked of the import system without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def cached_lpips_onnx(size: int, cache_dir: Path | None = None) -> Path:
    """The ST-LPIPS ONNX file, exported by a ``python -m g2g.export.lpips_onnx`` subprocess when it is missing or
    damaged (checked at ``size`` px); raises :class:`LpipsUnavailable` with the reason when it cannot be had."""
    from g2g.io.cache import cache_root, intact_file

    if size < MIN_SIZE:
        raise LpipsUnavailable(f"{size} px crops are below the {MIN_SIZE} px the LPIPS graph is exported for")
    try:
        path = lpips_cache_path(cache_dir)
    except Exception as e:  # stlpips-pytorch (the weights' package) absent or its file damaged
        raise LpipsUnavailable(f"no ST-LPIPS weights ({e}); needs the training install: pip install 'g2g[train]'") from None
    if intact_file(path):
        return path
    if not torch_installed():
        raise LpipsUnavailable(f"the ST-LPIPS network is not in the cache ({path.name}) and exporting it needs the "
                               "training install: pip install 'g2g[train]'")
    cmd = [sys.executable, "-m", "g2g.export.lpips_onnx", "--size", str(size), "--cache-dir", str(cache_root(cache_dir))]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LpipsUnavailable(f"exporting ST-LPIPS to ONNX failed: {type(e).__name__}: {e}") from None
    if res.returncode != 0 or not intact_file(path):
        lines = [ln.strip() for ln in (res.stderr or res.stdout or "").splitlines() if ln.strip()]
        raise LpipsUnavailable(f"exporting ST-LPIPS to ONNX failed (exit {res.returncode}): "
                               f"{lines[-1] if lines else 'no output'}")
    return path


def lpips_distance(path: Path, device: str = "auto") -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str]:
    """(``fn(a_uint8, b_uint8) -> (N,)`` float32 ST-LPIPS of crops (N, S, S, 3), the device it runs on)."""
    from g2g.runtime import open_session

    info = open_session(path, device)

    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if len(a) != len(b):
            raise ValueError(f"LPIPS needs pairs: {len(a)} images against {len(b)}")
        out = [info.session.run(["distance"], {"a": to_input(a[s:s + BATCH]), "b": to_input(b[s:s + BATCH])})[0]
               for s in range(0, len(a), BATCH)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    return fn, info.device
