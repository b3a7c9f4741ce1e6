"""One training step of the ``appearance`` recipe (see g2g.train.appearance_data for the three pairs).

    rec  = C(G(E_A(masked x, sketch), E_B(y warped onto x's expression)), x)       y: another photo of x's person
    mix  = C(G(E_A(masked z, sketch), E_B(x warped onto z's expression)), z)       x's person in z's pose
    cyc  = C(G(E_A(masked x, sketch of x), E_B(mix warped back onto x)), x)         the reassembly
    (C: composite, the face inside the mask, the rest outside; the ``pooled`` and ``dlib`` encoders read the
    identity photos unwarped, and the cycle's identity input is the mixed image as it is)

    L_gen = s·L1(rec, x) + α·(P(rec, x) + P(cyc, x)) + γ·L1(cyc, x) + λ_g·L_adv(mix) + δ(step)·L_id
      L1 is the mean absolute error per masked pixel (outside the mask both sides are x)
      L_id = ‖φ(T(mix)) − φ(y)‖: dlib embeddings; T a random resize, shift and blur, so that the
             loss is met by a face dlib knows at every framing, not by a pattern fitted to one
    L_dis = ζ·(L_real + L_fake)/2 on x (real) and the detached mix (fake)

Nothing in an input holds the target's own face inside the mask: E_A's masked rest is
zero there (exact), and the identity photos of a reconstruction are other photos.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from g2g.train import losses as L
from g2g.train.appearance_model import composite

if TYPE_CHECKING:
    from g2g.train.step import CrossTrainer


def masked_l1(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |x - y| over the pixels of ``mask`` (B, 1, S, S), weighted by it."""
    return ((x - y).abs() * mask).sum() / (mask.sum() * x.shape[1]).clamp_min(1.0)


def match_colour(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, 3, S, S) with its per-channel mean and spread inside ``mask`` moved to ``ref``'s (RGB)."""
    w = mask / mask.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    mx, mr = (x * w).sum((2, 3), keepdim=True), (ref * w).sum((2, 3), keepdim=True)
    sx = (((x - mx) ** 2) * w).sum((2, 3), keepdim=True).sqrt()
    sr = (((ref - mr) ** 2) * w).sum((2, 3), keepdim=True).sqrt()
    return (x - mx) * (sr / sx.clamp_min(1e-3)).clamp(0.5, 2.0) + mr


def sample_grid(img: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """``img`` (B, C, S, S) sampled at pixel coordinates ``pix`` (B, S, S, 2) (x, y), bilinear, differentiable."""
    s = img.shape[-1]
    grid = (2.0 * pix + 1.0) / s - 1.0  # pixel centres -> align_corners=False coordinates
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_view(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """A randomly resized (0.92-1.06), shifted (±4%) and blurred copy of x (B, 3, S, S), differentiable."""
    b, dev = x.shape[0], x.device
    scale = 0.92 + 0.14 * torch.rand(b, generator=gen).to(dev)
    shift = (torch.rand(b, 2, generator=gen).to(dev) - 0.5) * 0.08
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    k = torch.tensor([1.0, 2.0, 1.0], device=dev, dtype=x.dtype)
    k = (k[:, None] * k[None, :] / 16.0).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    w = torch.rand(b, 1, 1, 1, generator=gen).to(dev)
    return y + w * (blurred - y)


def appearance_losses(trainer: CrossTrainer, batch: dict[str, torch.Tensor], step: int, warped: bool, embedded: bool
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
    """(L_gen, its terms by name, {"mixed": the fakes for D, "real": the reals, "delta": δ}) of one batch.

    ``warped``: E_B reads identity photos warped onto the target geometry; ``embedded``: it reads their frozen
    dlib embeddings (``trainer.identity``)."""
    cfg, g = trainer.cfg, trainer.gen
    x = batch["x"]
    n = len(x)
    id_loss = trainer.identity is not None and (cfg.delta_id > 0 or cfg.id_start > 0)
    cross = cfg.gamma_cyc > 0 or cfg.lambda_adv > 0 or id_loss  # is the mixed pair needed?
    tags = ("rec", "mix") if cross else ("rec",)
    with trainer.autocast():
        faces = g(*(torch.cat([batch[f"{t}_{k}"] for t in tags]) for k in ("content", "identity", "base"))).float()
    rec = composite(faces[:n], x, batch["rec_mask"])
    mix = composite(faces[n:], batch["mix_rest"], batch["mix_mask"]) if cross else None
    terms: dict[str, torch.Tensor] = {"self": masked_l1(rec, x, batch["rec_mask"])}
    total = cfg.self_recon * terms["self"]
    pairs = [rec]
    if cfg.gamma_cyc > 0:
        cyc = reassembly(trainer, batch, mix, warped, embedded)
        terms["cyc"] = masked_l1(cyc, x, batch["cyc_mask"])
        total = total + cfg.gamma_cyc * terms["cyc"]
        pairs.append(cyc)
    total = trainer.shared_terms(terms, total, torch.cat(pairs), x, n, mix)
    delta = L.id_weight(step, cfg)
    if id_loss:
        terms["id"] = identity_term(trainer, batch, mix, delta > 0, embedded)
    return trainer.closed(terms, total, delta, mix, x)


def reassembly(trainer: CrossTrainer, batch: dict[str, torch.Tensor], mix: torch.Tensor, warped: bool,
               embedded: bool) -> torch.Tensor:
    """cyc: x rebuilt from its own masked rest and the mixed image as the identity input (composited)."""
    x, m = batch["x"], batch["cyc_mask"]
    if warped:
        ident = match_colour(sample_grid(mix, batch["cyc_map"]), x, (m > 0.5).float())
        cyc_id, cyc_base = ident[:, None], x * (1 - m) + ident * m
    else:  # the pooled codes read the mixed image as it is (dlib: its embedding), over the masked rest
        cyc_id = trainer.identity(mix).float()[:, None] if embedded else mix[:, None]
        cyc_base = x * (1 - m)
    with trainer.autocast():
        face = trainer.gen(batch["cyc_content"], cyc_id, cyc_base).float()
    return composite(face, x, m)


def identity_term(trainer: CrossTrainer, batch: dict[str, torch.Tensor], mix: torch.Tensor, grad: bool,
                  embedded: bool) -> torch.Tensor:
    """L_id: the dlib distance of a random view of the mixed face to the identity source y (a graph if ``grad``)."""
    if embedded:  # y's embedding is already the reconstruction's input (cached)
        target = batch["rec_identity"][:, 0]
    else:
        with torch.no_grad(), trainer.autocast():
            target = trainer.identity(batch["id_target"]).float()
    with contextlib.nullcontext() if grad else torch.no_grad(), trainer.autocast():
        emb = trainer.identity(random_view(mix)).float()
    return L.identity_distance(emb, target)


@torch.no_grad()
def appearance_sample(ema: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rows of the sample sheet, each (B, 3, S, S) on the CPU."""
    n = len(batch["x"])
    faces = ema(torch.cat([batch["rec_content"], batch["mix_content"]]),
                torch.cat([batch["rec_identity"], batch["mix_identity"]]),
                torch.cat([batch["rec_base"], batch["mix_base"]])).float()
    return {
        "pose": batch["mix_rest"].cpu(), "identity": batch["x"].cpu(),
        "paste": composite(batch["mix_base"], batch["mix_rest"], batch["mix_mask"]).cpu(),  # what G = base gives
        "mixed": composite(faces[n:], batch["mix_rest"], batch["mix_mask"]).cpu(),
        "recon": composite(faces[:n], batch["x"], batch["rec_mask"]).cpu(),
    }
