"""One training step of ``g2g train``: networks, optimisers, losses, EMA (the loop is g2g.train.trainer).

FUNIT recipe (``identity_encoder="funit"``); the appearance recipe's step is g2g.train.appearance_step.


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

Order per step: G forward and losses (D frozen) -> G backward/step -> D forward on
real and detached fakes -> D backward/step; EMA of G after each G step.
Batches are a pure function of (seed, rank, step), so ``resume`` continues exactly.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict
from typing import Any

import torch
import torch.nn as nn

from g2g.config import TrainConfig
from g2g.train import losses as L
from g2g.train.data import erase_landmarks
from g2g.train.model import Generator, PatchDiscriminator
from g2g.config import OPTIMIZERS, PERCEPTUAL_NETS
from g2g.errors import G2GError, check_options

LOSS_TERMS = ("vgg", "cyc", "self", "adv", "id", "gen", "d_real", "d_fake", "dis")


class TrainError(G2GError):
    """A training run cannot start or continue (one-line message for the user)."""


# --- pieces ----------------------------------------------------------------------------------------------------------


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


def build_generator(model) -> nn.Module:
    """The generator of a ModelConfig: FUNIT's (pooled class code, whole rest) or a masked-rest one."""
    from g2g.config import IDENTITY_ENCODERS

    if model.masked_rest:
        from g2g.train.appearance_model import AppearanceGenerator

        return AppearanceGenerator(model)
    if model.identity_encoder != "funit":
        raise TrainError(f"unknown identity encoder {model.identity_encoder!r}; choose from {', '.join(IDENTITY_ENCODERS)}")
    return Generator(model)


def load_identity(zoom: float, device: torch.device) -> nn.Module:
    """The frozen dlib identity network for crops aligned at ``zoom`` (tests may replace this function)."""
    from g2g.train.identity import load_identity_net

    return load_identity_net("dlib", zoom=zoom).to(device)


