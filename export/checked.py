"""Write an exported ONNX graph only once it is valid and agrees with PyTorch (identity and realism networks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from g2g.fsutil import atomic_write_bytes


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
