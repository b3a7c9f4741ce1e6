"""The masked-rest recipe (``identity_encoder`` appearance, pooled or dlib): E_A never sees the face interior.

The networks are g2g.train.appearance_model, the batches g2g.train.appearance_data,
the step g2g.train.appearance_step, the export g2g.export.appearance; the inputs
themselves are g2g.faces.masked_rest (shared with ``g2g mix``). The identity
encoders differ in what E_B reads (:data:`VARIANTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from g2g.config import ModelConfig, TrainConfig
from g2g.faces.masked_rest import CONTENT_CHANNELS
from g2g.methods.compose import base_fixes
from g2g.train.appearance_data import AppearanceBatches, embed_bank, load_bank
from g2g.train.appearance_model import AppearanceGenerator, image_class_encoder
from g2g.train.appearance_step import appearance_losses, appearance_sample
from g2g.train.recipes.base import Batch, DataPlan, Losses, Recipe, RecipeData
from g2g.train.run_files import write_appearance_sheet

if TYPE_CHECKING:
    from g2g.bundle import Bundle
    from g2g.export.parts import ExportParts
    from g2g.train.step import CrossTrainer

VAL_PHOTOS = 4  # photos per held-out person in the validation bank


@dataclass(frozen=True)
class Variant:
    """What one identity encoder of the recipe reads."""

    warped: bool  # identity photos warped onto the target geometry, and the decoder draws over their paste
    embedded: bool  # E_B reads the frozen dlib embeddings of the photos (cached in training; exported in front)
    base: str  # the sample sheet's name of the decoder's base


VARIANTS = {
    "appearance": Variant(warped=True, embedded=False, base="Warped paste"),
    "pooled": Variant(warped=False, embedded=False, base="Masked rest"),
    "dlib": Variant(warped=False, embedded=True, base="Masked rest"),
}


def variant(model: ModelConfig) -> Variant:
    """The variant of ``model``'s identity encoder."""
    return VARIANTS[model.identity_encoder]


class AppearanceRecipe(Recipe):
    """Masked rest + identity photos -> the face drawn into the rest; reconstruction, mix and reassembly pairs."""

    name = "appearance"
    generator = AppearanceGenerator

    def wants_discriminator(self, cfg: TrainConfig) -> bool:
        # at λ_g = 0 no discriminator is trained (and neither --resume nor --init-from can turn λ_g on later), so
        # none is built: FUNIT's full-size one is 54 M parameters in every checkpoint
        return cfg.lambda_adv != 0

    def embeds_identity(self, model: ModelConfig) -> bool:
        return variant(model).embedded

    def forward_module(self, gen: nn.Module, cfg: TrainConfig) -> nn.Module:
        return gen

    def data(self, plan: DataPlan) -> RecipeData:
        cfg, size, warp = plan.cfg, plan.cfg.model.image_size, variant(plan.cfg.model).warped
        cache = plan.run / "cache" / "landmarks68.npz"
        bank = load_bank(plan.data, plan.train_ids, size, cfg.model.zoom, cache)
        val_people = plan.val_ids if len(plan.val_ids) >= 2 else plan.val_ids + plan.train_ids[:2]
        val_bank = load_bank(plan.data, val_people, size, cfg.model.zoom, cache, max_per_person=VAL_PHOTOS)
        if self.embeds_identity(cfg.model):  # frozen: each crop's embedding once, cached in the run
            for b in (bank, val_bank):
                b.emb = embed_bank(b, plan.identity, plan.run / "cache" / "dlib_embeddings.npz")
        fixes = base_fixes(cfg.model.base_fixes) if warp else None  # a refiner's base: the default composition
        val = AppearanceBatches(val_bank, 2 * len(plan.val_pairs), cfg.seed, flip=False, jitter=False, warp=warp,
                                fixes=fixes)[0]
        train = AppearanceBatches(bank, cfg.batch_size, cfg.seed, plan.rank, cfg.flip, cfg.steps, warp=warp,
                                  fixes=fixes)
        return RecipeData(train, val)

    def generator_losses(self, trainer: CrossTrainer, batch: Batch, step: int) -> Losses:
        v = variant(trainer.cfg.model)
        return appearance_losses(trainer, batch, step, warped=v.warped, embedded=v.embedded)

    def sample(self, trainer: CrossTrainer, batch: Batch) -> Batch:
        with trainer.autocast():
            return appearance_sample(trainer.ema, batch)

    def write_sheet(self, path: Path, samples: Batch, val_pairs: list[tuple[str, str]], model: ModelConfig
                    ) -> tuple[Any, dict[str, float]]:
        label = "Default method" if base_fixes(model.base_fixes) and variant(model).warped else variant(model).base
        image = write_appearance_sheet(path, samples, label)
        return image, {"val_rec": float((samples["recon"] - samples["identity"]).abs().mean())}

    def bundle_outputs(self, gen: nn.Module, bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        s = bundle.model.image_size
        x = rng.uniform(-1, 1, (2, 3, s, s)).astype(np.float32)
        content = rng.uniform(-1, 1, (2, CONTENT_CHANNELS, s, s)).astype(np.float32)
        ids = rng.uniform(-1, 1, (2, 2, 3, s, s)).astype(np.float32)
        c, i, b = (torch.from_numpy(a) for a in (content, ids, x))
        with torch.no_grad():
            ref = gen.decoder(gen.content_encoder(c), image_class_encoder(gen)(i), b).numpy()
        return bundle.generate(content, ids, x), ref

    def export_parts(self, gen: nn.Module, faces: np.ndarray, lm: np.ndarray | None, model: ModelConfig
                     ) -> ExportParts:
        from g2g.export.appearance import appearance_parts

        return appearance_parts(gen, faces, lm, model.zoom, variant(model).warped)
