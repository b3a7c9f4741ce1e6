"""The ``appearance`` generator: masked rest + warped identity photos -> the face drawn into the rest.

E_A (``RestEncoder``) reads the masked rest, its mask and the target-geometry sketch
(``g2g.appearance.CONTENT_CHANNELS``) and keeps features at 1, 1/2, 1/4 and 1/8 of
the crop; E_B (``AppearanceEncoder``) reads each identity crop warped onto that
geometry, keeps features at the same four scales and averages them over the K
photos (FUNIT's K-shot mean, per pixel). The decoder (``FusionDecoder``) fuses the
two at every scale, U-Net fashion, and adds a residual to ``base`` (the warped
paste); its last conv starts at zero, so an untrained generator *is* the paste.
The composite with the rest outside the mask happens outside the network (in
training and in ``g2g mix`` alike), so E_A never sees the face interior and the
output cannot change anything outside the mask.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2g.appearance import CONTENT_CHANNELS
from g2g.config import ModelConfig


def widths(cfg: ModelConfig) -> list[int]:
    """Channels at scales 1, 1/2, 1/4, 1/8."""
    return [min(cfg.app_dim * 2**i, cfg.app_max) for i in range(4)]


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class Res(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(dim, dim, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Pyramid(nn.Module):
    """(B, cin, S, S) -> features at S, S/2, S/4, S/8."""

    def __init__(self, cin: int, w: list[int], res: int):
        super().__init__()
        self.stem = conv(cin, w[0])
        self.downs = nn.ModuleList([nn.Sequential(conv(w[i], w[i + 1], 2), conv(w[i + 1], w[i + 1])) for i in range(3)])
        self.res = nn.Sequential(*[Res(w[3]) for _ in range(res)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for d in self.downs:
            feats.append(d(feats[-1]))
        feats[-1] = self.res(feats[-1])
        return feats


class RestEncoder(Pyramid):
    """E_A: (B, CONTENT_CHANNELS, S, S) masked rest + mask + sketch -> 4 feature maps."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(CONTENT_CHANNELS, widths(cfg), cfg.app_res)


class AppearanceEncoder(nn.Module):
    """E_B: (B, K, 3, S, S) warped identity crops -> 4 feature maps, each the mean over K."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = Pyramid(3, widths(cfg), 0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, k = x.shape[:2]
        return [f.view(b, k, *f.shape[1:]).mean(1) for f in self.net(x.flatten(0, 1))]


class FusionDecoder(nn.Module):
    """G: rest features + identity features (+ base) -> image (B, 3, S, S) = base + residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = widths(cfg)
        self.bottom = nn.Sequential(conv(2 * w[3], w[3]), *[Res(w[3]) for _ in range(cfg.app_res)])
        self.ups = nn.ModuleList([conv(w[i + 1] + 2 * w[i], w[i]) for i in (2, 1, 0)])
        self.refine = nn.ModuleList([conv(w[i], w[i]) for i in (2, 1, 0)])
        self.head = nn.Conv2d(w[0] + 3, 3, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, rest: list[torch.Tensor], ident: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
        x = self.bottom(torch.cat([rest[3], ident[3]], 1))  # (B, w3, S/8, S/8)
        for up, ref, i in zip(self.ups, self.refine, (2, 1, 0)):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = ref(up(torch.cat([x, rest[i], ident[i]], 1)))
        return base + self.head(torch.cat([x, base], 1))


class AppearanceGenerator(nn.Module):
    """E_A, E_B and G of the ``appearance`` encoder; ``forward`` gives the un-composited face."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.content_encoder = RestEncoder(cfg)
        self.class_encoder = AppearanceEncoder(cfg)
        self.decoder = FusionDecoder(cfg)

    def forward(self, content: torch.Tensor, identity: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.content_encoder(content), self.class_encoder(identity), base)


def composite(face: torch.Tensor, rest: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The output crop: ``face`` inside ``mask`` (B, 1, S, S), ``rest`` outside, clamped to [-1, 1]."""
    return (rest * (1 - mask) + face.clamp(-1, 1) * mask)
