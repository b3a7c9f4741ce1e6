"""What every training recipe provides: the generator, its batches, its step, its sample sheet and its export.

The trainer (``g2g.train.trainer``, ``g2g.train.step``), ``--init-from``
(``g2g.train.init_weights``) and the exporter (``g2g.export.onnx_export``) ask a
:class:`Recipe` for each of these and never look at the recipe's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from g2g.config import ModelConfig, TrainConfig

if TYPE_CHECKING:
    from g2g.bundle import Bundle
    from g2g.export.parts import ExportParts
    from g2g.train.dataset import Item
    from g2g.train.step import CrossTrainer

Batch = dict[str, torch.Tensor]
Losses = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]  # L_gen, its terms, {"mixed", "real", "delta"}


@dataclass(frozen=True)
class DataPlan:
    """What the trainer knows when it asks a recipe for its batches."""

    data: Path  # the g2g prepare folder
    run: Path  # the run folder (caches go to RUN/cache)
    cfg: TrainConfig
    by_id: dict[str, list[Item]]  # the usable crops of each identity
    train_ids: list[str]
    val_ids: list[str]
    val_pairs: list[tuple[str, str]]  # the sample sheet's fixed (identity A, identity B) pairs
    rank: int  # this process's rank: its own stream of batches
    identity: nn.Module | None  # the frozen identity network, where the trainer loaded it


@dataclass(frozen=True)
class RecipeData:
    """A recipe's training batches (item t: the whole batch of step t) and its fixed validation batch."""

    train: torch.utils.data.Dataset
    val_batch: Batch


class Recipe(ABC):
    """One way of training, sampling and exporting a generator; ``name`` is its key in ``RECIPES``."""

    name: str
    generator: type[nn.Module]  # built from a ModelConfig

    def build(self, model: ModelConfig) -> nn.Module:
        """The untrained generator of ``model`` (checkpoints and bundles hold its state_dict)."""
        return self.generator(model)

    def warnings(self, cfg: TrainConfig, device: torch.device) -> list[str]:
        """Lines the user should read before a run of ``cfg`` starts on ``device``."""
        return []

    @abstractmethod
    def wants_discriminator(self, cfg: TrainConfig) -> bool:
        """Whether a run of ``cfg`` builds, trains and saves the patch discriminator."""

    @abstractmethod
    def embeds_identity(self, model: ModelConfig) -> bool:
        """Whether E_B reads the frozen identity network's embeddings (so the trainer loads it without L_id)."""

    @abstractmethod
    def forward_module(self, gen: nn.Module, cfg: TrainConfig) -> nn.Module:
        """The generator side of a step as one module (what DDP and torch.compile wrap)."""

    @abstractmethod
    def data(self, plan: DataPlan) -> RecipeData:
        """The training batches and the fixed validation batch of a run."""

    @abstractmethod
    def generator_losses(self, trainer: CrossTrainer, batch: Batch, step: int) -> Losses:
        """(L_gen, its terms by name, {"mixed": D's fakes, "real": D's reals, "delta": δ}) of one batch."""

    @abstractmethod
    def sample(self, trainer: CrossTrainer, batch: Batch) -> Batch:
        """The EMA generator's sample sheet rows on the validation batch, each on the CPU."""

    @abstractmethod
    def write_sheet(self, path: Path, samples: Batch, val_pairs: list[tuple[str, str]], model: ModelConfig
                    ) -> tuple[Any, dict[str, float]]:
        """Write the sample sheet of ``samples`` to ``path``: (the sheet as PIL image, its validation numbers)."""

    @abstractmethod
    def bundle_outputs(self, gen: nn.Module, bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
        """(ONNX Runtime, PyTorch) outputs of an opened bundle and ``gen`` on the same random input."""

    @abstractmethod
    def export_parts(self, gen: nn.Module, faces: np.ndarray, lm: np.ndarray | None, model: ModelConfig
                     ) -> ExportParts:
        """The bundle parts of ``gen``, checked on ``faces`` (n, 3, S, S) and their 68 landmarks ``lm`` (or None)."""
