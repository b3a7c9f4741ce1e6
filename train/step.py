"""One training step of ``g2g train``: networks, optimisers, the shared loss terms, the D step, EMA.

The loop is g2g.train.trainer; what differs between recipes (the generator, its
losses, its samples) is the run's recipe (g2g.train.recipes). Order per step: G
forward and losses (D frozen) -> G backward/step -> D forward on real and
detached fakes -> D backward/step; EMA of G after each G step. Batches are a pure
function of (seed, rank, step), so ``resume`` continues exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, fields
from typing import Any

import torch
import torch.nn as nn

from g2g.config import DISCRIMINATORS, OPTIMIZERS, PERCEPTUAL_NETS, TrainConfig
from g2g.errors import check_options
from g2g.train import TrainError, losses as L
from g2g.train.projected_disc import build_discriminator
from g2g.train.recipes import recipe_for

LOSS_TERMS = ("vgg", "cyc", "self", "adv", "id", "gen", "d_real", "d_fake", "dis")


# --- pieces ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    ep, mp = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ep, [p.detach() for p in mp], 1.0 - beta)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def ema_beta(step: int, beta: float) -> float:
    """EMA decay with warm-up (1+t)/(10+t), so that samples of a short run are not the initial weights."""
    return min(beta, (1.0 + step) / (10.0 + step))


def make_optimizer(params, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":  # FUNIT's choice
        return torch.optim.RMSprop(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    raise TrainError(f"unknown optimizer {cfg.optimizer!r}; choose rmsprop or adam")


def load_identity(zoom: float, device: torch.device) -> nn.Module:
    """The frozen dlib identity network for crops aligned at ``zoom`` (tests may replace this function)."""
    from g2g.train.identity_net import load_identity_net

    return load_identity_net("dlib", zoom=zoom).to(device)


def validate(cfg: TrainConfig) -> None:
    """Reject settings that would fail deep inside a run, with one line each."""
    checks = [
        (cfg.gan_loss in L.GAN_LOSSES, f"--gan-loss must be one of {', '.join(L.GAN_LOSSES)}"),
        (cfg.id_schedule in L.ID_SCHEDULES, f"--id-schedule must be one of {', '.join(L.ID_SCHEDULES)}"),
        (cfg.perceptual in PERCEPTUAL_NETS, f"--perceptual must be one of {', '.join(PERCEPTUAL_NETS)}"),
        (cfg.discriminator in DISCRIMINATORS, f"--discriminator must be one of {', '.join(DISCRIMINATORS)}"),
        (cfg.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (cfg.steps >= 1, "--steps must be >= 1"),
        (cfg.max_minutes >= 0, "--max-minutes must be >= 0 (0: no limit)"),
        (cfg.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.k_shot >= 1, "--k-shot must be >= 1"),
        (cfg.model.image_size % 2 ** cfg.model.content_downs == 0,
         f"--size must be a multiple of {2 ** cfg.model.content_downs} for this model"),
        (16 <= cfg.model.image_size <= 1024, "--size must be between 16 and 1024"),
        (0 <= 6 * cfg.model.residual_sigma < cfg.model.image_size,
         "--residual-sigma must be >= 0 (0: the whole residual) and under a sixth of --size"),
        (min(cfg.checkpoint_every, cfg.sample_every, cfg.log_every) >= 1, "--checkpoint-every/--sample-every must be >= 1"),
        (all(w >= 0 for w in (cfg.alpha_vgg, cfg.gamma_cyc, cfg.lambda_adv, cfg.delta_id, cfg.zeta_dis, cfg.self_recon,
                              cfg.id_start)), "loss weights must be >= 0"),
        (cfg.lr_gen >= 0 and cfg.lr_dis >= 0, f"--lr-gen and --lr-dis must be >= 0, got {cfg.lr_gen:g} and {cfg.lr_dis:g}"),
    ]
    bad = [f"--{f.name.replace('_', '-')} {getattr(cfg, f.name)}" for f in fields(cfg)  # the options' names
           if isinstance(getattr(cfg, f.name), float) and not math.isfinite(getattr(cfg, f.name))]
    checks.insert(0, (not bad, f"every number must be finite: {', '.join(bad)}"))
    check_options(checks, TrainError)


def _refuse_non_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], step: int) -> None:
    """Stop before an update that would write NaN or inf into the weights: the last checkpoint stays the last good
    state, and the message names the terms that went wrong."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    bad = [k for k, v in terms.items() if not bool(torch.isfinite(v.detach()).all())]
    raise TrainError(f"step {step + 1}: the loss became non-finite ({', '.join(bad) or 'total'}); stopped before the "
                     "update, so no NaN weights were saved: the last checkpoint is the last good state (lower --lr "
                     "or the loss weights, then train again or --resume)")


