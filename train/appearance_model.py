"""The masked-rest generators: masked rest + identity photos -> the face drawn into the rest.

Three identity encoders share E_A and the decoder (``--identity-encoder``):
``appearance`` (below), ``pooled`` (FUNIT's class encoder: convs, a global mean, the
mean over K, one code) and ``dlib`` (the frozen dlib embedding of each photo, mean
over K, a trained projection; training reads cached embeddings, the export puts the
dlib network in front). The two pooled codes reach the decoder as a vector per scale,
broadcast over the map, and their decoder draws over the masked rest, not a paste.

E_A (``RestEncoder``) reads the masked rest, its mask and the target-geometry sketch
(``g2g.faces.masked_rest.CONTENT_CHANNELS``) and keeps features at 1, 1/2, 1/4 and 1/8 of
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

from g2g.faces.masked_rest import CONTENT_CHANNELS
from g2g.config import ModelConfig
from g2g.train.model import EncoderDecoder


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


class CodeHeads(nn.Module):
    """An identity code (B, D) -> per-scale maps (B, w_i, 1, 1), which the decoder broadcasts."""

    def __init__(self, dim: int, w: list[int], hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True))
        self.outs = nn.ModuleList([nn.Linear(hidden, c) for c in w])

    def forward(self, code: torch.Tensor) -> list[torch.Tensor]:
        h = self.mlp(code)
        return [o(h)[:, :, None, None] for o in self.outs]


class PooledEncoder(nn.Module):
    """E_B of ``pooled``: (B, K, 3, S, S) identity crops -> one code (global mean, then mean over K) -> per scale."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = widths(cfg)
        self.net = Pyramid(3, w, 0)
        self.heads = CodeHeads(w[3], w)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, k = x.shape[:2]
        code = self.net(x.flatten(0, 1))[-1].mean((2, 3))
        return self.heads(code.view(b, k, -1).mean(1))


class EmbeddingEncoder(nn.Module):
    """E_B of ``dlib`` in training: (B, K, 128) frozen dlib embeddings -> their mean, projected per scale."""

    def __init__(self, cfg: ModelConfig, dim: int = 128):
        super().__init__()
        self.dim = dim
        self.heads = CodeHeads(dim, widths(cfg))

    def forward(self, emb: torch.Tensor) -> list[torch.Tensor]:
        code = F.normalize(emb.mean(1), dim=1) * self.dim**0.5  # unit length, about unit spread per component
        return self.heads(code)


class DlibClassEncoder(nn.Module):
    """E_B of ``dlib`` as ``g2g mix`` runs it: (N, K, 3, S, S) crops -> dlib embeddings -> the trained projection."""

    def __init__(self, net: nn.Module, encoder: EmbeddingEncoder):
        super().__init__()
        self.net, self.encoder = net, encoder

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, k = x.shape[:2]
        return self.encoder(self.net(x.flatten(0, 1)).view(b, k, -1))


def image_class_encoder(gen: nn.Module, net: nn.Module | None = None) -> nn.Module:
    """E_B reading identity crops (N, K, 3, S, S), as exported: ``dlib`` puts ``net`` (loaded if None) in front."""
    if not isinstance(gen.class_encoder, EmbeddingEncoder):
        return gen.class_encoder
    if net is None:
        from g2g.train.identity_net import load_identity_net

        net = load_identity_net("dlib", zoom=gen.cfg.zoom)
    return DlibClassEncoder(net, gen.class_encoder)


def _fit(a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Identity features ``a`` at ``r``'s spatial size: a pooled code (B, C, 1, 1) is broadcast."""
    return a if a.shape[-1] != 1 else a.expand(-1, -1, r.shape[2], r.shape[3])


class HighPass(nn.Module):
    """x minus its Gaussian blur of ``sigma`` px (separable, reflect-padded, per channel): detail without tone."""

    def __init__(self, sigma: float):
        super().__init__()
        r = max(1, int(3 * sigma + 0.5))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-(t**2) / (2 * sigma**2))
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1), persistent=False)
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, r = self.kernel, self.r
        low = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)
        low = F.conv2d(F.pad(low, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=3)
        return x - low


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
        self.detail_only = HighPass(cfg.residual_sigma) if cfg.residual_sigma > 0 else nn.Identity()

    def forward(self, rest: list[torch.Tensor], ident: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
        x = self.bottom(torch.cat([rest[3], _fit(ident[3], rest[3])], 1))  # (B, w3, S/8, S/8)
        for up, ref, i in zip(self.ups, self.refine, (2, 1, 0)):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = ref(up(torch.cat([x, rest[i], _fit(ident[i], rest[i])], 1)))
        return base + self.detail_only(self.head(torch.cat([x, base], 1)))


CLASS_ENCODERS = {"appearance": AppearanceEncoder, "pooled": PooledEncoder, "dlib": EmbeddingEncoder}


class AppearanceGenerator(EncoderDecoder):
    """E_A, E_B and G of a masked-rest recipe; ``forward`` gives the un-composited face.

    ``identity``: (B, K, 3, S, S) crops, or for ``dlib`` (B, K, 128) embeddings (see image_class_encoder)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, RestEncoder(cfg), CLASS_ENCODERS[cfg.identity_encoder](cfg), FusionDecoder(cfg))

    def forward(self, content: torch.Tensor, identity: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.content_encoder(content), self.class_encoder(identity), base)


def composite(face: torch.Tensor, rest: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The output crop: ``face`` inside ``mask`` (B, 1, S, S), ``rest`` outside, clamped to [-1, 1]."""
    return (rest * (1 - mask) + face.clamp(-1, 1) * mask)
