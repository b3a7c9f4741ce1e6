"""FUNIT's generator and discriminator, sized by ``ModelConfig``.

Content encoder E_A (the *rest*: pose, expression, background, lighting), class
encoder E_B (the *identity*, codes averaged over K images) and a decoder G with
AdaIN residual blocks. Unlike FUNIT, which writes AdaIN weights onto modules at
decode time, the decoder is stateless: it takes the class code as an explicit
input, so it batches freely and exports cleanly to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2g.config import ModelConfig


def conv_block(cin: int, cout: int, k: int, stride: int = 1, norm: str = "none") -> nn.Sequential:
    """Reflection pad + conv + optional instance norm + ReLU (FUNIT's Conv2dBlock)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d((k - 1) // 2), nn.Conv2d(cin, cout, k, stride, bias=True)]
    if norm == "in":
        layers.append(nn.InstanceNorm2d(cout, affine=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Two 3x3 convs with instance norm and a skip connection."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ContentEncoder(nn.Module):
    """E_A: image (B,3,S,S) in [-1,1] -> content map (B, C, S/2^d, S/2^d)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.content_dim
        layers: list[nn.Module] = [conv_block(3, dim, 7, norm="in")]
        for _ in range(cfg.content_downs):
            nxt = min(dim * 2, cfg.max_dim)
            layers.append(conv_block(dim, nxt, 4, stride=2, norm="in"))
            dim = nxt
        layers += [ResBlock(dim) for _ in range(cfg.content_res)]
        self.net = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClassEncoder(nn.Module):
    """E_B: image (B,3,S,S) -> identity code (B, class_code). No normalisation, as in FUNIT."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.class_dim
        layers: list[nn.Module] = [conv_block(3, dim, 7)]
        for i in range(cfg.class_downs):
            nxt = dim * 2 if i < 2 else dim  # FUNIT doubles twice, then keeps the width
            layers.append(conv_block(dim, nxt, 4, stride=2))
            dim = nxt
        self.net = nn.Sequential(*layers)
        self.head = nn.Conv2d(dim, cfg.class_code, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x).mean(dim=(2, 3), keepdim=True)  # global average pool (B, dim, 1, 1)
        return self.head(h).flatten(1)  # (B, class_code)


class KShotClassEncoder(nn.Module):
    """K images of one identity -> one code: the mean of their codes (FUNIT's K-shot class code)."""

    def __init__(self, encoder: ClassEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]  # x: (B, K, 3, S, S)
        codes = self.encoder(x.flatten(0, 1))  # (B*K, code)
        return codes.view(b, k, -1).mean(dim=1)  # (B, code)


def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance-normalise x (B,C,H,W) and apply per-sample scale and bias (B,C)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * scale[:, :, None, None] + bias[:, :, None, None]


class AdaINResBlock(nn.Module):
    """Residual block whose two norms take their scale and bias from the class code."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3))
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3))

    n_params = property(lambda self: 4 * self.dim)  # (bias, scale) for each of the two norms

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        d = self.dim  # p: (B, 4*dim) laid out as FUNIT's assign_adain_params: mean (bias) first, then std (scale)
        h = F.relu(adain(self.conv1(x), p[:, d : 2 * d], p[:, :d]))
        h = adain(self.conv2(h), p[:, 3 * d : 4 * d], p[:, 2 * d : 3 * d])
        return x + h


class MLP(nn.Module):
    """Class code -> all AdaIN parameters of the decoder."""

    def __init__(self, cin: int, hidden: int, cout: int, blocks: int):
        super().__init__()
        layers: list[nn.Module] = []
        dim = cin
        for _ in range(blocks - 1):
            layers += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
            dim = hidden
        layers.append(nn.Linear(dim, cout))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Decoder(nn.Module):
    """G: content map (B,C,h,w) + class code (B,code) -> image (B,3,S,S) in [-1,1]."""

    def __init__(self, cfg: ModelConfig, content_channels: int):
        super().__init__()
        dim = content_channels
        self.res = nn.ModuleList([AdaINResBlock(dim) for _ in range(cfg.dec_res)])
        self.mlp = MLP(cfg.class_code, cfg.mlp_dim, sum(r.n_params for r in self.res), cfg.mlp_blocks)
        ups: list[nn.Module] = []
        for _ in range(cfg.content_downs):
            nxt = max(dim // 2, 8)
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), conv_block(dim, nxt, 5, norm="in")]
            dim = nxt
        ups += [nn.ReflectionPad2d(3), nn.Conv2d(dim, 3, 7), nn.Tanh()]
        self.up = nn.Sequential(*ups)

    def forward(self, content: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        params = self.mlp(code)  # (B, total AdaIN params)
        x, i = content, 0
        for block in self.res:
            x = block(x, params[:, i : i + block.n_params])
            i += block.n_params
        return self.up(x)


class EncoderDecoder(nn.Module):
    """E_A, E_B and G of a recipe, under the names checkpoints, export and --init-from rely on."""

    def __init__(self, cfg: ModelConfig, content_encoder: nn.Module, class_encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.content_encoder, self.class_encoder, self.decoder = content_encoder, class_encoder, decoder


class Generator(EncoderDecoder):
    """The seed's FUNIT generator; ``mix`` is the one operation cross training needs."""

    def __init__(self, cfg: ModelConfig):
        content = ContentEncoder(cfg)
        super().__init__(cfg, content, ClassEncoder(cfg), Decoder(cfg, content.out_channels))

    def encode_class(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) -> (B,code), or (B,K,3,S,S) -> (B,code) averaged over K."""
        if x.dim() == 5:
            b, k = x.shape[:2]
            return self.class_encoder(x.flatten(0, 1)).view(b, k, -1).mean(dim=1)
        return self.class_encoder(x)

    def mix(self, rest: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """G(E_A(rest), E_B(identity)): the face of ``identity`` in the pose/lighting of ``rest``."""
        return self.decoder(self.content_encoder(rest), self.encode_class(identity))

    def forward(self, rest: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return self.mix(rest, identity)


class ActFirstResBlock(nn.Module):
    """FUNIT's discriminator block: LeakyReLU before each conv, learned 1x1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        hidden = min(cin, cout)
        self.body = nn.Sequential(
            nn.LeakyReLU(0.2), nn.ReflectionPad2d(1), nn.Conv2d(cin, hidden, 3),
            nn.LeakyReLU(0.2), nn.ReflectionPad2d(1), nn.Conv2d(hidden, cout, 3),
        )
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class PatchDiscriminator(nn.Module):
    """Residual patch discriminator (FUNIT's GPPatchMcResDis without the class projection).

    g2g's identities are open-ended, so the discriminator is unconditional: it
    scores every patch real or fake, (B,3,S,S) -> (B,1,h,w).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.disc_dim
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, dim, 7)]
        for _ in range(cfg.disc_blocks):
            nxt = min(dim * 2, cfg.disc_max)
            layers += [ActFirstResBlock(dim, dim), ActFirstResBlock(dim, nxt),
                       nn.ReflectionPad2d(1), nn.AvgPool2d(3, stride=2)]
            dim = nxt
        layers += [ActFirstResBlock(dim, dim), ActFirstResBlock(dim, dim), nn.LeakyReLU(0.2), nn.Conv2d(dim, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
