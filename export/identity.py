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

import numpy as np
import torch

from g2g.export.checked import write_checked
from g2g.preprocess import DEFAULT_ZOOM

OPSET = 18  # GridSample needs >= 16
PARITY_TOL = 1e-4


def export_identity(path: Path, name: str = "dlib", zoom: float = DEFAULT_ZOOM, size: int = 128,
                    tol: float = PARITY_TOL, verbose: bool = True) -> Path:
    """Write the identity ONNX model for crops of ``size`` px aligned at ``zoom``; returns ``path``."""
    import onnx

    from g2g.train.identity import load_identity_net

    net = load_identity_net(name, zoom)
    conv = net.convention()
    example = torch.rand(2, 3, size, size) * 2 - 1  # (N, 3, S, S)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "identity.onnx"
        torch.onnx.export(
            net, (example,), str(raw), input_names=["crops"], output_names=["embeddings"],
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={"crops": {0: torch.export.Dim("N", min=1, max=4096)}},
        )
        model = onnx.load(str(raw))
    meta = {
        "g2g_model": "identity",
        "identity_net": name,
        "zoom": repr(float(zoom)),
        "input_size": str(size),
        "input": "crops: float32 (N, 3, S, S) RGB in [-1, 1] = pixel / 127.5 - 1, aligned with AlignConfig(size, zoom)",
        "output": f"embeddings: float32 (N, {net.dim})",
        "embedding_dim": str(net.dim),
        "distance": conv.metric,
        "threshold": repr(conv.threshold),
        "also_reported": "cosine",
        "weights_sha256": net.weights_sha256,
    }
    return write_checked(model, meta, f"g2g identity network ({name}); {conv.note}", lambda data: _parity(data, net, size),
                         tol, path, f"identity ONNX ({name}, {size} px, zoom {zoom})", verbose)


def _parity(model_bytes: bytes, net: torch.nn.Module, size: int) -> float:
    """Max abs difference of ORT (CPU) vs PyTorch on batches of 1 and 3 (checks the dynamic axis too)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in (1, 3):
        x = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
        with torch.no_grad():
            ref = net(x).numpy()
        out = sess.run(["embeddings"], {"crops": x.numpy()})[0]
        if out.shape != ref.shape:
            raise RuntimeError(f"ONNX output shape {out.shape} != PyTorch {ref.shape}")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst
