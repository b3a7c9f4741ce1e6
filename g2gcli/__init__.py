"""g2g: dataset-scale face editing by cross training.

The folders of the repository map under this namespace (see pyproject.toml):
``g2gcli/`` is ``g2g`` (CLI, alignment, ONNX Runtime inference; ``g2gcli/eval/`` is
``g2g.eval``), ``train/`` is ``g2g.train`` (PyTorch models, losses, trainer),
``export/`` is ``g2g.export``.
Nothing heavy is imported here, so ``g2g --version`` answers at once: the Python API
(``from g2g import load_model, mix_images``, g2g/api.py) is imported on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "mix_images"]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "mix_images"):
        from g2g import api

        return getattr(api, name)
    raise AttributeError(f"module 'g2g' has no attribute {name!r}")
