"""What a recipe hands the bundle writer: its ONNX parts, and the parity bounds every part must meet.

A recipe's export (``g2g.train.recipes``) gives one :class:`PartSpec` per bundle
part (``g2g.bundle.PARTS``) and a parity check, together an :class:`ExportParts`;
``g2g.export.onnx_export`` exports, checks and writes them without knowing the
recipe. Bounds scale with the reference's magnitude (``bound * max(1, max|ref|)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

# max |onnx - torch| allowed, times max(1, max |torch output|)
BOUNDS_FP32 = {"content_encoder": 1e-3, "class_encoder": 1e-3, "decoder": 1e-3, "mix": 1e-3}
BOUNDS_FP16 = {"content_encoder": 1e-2, "class_encoder": 1e-2, "decoder": 5e-2, "mix": 5e-2}
MAX_DIM = 1 << 16  # upper limit of the symbolic batch dims given to torch.export

Parity = Callable[[dict[str, Path], bool], tuple[dict[str, float], dict[str, float]]]


class PartSpec(NamedTuple):
    """One ONNX part: the module, example arguments, input and output names, torch.export dynamic shapes."""

    module: Any
    args: tuple
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, Any]]


@dataclass(frozen=True)
class ExportParts:
    """A generator's bundle parts by name, and ``parity(staged paths, fp16) -> (diffs, bounds)`` on the staged files."""

    specs: dict[str, PartSpec]
    parity: Parity


def batch_dims() -> tuple[Any, Any]:
    """The symbolic N (batch) and K (photos per identity) of every part."""
    from torch.export import Dim

    return Dim("N", min=1, max=MAX_DIM), Dim("K", min=1, max=MAX_DIM)


def diffs_and_bounds(pairs: dict[str, tuple[np.ndarray, np.ndarray]], fp16: bool
                     ) -> tuple[dict[str, float], dict[str, float]]:
    """max |onnx - torch| per part of (onnx, torch) pairs, and each bound scaled by the reference's magnitude."""
    base = BOUNDS_FP16 if fp16 else BOUNDS_FP32
    diffs = {k: float(np.abs(a - b).max()) for k, (a, b) in pairs.items()}
    bounds = {k: base[k] * max(1.0, float(np.abs(b).max())) for k, (a, b) in pairs.items()}
    return diffs, bounds
