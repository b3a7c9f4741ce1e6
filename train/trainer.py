"""Cross training of E_A (rest), E_B (identity) and G (AdaIN decoder): ``g2g train``.

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
import io
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from g2g.config import TrainConfig, from_dict
from g2g.fsutil import append_jsonl, atomic_save_image, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl
from g2g.train import losses as L
from g2g.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from g2g.train.data import (PairBatches, erase_landmarks, fixed_val_pairs, load_items, make_batch,
                            read_prepare_config, split_identities)
from g2g.train.model import Generator, PatchDiscriminator

LOSS_TERMS = ("vgg", "cyc", "self", "adv", "id", "gen", "d_real", "d_fake", "dis")
# fields that may change when resuming; everything else (architecture, losses, seed) comes from the checkpoint
RUNTIME_FIELDS = ("steps", "device", "checkpoint_every", "sample_every", "log_every", "workers", "compile", "amp")
VAL_PAIRS = 4


class TrainError(ValueError):
    """A training run cannot start or continue (one-line message for the user)."""


@dataclass
class TrainResult:
    run: Path
    step: int  # last completed step
    steps: int  # the run's horizon (cfg.steps)
    checkpoint: Path | None  # last checkpoint written
    interrupted: bool  # stopped early by Ctrl-C (a checkpoint was written)
    resumed_from: int | None  # step the run resumed at, if any
    images_per_s: float  # 2·batch·world images per step / wall time per step, over this call
    seconds: float
    world_size: int
    metrics: dict[str, float] = field(default_factory=dict)  # last logged line


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
    """The generator of a ModelConfig: FUNIT's (pooled class code) or the appearance encoder's."""
    if model.identity_encoder == "appearance":
        from g2g.train.appearance_model import AppearanceGenerator

        return AppearanceGenerator(model)
    if model.identity_encoder != "funit":
        raise TrainError(f"unknown identity encoder {model.identity_encoder!r}; choose funit or appearance")
    return Generator(model)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {name}: CUDA is not available here; use --device cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def load_identity(zoom: float, device: torch.device) -> nn.Module:
    """The frozen dlib identity network for crops aligned at ``zoom`` (tests may replace this function)."""
    from g2g.train.identity import load_identity_net

    return load_identity_net("dlib", zoom=zoom).to(device)


def validate(cfg: TrainConfig) -> None:
    """Reject settings that would fail deep inside a run, with one line each."""
    checks = [
        (cfg.gan_loss in L.GAN_LOSSES, f"--gan-loss must be one of {', '.join(L.GAN_LOSSES)}"),
        (cfg.id_schedule in L.ID_SCHEDULES, f"--id-schedule must be one of {', '.join(L.ID_SCHEDULES)}"),
        (cfg.perceptual in ("stlpips", "vgg19"), "--perceptual must be stlpips or vgg19"),
        (cfg.optimizer in ("rmsprop", "adam"), "--optimizer must be rmsprop or adam"),
        (cfg.steps >= 1, "--steps must be >= 1"),
        (cfg.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.k_shot >= 1, "--k-shot must be >= 1"),
        (cfg.model.image_size % 2 ** cfg.model.content_downs == 0,
         f"--size must be a multiple of {2 ** cfg.model.content_downs} for this model"),
        (16 <= cfg.model.image_size <= 1024, "--size must be between 16 and 1024"),
        (min(cfg.checkpoint_every, cfg.sample_every, cfg.log_every) >= 1, "--checkpoint-every/--sample-every must be >= 1"),
        (all(w >= 0 for w in (cfg.alpha_vgg, cfg.gamma_cyc, cfg.lambda_adv, cfg.delta_id, cfg.zeta_dis, cfg.self_recon,
                              cfg.id_start)), "loss weights must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TrainError(msg)


# --- the trainer -----------------------------------------------------------------------------------------------------


class CrossTrainer:
    """Networks, optimisers and one training step; ``train()`` drives it, ``bench/`` times it."""

    def __init__(self, cfg: TrainConfig, device: torch.device, ddp: bool = False):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
        self.appearance = cfg.model.identity_encoder == "appearance"
        self.gen = build_generator(cfg.model).to(device)
        self.dis = PatchDiscriminator(cfg.model).to(device)
        self.ema = copy.deepcopy(self.gen).requires_grad_(False)
        self.opt_g = make_optimizer(self.gen.parameters(), cfg, cfg.lr_gen)
        self.opt_d = make_optimizer(self.dis.parameters(), cfg, cfg.lr_dis)
        self.cross: nn.Module = self.gen if self.appearance else CrossForward(self.gen, cfg.erase_landmarks)
        self.dis_step: nn.Module = self.dis
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.cross, self.dis_step = DDP(self.cross, device_ids=ids), DDP(self.dis, device_ids=ids)
        if cfg.compile:
            self.cross = torch.compile(self.cross)
        cuda = device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if (cuda and cfg.amp) else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.perceptual = None
        if cfg.alpha_vgg > 0:
            from g2g.train.perceptual import load_perceptual

            self.perceptual = load_perceptual(cfg.perceptual, device)
        self.identity = load_identity(cfg.model.zoom, device) if (cfg.delta_id > 0 or cfg.id_start > 0) else None
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
        if self.perceptual is not None:
            with self.autocast():
                with torch.no_grad():
                    fx = self.perceptual.features(x)  # originals: once, no graph
                fr = self.perceptual.features(torch.cat([recon, self_rec]))  # (4B,...) [a'; b'; ŝ_a; ŝ_b]
                p = self.perceptual.distance(fr, [torch.cat([f, f]) for f in fx]).float()  # (4B,)
            terms["vgg"] = p.view(4, n).mean(dim=1).sum()
            total = total + cfg.alpha_vgg * terms["vgg"]
        if cfg.lambda_adv > 0:
            self.dis.requires_grad_(False)  # D is a fixed critic here; its own step follows
            with self.autocast():
                logits = self.dis(mixed)
            self.dis.requires_grad_(True)
            terms["adv"] = L.g_gan_loss(logits.float(), cfg.gan_loss)
            total = total + cfg.lambda_adv * terms["adv"]
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

    def step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One G and one D update on ``batch``; returns every loss term as a float, δ included."""
        cfg = self.cfg
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        t = time.perf_counter()
        total, terms, extra = self.generator_losses(batch, step)
        t = self._lap("forward_g", t)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.opt_g)
        ema_update(self.ema, self.gen, ema_beta(step, cfg.ema_beta))
        t = self._lap("backward_g", t)

        if cfg.lambda_adv == 0 and self.appearance:  # no GAN term: the discriminator would be trained for nothing
            terms.update(d_real=torch.zeros(()), d_fake=torch.zeros(()), dis=torch.zeros(()))
            return self._floats(terms, extra)
        x = extra["real"] if "real" in extra else torch.cat([batch["a_k"][:, 0], batch["b_k"][:, 0]])
        with self.autocast():
            logits = self.dis_step(torch.cat([x, extra["mixed"].detach()])).float()  # (4B,1,h,w)
        l_real, l_fake = L.d_gan_loss(logits[: len(x)], logits[len(x):], cfg.gan_loss)
        l_dis = L.discriminator_loss(l_real, l_fake, cfg.zeta_dis)
        t = self._lap("forward_d", t)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(l_dis).backward()
        self.scaler.step(self.opt_d)
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
            "generator": self.gen.state_dict(), "generator_ema": self.ema.state_dict(),
            "discriminator": self.dis.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng, **extra,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.gen.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["generator_ema"])
        self.dis.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


