"""g2g: dataset-scale face editing by cross training.

The folders of the repository map under this namespace (see pyproject.toml):
``g2gcli/`` is ``g2g`` (CLI, alignment, ONNX Runtime inference; ``g2gcli/eval/`` is
``g2g.eval``), ``train/`` is ``g2g.train`` (PyTorch models, losses, trainer),
``export/`` is ``g2g.export``.
Nothing heavy is imported here, so ``g2g --version`` answers at once.
"""

__version__ = "0.1.0"