def validate(cfg: TrainConfig) -> None:
    """Reject settings that would fail deep inside a run, with one line each."""
    checks = [
        (cfg.gan_loss in L.GAN_LOSSES, f"--gan-loss must be one of {', '.join(L.GAN_LOSSES)}"),
        (cfg.id_schedule in L.ID_SCHEDULES, f"--id-schedule must be one of {', '.join(L.ID_SCHEDULES)}"),
        (cfg.perceptual in PERCEPTUAL_NETS, f"--perceptual must be one of {', '.join(PERCEPTUAL_NETS)}"),
        (cfg.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (cfg.steps >= 1, "--steps must be >= 1"),
        (cfg.max_minutes >= 0, "--max-minutes must be >= 0 (0: no limit)"),
        (cfg.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.k_shot >= 1, "--k-shot must be >= 1"),
        (cfg.model.image_size % 2 ** cfg.model.content_downs == 0,
         f"--size must be a multiple of {2 ** cfg.model.content_downs} for this model"),
        (16 <= cfg.model.image_size <= 1024, "--size must be between 16 and 1024"),
        (min(cfg.checkpoint_every, cfg.sample_every, cfg.log_every) >= 1, "--checkpoint-every/--sample-every must be >= 1"),
        (all(w >= 0 for w in (cfg.alpha_vgg, cfg.gamma_cyc, cfg.lambda_adv, cfg.delta_id, cfg.zeta_dis, cfg.self_recon,
                              cfg.id_start)), "loss weights must be >= 0"),
    ]
    check_options(checks, TrainError)


# --- the trainer -----------------------------------------------------------------------------------------------------


class CrossTrainer:
    """Networks, optimisers and one training step; ``train()`` drives it, ``bench/`` times it."""

    def __init__(self, cfg: TrainConfig, device: torch.device, ddp: bool = False):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
        self.appearance = cfg.model.masked_rest
        self.gen = build_generator(cfg.model).to(device)
        # the masked-rest recipes at λ_g = 0 train no discriminator (and neither --resume nor --init-from can turn
        # λ_g on later), so none is built: FUNIT's full-size one is 54 M parameters in every checkpoint
        gan = not (self.appearance and cfg.lambda_adv == 0)
        self.dis = PatchDiscriminator(cfg.model).to(device) if gan else None
        self.ema = copy.deepcopy(self.gen).requires_grad_(False)
        self.opt_g = make_optimizer(self.gen.parameters(), cfg, cfg.lr_gen)
        self.opt_d = make_optimizer(self.dis.parameters(), cfg, cfg.lr_dis) if self.dis is not None else None
        self.cross: nn.Module = self.gen if self.appearance else CrossForward(self.gen, cfg.erase_landmarks)
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
        self.perceptual = None
        if cfg.alpha_vgg > 0:
            from g2g.train.perceptual import load_perceptual

            self.perceptual = load_perceptual(cfg.perceptual, device)
        self.identity = None  # the frozen dlib net: for L_id, and the dlib encoder's embeddings of network outputs
        if cfg.delta_id > 0 or cfg.id_start > 0 or cfg.model.identity_encoder == "dlib":
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

    def generator_losses(self, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        cfg = self.cfg
        if self.appearance:
            from g2g.train.appearance_step import appearance_losses

            return appearance_losses(self, batch, step)
        a_k, b_k = batch["a_k"], batch["b_k"]
        x = torch.cat([a_k[:, 0], b_k[:, 0]])  # originals [a; b] (2B,3,S,S)
        n = len(a_k)
        with self.autocast():
            out = self.cross(a_k, b_k, batch["lm_a"], batch["lm_b"])
        mixed, self_rec, recon = (out[k].float() for k in ("mixed", "self", "recon"))
        terms: dict[str, torch.Tensor] = {
            "cyc": L.l1(recon[:n], x[:n]) + L.l1(recon[n:], x[n:]),
            "self": L.l1(self_rec[:n], x[:n]) + L.l1(self_rec[n:], x[n:]),
        }
        total = cfg.gamma_cyc * terms["cyc"] + cfg.self_recon * terms["self"]
        total = self.shared_terms(terms, total, torch.cat([recon, self_rec]), x, n, mixed)  # [a'; b'; ŝ_a; ŝ_b] vs [a; b]
        delta = L.id_weight(step, cfg)
        if self.identity is not None:
            k = a_k.shape[1]
            with torch.no_grad(), self.autocast():
                target = self.identity(torch.cat([a_k, b_k]).flatten(0, 1)).float().view(2 * n, k, -1).mean(1)
            with contextlib.nullcontext() if delta > 0 else torch.no_grad(), self.autocast():
                emb = self.identity(mixed).float()  # [φ(mixed_ab) ~ identity B; φ(mixed_ba) ~ identity A]
            terms["id"] = L.identity_distance(emb[:n], target[n:]) + L.identity_distance(emb[n:], target[:n])
            if delta > 0:
                total = total + delta * terms["id"]
        terms["gen"] = total
        return total, terms, {"mixed": mixed, "delta": delta}

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
        total, terms, extra = self.generator_losses(batch, step)
        t = self._lap("forward_g", t)
        self._descend(total, self.opt_g)
        ema_update(self.ema, self.gen, ema_beta(step, cfg.ema_beta))
        t = self._lap("backward_g", t)

        if self.dis is None:  # no GAN term: no discriminator, and no d_* terms in the logs
            self.scaler.update()  # fp16 AMP: every scaler.step() needs its update() before the next
            return self._floats(terms, extra)
        x = extra["real"] if "real" in extra else torch.cat([batch["a_k"][:, 0], batch["b_k"][:, 0]])
        with self.autocast():
            logits = self.dis_step(torch.cat([x, extra["mixed"].detach()])).float()  # (4B,1,h,w)
        l_real, l_fake = L.d_gan_loss(logits[: len(x)], logits[len(x):], cfg.gan_loss)
        l_dis = L.discriminator_loss(l_real, l_fake, cfg.zeta_dis)
        t = self._lap("forward_d", t)
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
        """EMA generator on a fixed batch: originals, mixed and reconstructed, each (2B,3,S,S) on the CPU."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.appearance:
            from g2g.train.appearance_step import appearance_sample

            with self.autocast():
                return appearance_sample(self.ema, batch)
        with self.autocast():
            out = CrossForward(self.ema, self.cfg.erase_landmarks)(batch["a_k"], batch["b_k"], batch["lm_a"], batch["lm_b"])
        x = torch.cat([batch["a_k"][:, 0], batch["b_k"][:, 0]])
        return {"original": x.cpu(), "mixed": out["mixed"].float().cpu(), "recon": out["recon"].float().cpu()}

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
