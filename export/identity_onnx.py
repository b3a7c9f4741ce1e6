"""Export the identity network to one ONNX file that ``g2g eval`` runs on ONNX Runtime.

The file takes g2g's aligned crops as they are (input ``crops``: float32 (N, 3, S, S)
in [-1, 1], dynamic N) and returns ``embeddings`` (N, D); the resampling to the
backbone's chip is inside the graph. Its ``metadata_props`` say everything a
reader needs: net name, alignment zoom, input size, normalisation, distance metric
and threshold, and the sha256 of the source weights. Export is checked with
``onnx.checker`` and against PyTorch on ONNX Runtime before the file is kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from g2g.export.checked import export_to_cache, ort_parity, write_checked
from g2g.faces.dlib_graph import OPSET, identity_doc, identity_meta  # GridSample needs >= 16
from g2g.faces.preprocess import DEFAULT_ZOOM

PARITY_TOL = 1e-4


def export_identity(path: Path, name: str = "dlib", zoom: float = DEFAULT_ZOOM, size: int = 128,
                    tol: float = PARITY_TOL, verbose: bool = True) -> Path:
    """Write the identity ONNX model for crops of ``size`` px aligned at ``zoom``; returns ``path``."""
    import onnx

    from g2g.train.identity_net import load_identity_net

    net = load_identity_net(name, zoom)
    example = torch.rand(2, 3, size, size) * 2 - 1  # (N, 3, S, S)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "identity.onnx"
        torch.onnx.export(
            net, (example,), str(raw), input_names=["crops"], output_names=["embeddings"],
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={"crops": {0: torch.export.Dim("N", min=1, max=4096)}},
        )
        model = onnx.load(str(raw))
    meta = identity_meta(name, zoom, size, net.dim, net.weights_sha256)
    return write_checked(model, meta, identity_doc(name), lambda data: _parity(data, net, size),
                         tol, path, f"identity ONNX ({name}, {size} px, zoom {zoom})", verbose)


def _parity(model_bytes: bytes, net: torch.nn.Module, size: int) -> float:
    """ORT vs PyTorch on batches of 1 and 3 (checks the dynamic axis too)."""
    gen = torch.Generator().manual_seed(0)
    batches = ((torch.rand(n, 3, size, size, generator=gen) * 2 - 1,) for n in (1, 3))
    return ort_parity(model_bytes, net, batches, ["crops"], "embeddings")


def main(argv: list[str] | None = None) -> None:
    """``python -m g2g.export.identity_onnx NAME --size S --zoom Z``: export an identity network into the user cache,
    where ``g2g eval --eval-net NAME`` finds it (dlib's needs no export: eval builds it without torch)."""
    import argparse

    from g2g.faces.embedder import identity_cache_path

    parser = argparse.ArgumentParser(prog="python -m g2g.export.identity_onnx", description=main.__doc__.splitlines()[0])
    parser.add_argument("name", help="identity network: facenet-vggface2, facenet-casia-webface or dlib")
    parser.add_argument("--size", type=int, default=128, help="side of the aligned crops it reads, px")
    parser.add_argument("--zoom", type=float, default=DEFAULT_ZOOM, help="their alignment zoom")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $XDG_CACHE_HOME/g2g")
    args = parser.parse_args(argv)

    path = identity_cache_path(args.name, args.zoom, args.size, args.cache_dir)
    print(export_to_cache(path, lambda tmp: export_identity(tmp, args.name, args.zoom, args.size)))


if __name__ == "__main__":
    main()
