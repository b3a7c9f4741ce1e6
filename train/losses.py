"""Cross-training losses as pure functions of tensors (no module state).

The trainer combines them as

    L_gen = α·L_vgg + γ·L_cyc + s·L_self + λ_g·L_adv + δ(step)·L_id
    L_dis = ζ·(L_real + L_fake)/2

GAN loss: **hinge** by default, as in FUNIT (and SAGAN/BigGAN): its generator
term -D(G(z)) keeps a gradient however confident the discriminator is, and the
discriminator's margin stops it from pushing already-separated scores further,
which keeps patch discriminators stable without a gradient penalty. The
non-saturating logistic loss (Goodfellow et al.) is there for comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from g2g.config import GAN_LOSSES, ID_SCHEDULES  # noqa: F401 (the trainer checks against them)


def d_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "hinge") -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator terms (L_real, L_fake), each a mean over patches and batch.

    hinge:  L_real = E[relu(1 - D(x))],  L_fake = E[relu(1 + D(G(z)))]
    nonsat: L_real = E[softplus(-D(x))], L_fake = E[softplus(D(G(z)))]  (= BCE with logits)
    """
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean(), F.relu(1.0 + fake_logits).mean()
    if kind == "nonsat":
        return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose from {', '.join(GAN_LOSSES)}")


def g_gan_loss(fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Generator term L_adv: hinge -E[D(G(z))], non-saturating E[softplus(-D(G(z)))]."""
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "nonsat":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose from {', '.join(GAN_LOSSES)}")


def discriminator_loss(l_real: torch.Tensor, l_fake: torch.Tensor, zeta: float) -> torch.Tensor:
    """L_dis = ζ·(L_real + L_fake)/2."""
    return zeta * (l_real + l_fake) / 2


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (cycle and self-reconstruction terms)."""
    return (x - y).abs().mean()


def identity_distance(emb_x: torch.Tensor, emb_y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean Euclidean distance between identity embeddings (B,128).

    Euclidean, not cosine: dlib's ResNet was trained with a metric loss on the
    Euclidean distance of its (unnormalised) 128-d descriptors, and "same person"
    is defined by that distance (< 0.6), so it is the quantity the network makes
    meaningful and the one ``g2g eval`` reports. ``eps`` keeps the gradient of the
    square root finite when two embeddings coincide.
    """
    return torch.sqrt(((emb_x.float() - emb_y.float()) ** 2).sum(dim=1) + eps).mean()


def id_weight(step: int, cfg) -> float:
    """δ at ``step`` (a TrainConfig): constant, linear ramp or step increases up to ``delta_id``.

    constant: δ = delta_id throughout.
    linear:   id_start -> delta_id over ``id_warmup`` steps (0: over the whole run), then flat.
    step:     id_start, raised by (delta_id - id_start)/id_step_count every ``id_step_every`` steps,
              ``id_step_count`` times (the research plan of raising δ successively).
    """
    end, start = float(cfg.delta_id), float(cfg.id_start)
    if cfg.id_schedule == "constant":
        return end
    if cfg.id_schedule == "linear":
        span = cfg.id_warmup if cfg.id_warmup > 0 else cfg.steps
        return start + (end - start) * min(1.0, step / max(1, span))
    if cfg.id_schedule == "step":
        n = max(1, cfg.id_step_count)
        k = min(n, step // max(1, cfg.id_step_every))
        return start + (end - start) * k / n
    raise ValueError(f"unknown identity schedule {cfg.id_schedule!r}; choose from {', '.join(ID_SCHEDULES)}")