# --- run folder outputs ----------------------------------------------------------------------------------------------


def _to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """(N,3,S,S) in [-1,1] -> list of (S,S,3) uint8 (the same conversion mix uses)."""
    from g2g.bundle import to_image

    return list(to_image(x.detach().float().cpu().numpy()))


def write_sample_sheet(path: Path, s: dict[str, torch.Tensor], names: list[tuple[str, str]]) -> None:
    """Rows Original / Mixed / Reconstructed; columns a_i, b_i of each validation pair.

    Mixed under a_i is mixed_ab (b_i's identity in a_i's pose), under b_i mixed_ba;
    Reconstructed under a_i is a'_i (the cycle back), under b_i b'_i.
    """
    from g2g.sheets import contact_sheet

    n = len(names)
    order = [i for p in range(n) for i in (p, n + p)]  # a_0, b_0, a_1, b_1, ...
    rows = [[_to_uint8(s[k])[i] for i in order] for k in ("original", "mixed", "recon")]
    cols = [name for a, b in names for name in (f"A: {a}", f"B: {b}")]
    sheet = contact_sheet(rows, ["Original", "Mixed", "Reconstructed"], cols, cell=max(96, s["original"].shape[-1]))
    atomic_save_image(path, sheet)


def write_appearance_sheet(path: Path, s: dict[str, torch.Tensor]) -> None:
    """Columns: held-out pairs. Rows: pose, identity photo, warped paste (the untrained model), mixed, and the
    reconstruction of the identity photo from another photo of the same person."""
    from g2g.sheets import contact_sheet

    keys = ("pose", "identity", "paste", "mixed", "recon")
    rows = [_to_uint8(s[k]) for k in keys]
    labels = ["Pose", "Identity", "Warped paste", "Mixed", "Reconstructed"]
    cols = [f"pair {i}" for i in range(len(rows[0]))]
    atomic_save_image(path, contact_sheet(rows, labels, cols, cell=max(128, s["pose"].shape[-1])))


