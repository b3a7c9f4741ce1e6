"""Write an exported ONNX graph only once it is valid and agrees with PyTorch (the identity, realism and LPIPS
networks), and keep such an export in the user cache."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from g2g.io.files import atomic_write_bytes


def write_checked(model: Any, meta: dict[str, str], doc: str, parity: Callable[[bytes], float], tol: float,
                  path: Path, label: str, verbose: bool) -> Path:
    """Set ``model``'s metadata and doc string, run ``onnx.checker``, compare ONNX Runtime with PyTorch
    (``parity``: the serialised model -> max abs difference) and write it atomically to ``path``; a difference
    beyond ``tol`` writes nothing."""
    import onnx

    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    diff = parity(data)
    if verbose:
        print(f"{label}: max |ORT - PyTorch| = {diff:.2e}")
    if not diff < tol:
        raise RuntimeError(f"ONNX Runtime and PyTorch disagree by {diff:.2e} (> {tol:.0e}); not writing {path}")
    atomic_write_bytes(Path(path), data)
    return Path(path)


def ort_parity(model_bytes: bytes, net: Any, batches: Iterable[tuple[Any, ...]], inputs: list[str], output: str
               ) -> float:
    """Max abs difference of ONNX Runtime (CPU) and PyTorch's ``net(*batch)`` over ``batches`` (tuples of tensors
    fed as ``inputs``); a shape that differs is an error."""
    import numpy as np
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            ref = net(*batch).numpy()
        out = sess.run([output], {name: t.numpy() for name, t in zip(inputs, batch)})[0]
        if out.shape != ref.shape:
            raise RuntimeError(f"ONNX output shape {out.shape} != PyTorch {ref.shape}")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def export_to_cache(path: Path, export: Callable[[Path], Path]) -> Path:
    """``path`` in the user cache when it is intact, else ``export(tmp_file)`` written there with its sidecar."""
    from g2g.io.cache import cached_file

    def build() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return export(Path(tmp) / Path(path).name).read_bytes()

    return cached_file(Path(path), build)
