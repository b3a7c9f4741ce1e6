"""A projected discriminator: small trained heads on a frozen pretrained network's features.

Sauer et al., *Projected GANs Converge Faster* (NeurIPS 2021): a discriminator that starts from a network which
already knows what photographs look like needs far fewer steps to tell a soft face from a real one than one trained
from scratch (tests/test_discriminators.py), and so gives the generator a useful gradient early. Here the frozen
trunk is the shift-tolerant LPIPS VGG16 that L_vgg already loads (offline, from ``stlpips-pytorch``), cut after
relu4_3; a head of spectrally normalised convolutions reads each of relu2_2, relu3_3 and relu4_3 (S/2, S/4 and
S/8) and scores every position real or fake. It is not the realism measure's network (dlib's ResNet), so training
against it does not train against ``g2g eval --metric realism``.

The trunk is held outside the module's parameters and state: checkpoints keep only the heads, the optimiser
sees only the heads, and the trunk's weights are the package's on every load.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from g2g.config import ModelConfig
from g2g.train.perceptual import ShiftTolerantLPIPS

LEVELS = (2, 3, 4)  # trunk slices whose outputs the heads read: relu2_2, relu3_3, relu4_3
HEAD_WIDTH = 64


def _head(channels: int, width: int) -> nn.Sequential:
    """1x1 projection, one 3x3 conv, 1x1 logits; spectral norm on each (stable with hinge, no gradient penalty)."""
    return nn.Sequential(
        spectral_norm(nn.Conv2d(channels, width, 1)), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(width, width, 3, padding=1)), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(width, 1, 1)),
    )


class ProjectedDiscriminator(nn.Module):
    """(B, 3, S, S) in [-1, 1] -> (B, N) logits: every position of every level, one column each."""

    def __init__(self, trunk: ShiftTolerantLPIPS, width: int = HEAD_WIDTH):
        super().__init__()
        trunk.requires_grad_(False).eval()
        object.__setattr__(self, "_trunk", trunk)  # not a submodule: no parameters, no state_dict entries
        self.heads = nn.ModuleList(_head(trunk.CHANNELS[i - 1], width) for i in LEVELS)

    def _apply(self, fn, recurse: bool = True):  # .to(device) / .float() move the frozen trunk too
        super()._apply(fn, recurse)
        self._trunk._apply(fn)
        return self

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self._trunk.eval()  # the trunk never leaves eval mode
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's unit-normalised activations at ``LEVELS`` (gradients flow to x, not to the trunk)."""
        feats = self._trunk.features(x, upto=max(LEVELS))
        return [feats[i - 1] for i in LEVELS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(f).flatten(1) for head, f in zip(self.heads, self.features(x))], dim=1)


def build_discriminator(kind: str, model_cfg: ModelConfig, device: torch.device, perceptual: nn.Module | None
                        ) -> nn.Module:
    """The discriminator a run trains: ``patch`` (FUNIT's, from scratch) or ``projected`` (heads on frozen VGG16).

    ``perceptual``: the run's L_vgg network, shared as the trunk when it is the ST-LPIPS one."""
    if kind == "projected":
        from g2g.train.perceptual import load_stlpips

        trunk = perceptual if isinstance(perceptual, ShiftTolerantLPIPS) else load_stlpips()
        return ProjectedDiscriminator(trunk).to(device)
    from g2g.train.model import PatchDiscriminator

    return PatchDiscriminator(model_cfg).to(device)
