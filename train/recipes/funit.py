"""The seed's FUNIT recipe (``identity_encoder="funit"``): E_A reads the whole face, E_B a pooled K-shot code.

One step on a batch of pairs (a, b) of different people (K images each for the class code):

    mixed_ab = G(E_A(a), E_B(b))             b's identity in a's pose, expression, lighting
    mixed_ba = G(E_A(b), E_B(a))
    a'       = G(E_A(mixed_ab), E_B(mixed_ba))   cycle back to a
    b'       = G(E_A(mixed_ba), E_B(mixed_ab))
    ŝ_a      = G(E_A(a), E_B(a)), ŝ_b likewise   self-reconstruction

    L_gen = α·L_vgg + γ·L_cyc + s·L_self + λ_g·L_adv + δ(step)·L_id
      L_cyc  = |a'-a|₁ + |b'-b|₁                           (mean absolute error, each)
      L_self = |ŝ_a-a|₁ + |ŝ_b-b|₁                          (TrainConfig.self_recon; anchors the decoder early,
                                                             when the cycle alone is a moving target)
      L_vgg  = P(a',a) + P(b',b) + P(ŝ_a,a) + P(ŝ_b,b)      (P: frozen perceptual distance, batch mean)
      L_adv  = GAN generator loss on D(mixed_ab), D(mixed_ba)  (hinge by default; see losses.py)
      L_id   = ‖φ(mixed_ab) - φ̄(b)‖ + ‖φ(mixed_ba) - φ̄(a)‖   (φ: frozen dlib embedding, φ̄: mean over the K images)
    L_dis = ζ·(L_real + L_fake)/2 on a, b (real) and the detached mixed images (fake)

With ``erase_landmarks`` the image that supplies the rest (a for mixed_ab and a',
mixed_ab for a', ...) reaches E_A with its eyes, nose and mouth greyed out.
The networks are g2g.train.model, the batches g2g.train.dataset, the export g2g.export.funit.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from g2g.config import ModelConfig, TrainConfig
from g2g.train import losses as L
from g2g.train.dataset import PairBatches, erase_landmarks, make_batch
from g2g.train.model import Generator
from g2g.train.recipes.base import Batch, DataPlan, Losses, Recipe, RecipeData
from g2g.train.run_files import write_sample_sheet

if TYPE_CHECKING:
    from g2g.bundle import Bundle
    from g2g.export.parts import ExportParts
    from g2g.train.step import CrossTrainer


class CrossForward(nn.Module):
    """The generator side of one cross-training step, as one module so that DDP and torch.compile see it whole."""

    def __init__(self, gen: Generator, erase: bool):
        super().__init__()
        self.gen, self.erase = gen, erase

    def _rest(self, x: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
        return erase_landmarks(x, lm) if self.erase else x

    def forward(self, a_k: torch.Tensor, b_k: torch.Tensor, lm_a: torch.Tensor, lm_b: torch.Tensor) -> dict[str, torch.Tensor]:
        g = self.gen
        a, b = a_k[:, 0], b_k[:, 0]  # (B,3,S,S) each; a_k, b_k: (B,K,3,S,S)
        lm = torch.cat([lm_a, lm_b])  # (2B,5,2)
        content = g.content_encoder(self._rest(torch.cat([a, b]), lm))  # (2B,C,h,w): [c_a; c_b]
        codes = g.encode_class(torch.cat([a_k, b_k]))  # (2B,code): [z_a; z_b], K-shot means
        c_a, c_b = content.chunk(2)
        z_a, z_b = codes.chunk(2)
        out = g.decoder(torch.cat([c_a, c_b, c_a, c_b]), torch.cat([z_b, z_a, z_a, z_b]))  # (4B,3,S,S)
        mixed, self_rec = out[: 2 * len(a)], out[2 * len(a):]  # [mixed_ab; mixed_ba], [ŝ_a; ŝ_b]
        c2 = g.content_encoder(self._rest(mixed, lm))  # rest of mixed_ab is a's, of mixed_ba is b's
        z2 = g.encode_class(mixed)  # [identity B (from mixed_ab); identity A (from mixed_ba)]
        z2_b, z2_a = z2.chunk(2)
        recon = g.decoder(c2, torch.cat([z2_a, z2_b]))  # [a'; b']
        return {"mixed": mixed, "self": self_rec, "recon": recon}


def funit_losses(trainer: CrossTrainer, batch: Batch, step: int) -> Losses:
    """L_gen of one batch of pairs (see the module docstring), its terms, and D's fakes and reals."""
    cfg = trainer.cfg
    a_k, b_k = batch["a_k"], batch["b_k"]
    x = torch.cat([a_k[:, 0], b_k[:, 0]])  # originals [a; b] (2B,3,S,S)
    n = len(a_k)
    with trainer.autocast():
        out = trainer.cross(a_k, b_k, batch["lm_a"], batch["lm_b"])
    mixed, self_rec, recon = (out[k].float() for k in ("mixed", "self", "recon"))
    terms: dict[str, torch.Tensor] = {
        "cyc": L.l1(recon[:n], x[:n]) + L.l1(recon[n:], x[n:]),
        "self": L.l1(self_rec[:n], x[:n]) + L.l1(self_rec[n:], x[n:]),
    }
    total = cfg.gamma_cyc * terms["cyc"] + cfg.self_recon * terms["self"]
    total = trainer.shared_terms(terms, total, torch.cat([recon, self_rec]), x, n, mixed)  # [a'; b'; ŝ_a; ŝ_b] vs [a; b]
    delta = L.id_weight(step, cfg)
    if trainer.identity is not None:
        k = a_k.shape[1]
        with torch.no_grad(), trainer.autocast():
            target = trainer.identity(torch.cat([a_k, b_k]).flatten(0, 1)).float().view(2 * n, k, -1).mean(1)
        with contextlib.nullcontext() if delta > 0 else torch.no_grad(), trainer.autocast():
            emb = trainer.identity(mixed).float()  # [φ(mixed_ab) ~ identity B; φ(mixed_ba) ~ identity A]
        terms["id"] = L.identity_distance(emb[:n], target[n:]) + L.identity_distance(emb[n:], target[:n])
    return trainer.closed(terms, total, delta, mixed, x)


