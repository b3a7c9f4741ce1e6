"""Checkpoints: one file holding the config and every state, written atomically.

A checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(weights_only=True)``; the config rides inside it (nanoGPT style), so
export and sampling rebuild the model from the file alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from g2g.config import ModelConfig, TrainConfig, from_dict
from g2g.io.files import atomic_write_bytes
from g2g.errors import G2GError


class CheckpointError(G2GError):
    """The file is not a g2g checkpoint (or is damaged)."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (must contain 'config' and 'step') and write it atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():  # a run folder: take its latest checkpoint
        path = latest_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # truncated, not a torch file, or a pickle with foreign objects
        raise CheckpointError(f"{path} is not a readable g2g checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or "config" not in state or "generator" not in state:
        raise CheckpointError(f"{path} is not a g2g checkpoint (no config/generator inside)")
    return state


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of a run folder (``last.pt``, else the highest ``step_*.pt``)."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists():
        return last
    steps = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    if not steps:
        raise CheckpointError(f"no checkpoint in {run_dir}/checkpoints")
    return steps[-1]


def train_config_of(state: dict[str, Any]) -> TrainConfig:
    return from_dict(TrainConfig, state["config"])


def model_config_of(state: dict[str, Any]) -> ModelConfig:
    return train_config_of(state).model


def load_generator(path: Path, ema: bool = True, map_location: str = "cpu") -> tuple[torch.nn.Module, ModelConfig, dict[str, Any]]:
    """Rebuild the generator of a checkpoint (its EMA copy by default), in eval mode."""
    from g2g.train.recipes import recipe_for

    state = load_checkpoint(path, map_location)
    cfg = model_config_of(state)
    gen = recipe_for(cfg).build(cfg)
    key = "generator_ema" if ema and "generator_ema" in state else "generator"
    gen.load_state_dict(state[key])
    return gen.eval(), cfg, state