GEN_TERMS = ("vgg", "cyc", "self", "adv", "id")  # plotted apart from the totals, whose scale would flatten them
TOTALS = ("gen", "dis", "d_real", "d_fake")


def plot_losses(metrics: Path, out: Path) -> None:
    """"overall losses" from metrics.jsonl: one curve per term (left: generator terms, right: totals and D)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = list(read_jsonl(metrics))
    if not recs:
        return
    steps = [r["step"] for r in recs]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for ax, keys, title in ((axes[0], GEN_TERMS, "generator terms (unweighted)"), (axes[1], TOTALS, "weighted totals, discriminator")):
        for k in keys:
            ys = [r.get(k, float("nan")) for r in recs]
            if any(np.isfinite(y) for y in ys):
                ax.plot(steps, ys, label=k, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    vs = [(r["step"], r["val_cyc"]) for r in recs if "val_cyc" in r]
    if vs:
        axes[0].plot(*zip(*vs), "k--", marker="o", markersize=3, label="val cyc (EMA G)")
    for ax in axes:
        ax.legend(ncol=2, fontsize=8)
    fig.suptitle("overall losses")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (written after the checkpoint a resume starts from)."""
    if path.exists():
        keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def _link_last(src: Path, last: Path) -> None:
    """Point checkpoints/last.pt at ``src`` atomically (a hard link: no second copy on disk)."""
    tmp = last.with_name(f".{last.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, last)


# --- distributed -----------------------------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist(device_name: str) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; one process otherwise. gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    device = resolve_device(device_name, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def _all_mean(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if d.world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / d.world).tolist()


def _any_flag(flag: bool, d: Dist, device: torch.device) -> bool:
    if d.world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# --- entry point -----------------------------------------------------------------------------------------------------


def _resolve_config(run: Path, cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, dict | None]:
    """The run's config and the state to resume from (None for a fresh run)."""
    ckpts = list((run / "checkpoints").glob("*.pt")) if (run / "checkpoints").is_dir() else []
    if not resume:
        if ckpts:
            raise TrainError(f"{run} already holds a training run ({len(ckpts)} checkpoints); "
                             "pass --resume to continue it or choose another -o folder")
        return cfg, None
    if not ckpts:
        return cfg, None  # --resume on a new folder simply starts
    try:
        state = load_checkpoint(latest_checkpoint(run))
    except CheckpointError as e:
        raise TrainError(str(e)) from None
    saved = from_dict(TrainConfig, state["config"])
    merged = replace(saved, **{k: getattr(cfg, k) for k in RUNTIME_FIELDS})
    if merged.steps <= state["step"]:
        raise TrainError(f"{run} is already at step {state['step']} of {saved.steps}; pass a larger --steps to go on")
    return merged, state


def _init_weights(source: Path, prep: dict[str, Any]):
    """Weights for --init-from; the crops must be aligned as the source model's were."""
    from g2g.train.init_weights import InitError, load_init_weights

    try:
        init = load_init_weights(source)
    except InitError as e:
        raise TrainError(str(e)) from None
    if prep.get("zoom") and abs(float(prep["zoom"]) - init.model.zoom) > 1e-6:
        raise TrainError(f"--init-from {source}: its model was trained on crops at zoom {init.model.zoom}, "
                         f"these were prepared at zoom {prep['zoom']}; prepare them with --zoom {init.model.zoom}")
    return init


def train(data: Path, run: Path, cfg: TrainConfig, resume: bool = False, progress: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None,
          init_from: Path | None = None) -> TrainResult:
    """Cross-train on the ``g2g prepare`` folder ``data``, writing the run folder ``run``.

    ``resume`` continues from RUN/checkpoints/last.pt with the saved config (only
    the fields in RUNTIME_FIELDS, e.g. ``steps``, come from ``cfg``). Ctrl-C stops
    after the current step, writes a checkpoint and returns ``interrupted=True``.
    Under ``torchrun`` each process trains on its own share of pairs and rank 0
    writes the files; ``batch_size`` is per process. ``on_step(step, terms)`` is
    called after every step (tests, notebooks). ``init_from`` (a checkpoint, run
    folder or ONNX bundle) gives a fresh run its generator weights and architecture
    (see g2g.train.init_weights); a resumed run ignores it.
    """
    data, run = Path(data), Path(run)
    d, device = _init_dist(cfg.device)
    cfg, state = _resolve_config(run, cfg, resume)
    validate(cfg)
    by_id = load_items(data)
    prep = read_prepare_config(data)
    init = _init_weights(init_from, prep) if (init_from is not None and state is None) else None
    init_record = {"source": init.source, "step": init.step} if init is not None else (state or {}).get("init_from")
    if init is not None:
        cfg = replace(cfg, model=init.model)
    elif state is None and prep.get("zoom") and abs(float(prep["zoom"]) - cfg.model.zoom) > 1e-6:
        cfg = replace(cfg, model=replace(cfg.model, zoom=float(prep["zoom"])))  # the model records its crops' alignment

    split_path = run / "split.json"
    if split_path.exists() and state is not None:
        split = json.loads(split_path.read_text())
        train_ids = [i for i in split["train"] if i in by_id]
        val_ids = [i for i in split["val"] if i in by_id]
    else:
        train_ids, val_ids = split_identities(list(by_id), cfg.val_fraction, cfg.seed)
    if len(train_ids) < 2:
        raise TrainError(f"{data}: fewer than 2 training identities after the split")
    val_pairs = fixed_val_pairs(by_id, val_ids, train_ids, VAL_PAIRS, cfg.seed)
    size = cfg.model.image_size
    appearance = cfg.model.identity_encoder == "appearance"
    if appearance:
        from g2g.train.appearance_data import AppearanceBatches, load_bank

        cache = run / "cache" / "landmarks68.npz"
        bank = load_bank(data, train_ids, size, cfg.model.zoom, cache)
        val_bank = load_bank(data, val_ids if len(val_ids) >= 2 else val_ids + train_ids[:2], size, cfg.model.zoom,
                             cache, max_per_person=4)
        val_batch = AppearanceBatches(val_bank, 2 * VAL_PAIRS, cfg.seed, flip=False, jitter=False)[0]
    else:
        val_groups = [(by_id[a][: cfg.k_shot], by_id[b][: cfg.k_shot]) for a, b in val_pairs]
        val_batch = make_batch(data, val_groups, size)

    trainer = CrossTrainer(cfg, device, ddp=d.world > 1)
    start = 0
    if state is not None:
        trainer.load_state(state)
        start = int(state["step"])
    elif init is not None:
        trainer.gen.load_state_dict(init.state)
        trainer.ema.load_state_dict(init.state)
    ckpt_dir, metrics_path = run / "checkpoints", run / "metrics.jsonl"
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / "config.json", {
            "train": asdict(cfg), "data": str(data.resolve()), "world_size": d.world, "device": str(device),
            "torch": torch.__version__, "resumed_from": start if state is not None else None,
            **({"init_from": init_record} if init_record else {}),
        })
        atomic_write_json(split_path, {
            "seed": cfg.seed, "val_fraction": cfg.val_fraction, "train": train_ids, "val": val_ids,
            "images": {"train": sum(len(by_id[i]) for i in train_ids), "val": sum(len(by_id[i]) for i in val_ids)},
            "val_pairs": [[a, b] for a, b in val_pairs],
        })
        if state is not None:
            _truncate_metrics(metrics_path, start)

    if appearance:
        dataset = AppearanceBatches(bank, cfg.batch_size, cfg.seed, d.rank, cfg.flip, cfg.steps)
    else:
        dataset = PairBatches(data, by_id, train_ids, cfg.batch_size, cfg.k_shot, size, cfg.seed, d.rank, cfg.flip,
                              cfg.steps)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, cfg.steps), num_workers=cfg.workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )

    stop = {"flag": False}
    old_handler = None

    def _on_sigint(signum, frame):  # first Ctrl-C: finish the step, checkpoint, leave; second: abort
        stop["flag"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGINT, _on_sigint)

    last_ckpt: Path | None = latest_checkpoint(run) if state is not None else None
    extra_state = {"data": {"train": train_ids, "val": val_ids, "seed": cfg.seed, "world_size": d.world}}
    if init_record:
        extra_state["init_from"] = init_record  # kept across resumes; export copies it into g2g_model.json

    def save(step: int) -> Path:
        path = ckpt_dir / f"step_{step:08d}.pt"
        save_checkpoint(path, trainer.state(step, extra_state))
        _link_last(path, ckpt_dir / "last.pt")
        return path

    def write_samples(step: int) -> dict[str, float]:
        s = trainer.sample(val_batch)
        if appearance:
            write_appearance_sheet(run / "samples" / f"step_{step:08d}.png", s)
            plot_losses(metrics_path, run / "losses.png")
            return {"val_rec": float((s["recon"] - s["identity"]).abs().mean())}
        write_sample_sheet(run / "samples" / f"step_{step:08d}.png", s, val_pairs)
        plot_losses(metrics_path, run / "losses.png")
        n = len(val_pairs)
        return {"val_cyc": float(L.l1(s["recon"][:n], s["original"][:n]) + L.l1(s["recon"][n:], s["original"][n:]))}

    imgs_per_step = 2 * cfg.batch_size * d.world
    window: dict[str, list[float]] = {}
    t_start = t_log = time.perf_counter()
    step, interrupted, last_metrics, in_step = start, False, {}, False
    bar = _Progress(cfg.steps, start, enabled=progress and d.main)
    try:
        with bar:
            for batch in loader:
                in_step = True
                terms = trainer.step(batch, step)
                step, in_step = step + 1, False
                for k, v in terms.items():
                    window.setdefault(k, []).append(v)
                if on_step is not None:
                    on_step(step, terms)
                logged = step % cfg.log_every == 0 or step == cfg.steps
                if logged:
                    keys = sorted(window)
                    means = _all_mean([float(np.mean(window[k])) for k in keys], d, device)
                    now = time.perf_counter()
                    ips = imgs_per_step * len(window[keys[0]]) / max(now - t_log, 1e-9)
                    last_metrics = {"step": step, **dict(zip(keys, means)), "images_per_s": ips,
                                    "time": round(now - t_start, 3)}
                    window, t_log = {}, now
                    if step % cfg.sample_every == 0 or step == cfg.steps:
                        if d.main:
                            last_metrics.update(write_samples(step))
                    if d.main:
                        append_jsonl(metrics_path, [last_metrics])
                    bar.update(step, last_metrics)
                else:
                    bar.update(step, None)
                    if step % cfg.sample_every == 0 and d.main:
                        write_samples(step)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    if d.main:
                        last_ckpt = save(step)
                if _any_flag(stop["flag"], d, device):
                    interrupted = True
                    break
    except KeyboardInterrupt:
        if in_step:  # a second Ctrl-C inside a step: abort, the last periodic checkpoint stays
            raise
        interrupted = True  # raised between steps (e.g. by on_step): the state is consistent, save it
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if interrupted and d.main and (last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt")) and step > start:
        last_ckpt = save(step)
    if d.main and metrics_path.exists():
        plot_losses(metrics_path, run / "losses.png")
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    seconds = time.perf_counter() - t_start
    done = step - start
    return TrainResult(run=run, step=step, steps=cfg.steps, checkpoint=last_ckpt, interrupted=interrupted,
                       resumed_from=start if state is not None else None,
                       images_per_s=imgs_per_step * done / max(seconds, 1e-9), seconds=seconds, world_size=d.world,
                       metrics=last_metrics)


class _Progress:
    """rich progress line: step, images/s, ETA and each loss term (a no-op when disabled)."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("{task.fields[ips]}"), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"), console=Console(stderr=True), refresh_per_second=4,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, ips="", terms="")

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, step: int, metrics: dict | None) -> None:
        if not self.enabled:
            return
        fields = {}
        if metrics:
            fields["ips"] = f"{metrics['images_per_s']:.1f} img/s"
            fields["terms"] = " ".join(f"{k} {metrics[k]:.3f}" for k in (*LOSS_TERMS, "delta") if k in metrics)
        self.progress.update(self.task, completed=step, **fields)


def build_config(data: Path, preset: str = "full", size: int | None = None, **fields: Any) -> TrainConfig:
    """TrainConfig for ``data``: the preset's model at ``size`` (default: the crops' size from prepare_config.json)."""
    from g2g.config import model_preset

    prep = read_prepare_config(Path(data))
    try:
        model = model_preset(preset)
    except ValueError as e:
        raise TrainError(str(e)) from None
    size = size or int(prep.get("size") or model.image_size)
    model = replace(model, image_size=size, zoom=float(prep.get("zoom") or model.zoom))
    return TrainConfig(model=model, **fields)


def result_table(r: TrainResult):
    """A rich table of a finished (or interrupted) run."""
    from rich.table import Table

    t = Table(title=f"g2g train: {r.run}", show_header=False)
    state = "interrupted (checkpoint written)" if r.interrupted else ("done" if r.step >= r.steps else "stopped")
    t.add_row("steps", f"{r.step} / {r.steps} ({state})" + (f", resumed at {r.resumed_from}" if r.resumed_from else ""))
    t.add_row("throughput", f"{r.images_per_s:.1f} images/s, {r.seconds:.0f} s, {r.world_size} process(es)")
    if r.metrics:
        t.add_row("last losses", " ".join(f"{k} {r.metrics[k]:.3f}" for k in (*LOSS_TERMS, "delta") if k in r.metrics))
    t.add_row("checkpoint", str(r.checkpoint))
    t.add_row("samples", str(r.run / "samples"))
    return t