class FunitRecipe(Recipe):
    """FUNIT's generator and cross-training step on pairs of K-image groups."""

    name = "funit"
    generator = Generator

    def warnings(self, cfg: TrainConfig, device: torch.device) -> list[str]:
        if device.type == "cpu" and cfg.model.content_dim >= 64:
            return ["a FUNIT-size model on a CPU: each step takes minutes (the progress line gives the ETA after a few steps); "
                    "the default preset, appearance, is the recipe sized for a CPU"]
        return []

    def wants_discriminator(self, cfg: TrainConfig) -> bool:
        return True

    def embeds_identity(self, model: ModelConfig) -> bool:
        return False

    def forward_module(self, gen: nn.Module, cfg: TrainConfig) -> nn.Module:
        return CrossForward(gen, cfg.erase_landmarks)

    def data(self, plan: DataPlan) -> RecipeData:
        cfg, size = plan.cfg, plan.cfg.model.image_size
        val_groups = [(plan.by_id[a][: cfg.k_shot], plan.by_id[b][: cfg.k_shot]) for a, b in plan.val_pairs]
        train = PairBatches(plan.data, plan.by_id, plan.train_ids, cfg.batch_size, cfg.k_shot, size, cfg.seed,
                            plan.rank, cfg.flip, cfg.steps)
        return RecipeData(train, make_batch(plan.data, val_groups, size))

    def generator_losses(self, trainer: CrossTrainer, batch: Batch, step: int) -> Losses:
        return funit_losses(trainer, batch, step)

    def sample(self, trainer: CrossTrainer, batch: Batch) -> Batch:
        with trainer.autocast():
            out = CrossForward(trainer.ema, trainer.cfg.erase_landmarks)(batch["a_k"], batch["b_k"], batch["lm_a"],
                                                                         batch["lm_b"])
        x = torch.cat([batch["a_k"][:, 0], batch["b_k"][:, 0]])
        return {"original": x.cpu(), "mixed": out["mixed"].float().cpu(), "recon": out["recon"].float().cpu()}

    def write_sheet(self, path: Path, samples: Batch, val_pairs: list[tuple[str, str]], model: ModelConfig
                    ) -> tuple[Any, dict[str, float]]:
        image = write_sample_sheet(path, samples, val_pairs)
        n, recon, original = len(val_pairs), samples["recon"], samples["original"]
        return image, {"val_cyc": float(L.l1(recon[:n], original[:n]) + L.l1(recon[n:], original[n:]))}

    def bundle_outputs(self, gen: nn.Module, bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
        s = bundle.model.image_size
        x = np.random.default_rng(0).uniform(-1, 1, (2, 3, s, s)).astype(np.float32)
        with torch.no_grad():
            ref = gen.decoder(gen.content_encoder(torch.from_numpy(x)),
                              gen.class_encoder(torch.from_numpy(x[::-1].copy()))).numpy()
        return bundle.decode(bundle.encode_content(x), bundle.encode_class(x[::-1, None].copy())), ref

    def export_parts(self, gen: nn.Module, faces: np.ndarray, lm: np.ndarray | None, model: ModelConfig
                     ) -> ExportParts:
        from g2g.export.funit import funit_parts

        return funit_parts(gen, faces)