# --- the trainer -----------------------------------------------------------------------------------------------------


class CrossTrainer:
    """Networks, optimisers and one training step; ``train()`` drives it, ``bench/`` times it."""

    def __init__(self, cfg: TrainConfig, device: torch.device, ddp: bool = False):
        self.cfg, self.device, self.recipe = cfg, device, recipe_for(cfg.model)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
        self.gen = self.recipe.build(cfg.model).to(device)
        self.perceptual = None
        if cfg.alpha_vgg > 0:
            from g2g.train.perceptual import load_perceptual

            self.perceptual = load_perceptual(cfg.perceptual, device)
        wants_dis = self.recipe.wants_discriminator(cfg)
        self.dis = build_discriminator(cfg.discriminator, cfg.model, device, self.perceptual) if wants_dis else None
        self.ema = copy.deepcopy(self.gen).requires_grad_(False)
        self.opt_g = make_optimizer(self.gen.parameters(), cfg, cfg.lr_gen)
        self.opt_d = make_optimizer(self.dis.parameters(), cfg, cfg.lr_dis) if self.dis is not None else None
        self.cross: nn.Module = self.recipe.forward_module(self.gen, cfg)
        self.dis_step = self.dis
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.cross = DDP(self.cross, device_ids=ids)
            self.dis_step = DDP(self.dis, device_ids=ids) if self.dis is not None else None
        if cfg.compile:
            self.cross = torch.compile(self.cross)
        cuda = device.type == "cuda"
        if cuda:  # every step has the same shapes: let cuDNN pick its fastest kernels once; TF32 outside autocast
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if (cuda and cfg.amp) else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.identity = None  # the frozen dlib net: for L_id, and the dlib encoder's embeddings of network outputs
        if cfg.delta_id > 0 or cfg.id_start > 0 or self.recipe.embeds_identity(cfg.model):
            self.identity = load_identity(cfg.model.zoom, device)
        self.timing: dict[str, float] = {}

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _lap(self, name: str, t0: float) -> float:
        """Accumulate wall time of a phase (synchronised on CUDA) into self.timing."""
        self._sync()
        t = time.perf_counter()
        self.timing[name] = self.timing.get(name, 0.0) + t - t0
        return t

    def perceptual_sum(self, outs: torch.Tensor, x: torch.Tensor, group: int) -> torch.Tensor:
        """Perceptual distance of ``outs`` (k·len(x) images) to ``x`` repeated k times: the sum over groups of
        ``group`` consecutive images of each group's batch mean. The originals' features are computed once, no graph."""
        k = len(outs) // len(x)
        with self.autocast():
            with torch.no_grad():
                fx = self.perceptual.features(x)
            fo = self.perceptual.features(outs)
            p = self.perceptual.distance(fo, [torch.cat([f] * k) for f in fx]).float()  # (k·len(x),)
        return p.view(-1, group).mean(dim=1).sum()

    def shared_terms(self, terms: dict[str, torch.Tensor], total: torch.Tensor, outs: torch.Tensor, x: torch.Tensor,
                     group: int, fakes: torch.Tensor | None) -> torch.Tensor:
        """``total`` + α·P(outs, x) + λ_g·L_adv(fakes), the terms both recipes share (each recorded in ``terms``)."""
        if self.perceptual is not None:
            terms["vgg"] = self.perceptual_sum(outs, x, group)
            total = total + self.cfg.alpha_vgg * terms["vgg"]
        if self.cfg.lambda_adv > 0:
            terms["adv"] = self.adversarial(fakes)
            total = total + self.cfg.lambda_adv * terms["adv"]
        return total

    def closed(self, terms: dict[str, torch.Tensor], total: torch.Tensor, delta: float, mixed: torch.Tensor | None,
               real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        """``total`` + δ·L_id (where the recipe measured ``terms["id"]`` and δ > 0) as L_gen, recorded in ``terms``,
        with D's fakes and reals: what a recipe's losses return."""
        if "id" in terms and delta > 0:
            total = total + delta * terms["id"]
        terms["gen"] = total
        return total, terms, {"mixed": mixed, "real": real, "delta": delta}

    def adversarial(self, fakes: torch.Tensor) -> torch.Tensor:
        """The generator's GAN term on ``fakes``, D a fixed critic (its own step follows)."""
        self.dis.requires_grad_(False)
        with self.autocast():
            logits = self.dis(fakes)
        self.dis.requires_grad_(True)
        return L.g_gan_loss(logits.float(), self.cfg.gan_loss)

    def _descend(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """One optimiser step on ``loss`` (through the AMP grad scaler, a no-op without fp16)."""
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)

    def step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One G and one D update on ``batch``; returns every loss term as a float, δ included."""
        cfg = self.cfg
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        t = time.perf_counter()
        total, terms, extra = self.recipe.generator_losses(self, batch, step)
        t = self._lap("forward_g", t)
        _refuse_non_finite(total, terms, step)
        self._descend(total, self.opt_g)
        ema_update(self.ema, self.gen, ema_beta(step, cfg.ema_beta))
        t = self._lap("backward_g", t)

        if self.dis is None:  # no GAN term: no discriminator, and no d_* terms in the logs
            self.scaler.update()  # fp16 AMP: every scaler.step() needs its update() before the next
            return self._floats(terms, extra)
        x = extra["real"]
        with self.autocast():
            logits = self.dis_step(torch.cat([x, extra["mixed"].detach()])).float()  # (4B,1,h,w)
        l_real, l_fake = L.d_gan_loss(logits[: len(x)], logits[len(x):], cfg.gan_loss)
        l_dis = L.discriminator_loss(l_real, l_fake, cfg.zeta_dis)
        t = self._lap("forward_d", t)
        _refuse_non_finite(l_dis, {"d_real": l_real, "d_fake": l_fake}, step)
        self._descend(l_dis, self.opt_d)
        self.scaler.update()
        self._lap("backward_d", t)
        terms.update(d_real=l_real, d_fake=l_fake, dis=l_dis)
        return self._floats(terms, extra)

    def _floats(self, terms: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict[str, float]:
        vals = torch.stack([v.detach().float().to(self.device) for v in terms.values()]).cpu().tolist()  # one sync
        out = dict(zip(terms.keys(), vals))
        out["delta"] = float(extra["delta"])
        return out

    @torch.no_grad()
    def sample(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The EMA generator on a fixed batch: the rows of the recipe's sample sheet, on the CPU."""
        return self.recipe.sample(self, {k: v.to(self.device) for k, v in batch.items()})

    def state(self, step: int, extra: dict[str, Any]) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "config": asdict(self.cfg), "step": step,
            "generator": self.gen.state_dict(), "generator_ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(),
            **({"discriminator": self.dis.state_dict(), "opt_d": self.opt_d.state_dict()} if self.dis is not None else {}),
            "scaler": self.scaler.state_dict(), "rng": rng, **extra,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.gen.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.dis is not None:
            self.dis.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
