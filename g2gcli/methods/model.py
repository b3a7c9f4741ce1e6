"""``model``: open a bundle (``--model``, or the one that ships) and run the mixer of the recipe that trained it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_model(model_dir: Path | None, device: str = "auto", batch_size: int = 16, keep_mouth: bool = False) -> Any:
    from g2g.bundle import open_bundle
    from g2g.methods import MODEL_MIXERS, load

    bundle = open_bundle(model_dir, device=device, batch_size=batch_size)
    return load(MODEL_MIXERS[bundle.model.recipe])(bundle, keep_mouth=keep_mouth)
