"""Export the trainer's ST-LPIPS network to one ONNX file that ``g2g eval --metric recon`` runs on ONNX Runtime.

The file takes two batches of images as g2g feeds the network (inputs ``a`` and ``b``: float32
(N, 3, S, S) in [-1, 1], one dynamic N and one dynamic S >= 32 shared by both) and returns
``distance`` (N,), 0 for identical images. It is checked with ``onnx.checker`` and against
PyTorch on ONNX Runtime, at the size asked for and at a second size, before it is kept.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from g2g.eval.lpips import MIN_SIZE, WEIGHTS, lpips_cache_path
from g2g.export.checked import export_to_cache, ort_parity, write_checked

OPSET = 18
PARITY_TOL = 1e-5  # measured: ~3e-8 on distances of 0.01..0.1 (float32 summation order only)
MAX_SIZE = 4096


def export_lpips(path: Path, size: int = 64, tol: float = PARITY_TOL, verbose: bool = True) -> Path:
    """Write the ST-LPIPS ONNX model (checked at ``size`` px and at a second size); returns ``path``."""
    import onnx

    from g2g.train.perceptual import load_perceptual
    from g2g.weights import verified_sha256

    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size {size} is outside {MIN_SIZE}..{MAX_SIZE} px")
    net = load_perceptual("stlpips", "cpu")
    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.rand(2, 3, size, size, generator=gen) * 2 - 1 for _ in range(2))
    n = torch.export.Dim("N", min=1, max=4096)
    s = torch.export.Dim("S", min=MIN_SIZE, max=MAX_SIZE)
    dims = {0: n, 2: s, 3: s}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name")  # a and b share N and S on purpose
        raw = Path(tmp) / "lpips.onnx"
        torch.onnx.export(
            net, example, str(raw), input_names=["a", "b"], output_names=["distance"],
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={"x": dims, "y": dims},
        )
        model = onnx.load(str(raw))
    sizes = (size, _second_size(size))
    meta = {
        "g2g_model": "lpips",
        "network": "ST-LPIPS VGG16 (shift-tolerant LPIPS, Ghildyal & Liu, ECCV 2022): g2g train's perceptual loss",
        "input_size": f"dynamic, S >= {MIN_SIZE} (checked at {sizes[0]} and {sizes[1]})",
        "input": "a, b: float32 (N, 3, S, S) RGB in [-1, 1] = pixel / 127.5 - 1, same N and S",
        "output": "distance: float32 (N,): ST-LPIPS(a, b), 0 = identical",
        "weights_sha256": verified_sha256(WEIGHTS),
    }
    return write_checked(model, meta, "g2g ST-LPIPS VGG16 distance (the trainer's perceptual network)",
                         lambda data: _parity(data, net, sizes), tol, path, f"LPIPS ONNX (checked at {sizes} px)",
                         verbose)


def _second_size(size: int) -> int:
    """An odd side different from ``size`` (checks that the spatial axis really is dynamic), at least MIN_SIZE."""
    return max(MIN_SIZE + 1, size // 2) | 1


def _parity(model_bytes: bytes, net: nn.Module, sizes: tuple[int, int]) -> float:
    """ORT vs PyTorch: batches of 1 and 3 at the first size, 2 at the second; the pairs are unrelated images, a
    slightly noisy copy and an identical copy (small distances matter too)."""
    gen = torch.Generator().manual_seed(0)

    def batch(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
        b = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
        if n > 1:
            b[1] = (a[1] + 0.05 * torch.randn(3, size, size, generator=gen)).clamp(-1, 1)
        if n > 2:
            b[2] = a[2]
        return a, b

    batches = (batch(n, size) for n, size in ((1, sizes[0]), (3, sizes[0]), (2, sizes[1])))
    return ort_parity(model_bytes, net, batches, ["a", "b"], "distance")


def main(argv: list[str] | None = None) -> None:
    """``python -m g2g.export.lpips_onnx --size S``: export ST-LPIPS into the user cache, where
    ``g2g eval --metric recon`` finds it (eval runs this itself when the file is missing and torch is installed)."""
    import argparse


    parser = argparse.ArgumentParser(prog="python -m g2g.export.lpips_onnx", description=main.__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64,
                        help=f"crop side the export is checked at, px (the graph takes any side >= {MIN_SIZE})")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $XDG_CACHE_HOME/g2g")
    args = parser.parse_args(argv)

    print(export_to_cache(lpips_cache_path(args.cache_dir), lambda tmp: export_lpips(tmp, args.size)))


if __name__ == "__main__":
    main()
