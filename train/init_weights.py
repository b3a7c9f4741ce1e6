"""Start a new run from a trained generator: ``g2g train --init-from SOURCE``.

SOURCE is a checkpoint (a ``.pt`` file or a run folder: its EMA generator) or an
exported ONNX bundle (a folder with ``g2g_model.json``, e.g. the model that ships
with g2g). Only the generator's weights are taken; the discriminator, the
optimisers and the step count start afresh, so this is fine-tuning, not
``--resume``. The architecture comes from SOURCE.

An ONNX bundle's initializers keep the PyTorch parameter names of the module that
was exported (``gen.content_encoder``, ``gen.class_encoder`` and ``gen.decoder``,
some inside a wrapper: see ONNX_PREFIXES), so each part maps back by name. fp16
bundles give fp16-rounded weights. The rebuilt generator (the bundle's recipe,
g2g.train.recipes) is checked against ONNX Runtime on one random input, so a
bundle whose graph does not match the names fails here rather than training from
wrong weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from g2g.bundle import PARTS
from g2g.config import ModelConfig
from g2g.errors import G2GError
from g2g.export.parts import BOUNDS_FP16
from g2g.train.recipes import recipe_for

if TYPE_CHECKING:
    from g2g.bundle import Bundle

ONNX_PREFIXES = ("", "encoder.", "decoder.")  # the export wraps some parts (funit's class encoder as ``encoder``,
# the masked-rest decoder as ``decoder``: export/funit.py, export/appearance.py)
PARITY = BOUNDS_FP16["mix"]  # the export's own bound for a whole mix of an fp16 bundle (outputs in [-1, 1])


class InitError(G2GError):
    """SOURCE cannot initialise a generator (one-line message)."""


@dataclass(frozen=True)
class InitWeights:
    state: dict[str, torch.Tensor]  # the generator's state_dict() (funit or appearance)
    model: ModelConfig
    source: str  # what the weights came from, for config.json
    step: int | None  # training steps behind them, where recorded


def _from_bundle(folder: Path) -> InitWeights:
    import onnx
    from onnx import numpy_helper

    from g2g.bundle import BundleError, open_bundle

    try:
        bundle = open_bundle(folder, device="cpu")  # checks SHA256SUMS and the metadata
    except BundleError as e:
        raise InitError(str(e)) from None
    gen = recipe_for(bundle.model).build(bundle.model).eval()
    state: dict[str, torch.Tensor] = {}
    for part in PARTS:
        inits = {i.name: i for i in onnx.load(str(folder / f"{part}.onnx")).graph.initializer}
        for key, ref in gen.state_dict().items():
            if not key.startswith(part + "."):
                continue
            rel = key[len(part) + 1:]
            found = next((inits[p + rel] for p in ONNX_PREFIXES if p + rel in inits), None)
            if found is None:
                raise InitError(f"{folder}/{part}.onnx has no weight {rel!r}: not a g2g export of this architecture")
            arr = numpy_helper.to_array(found).astype(np.float32)
            if arr.shape != tuple(ref.shape):
                raise InitError(f"{folder}/{part}.onnx: {rel} has shape {arr.shape}, the model wants {tuple(ref.shape)}")
            state[key] = torch.from_numpy(arr.copy())
    gen.load_state_dict(state)
    _check_against_bundle(gen, bundle)
    return InitWeights(state, bundle.model, f"bundle {folder.resolve()}", bundle.meta.get("step"))


def _check_against_bundle(gen: torch.nn.Module, bundle: Bundle) -> None:
    """The rebuilt generator must mix like the bundle does on ONNX Runtime."""
    got, ref = recipe_for(bundle.model).bundle_outputs(gen, bundle)
    err, bound = float(np.abs(got - ref).max()), PARITY * max(1.0, float(np.abs(ref).max()))
    if not err <= bound:
        raise InitError(f"{bundle.root}: weights read back from the ONNX files do not reproduce the bundle "
                        f"(max |difference| {err:.3g} > {bound:.3g})")


def _from_checkpoint(path: Path) -> InitWeights:
    from g2g.train.checkpoint import CheckpointError, load_generator

    try:
        gen, model, state = load_generator(path, ema=True)
    except CheckpointError as e:
        raise InitError(str(e)) from None
    return InitWeights(gen.state_dict(), model, f"checkpoint {Path(path).resolve()}", int(state.get("step", 0)))


def load_init_weights(source: Path) -> InitWeights:
    """Generator weights and architecture from a checkpoint, a run folder or an ONNX bundle."""
    source = Path(source)
    if not source.exists():
        raise InitError(f"--init-from {source}: no such file or folder")
    if source.is_dir() and (source / "g2g_model.json").exists():
        return _from_bundle(source)
    return _from_checkpoint(source)
