"""Frozen perceptual distances for L_vgg: shift-tolerant LPIPS (default) or ImageNet VGG19.

Default: the shift-tolerant LPIPS VGG16 of Ghildyal & Liu (ECCV 2022), whose
weights ship inside the PyPI package ``stlpips-pytorch``. Its trunk and its
linear heads were *trained for perceptual similarity* (human 2AFC judgements),
not for ImageNet classification, and it is tolerant to the small misalignments
that a generator's output always has; and it works offline.

The network is rebuilt here from its checkpoint instead of importing
``stlpips_pytorch.stlpips``: that module (and ``models_lpf``) import IPython and
torchsummary at import time for debugging helpers only. The layer layout and
names below follow ``stlpips_pytorch.invariant_networks.vggnet('shift_tolerant')``
exactly, so ``vgg_shift_tolerant.pth`` loads with ``strict=True``; a test checks
the distances against the package's own LPIPS class.

``vgg19``: the classic ImageNet VGG19 feature loss (pix2pixHD weights per layer),
from torchvision's weights when they are cached or downloadable.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2g.config import PERCEPTUAL_NETS
from g2g.errors import G2GError


class PerceptualWeightsError(G2GError):
    """The weights of the chosen perceptual network are not available (one-line message)."""


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect pad 2, [1,2,1]x[1,2,1]/16 depthwise blur, stride 2.

    Zhang's ``Downsample(filt_size=3, pad_more=True)`` as used by the shift-tolerant VGG.
    """

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))  # (C,1,3,3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _shift_tolerant_vgg16_slices() -> nn.ModuleList:
    """VGG16 conv trunk with max-pool(stride 1) + BlurPool instead of max-pool(stride 2), cut at relu1_2..relu5_3."""
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=1), BlurPool(cin)]
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    slices = nn.ModuleList()
    for lo, hi in ((0, 4), (4, 10), (10, 18), (18, 26), (26, 34)):
        s = nn.Sequential()
        for i in range(lo, hi):  # keep the global layer index as the name, as the checkpoint does
            s.add_module(str(i), layers[i])
        slices.append(s)
    return slices


class _Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        for i, s in enumerate(_shift_tolerant_vgg16_slices(), 1):
            self.add_module(f"slice{i}", s)

    def forward(self, x: torch.Tensor, upto: int = 5) -> list[torch.Tensor]:
        feats = []
        for i in range(1, upto + 1):
            x = getattr(self, f"slice{i}")(x)
            feats.append(x)
        return feats  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the first ``upto`` of them)


class _Lin(nn.Module):
    """LPIPS 1x1 head; index 0 is the (eval-time no-op) dropout of the original, so keys read ``model.1.weight``."""

    def __init__(self, cin: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(cin, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ShiftTolerantLPIPS(nn.Module):
    """ST-LPIPS distance: (B,3,S,S), (B,3,S,S) in [-1,1] -> (B,) (0 for identical images)."""

    CHANNELS = (64, 128, 256, 512, 512)

    def __init__(self):
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = _Trunk()
        for i, c in enumerate(self.CHANNELS):
            self.add_module(f"lin{i}", _Lin(c))

    def features(self, x: torch.Tensor, upto: int = 5) -> list[torch.Tensor]:
        """Unit-normalised (over channels) trunk activations of x (B,3,S,S) in [-1,1], of the first ``upto`` slices."""
        x = (x - self.scaling_layer.shift) / self.scaling_layer.scale
        # F.normalize instead of x/(|x|+eps): same values, but a finite gradient where a feature vector is all zero
        return [F.normalize(f, dim=1, eps=1e-10) for f in self.net(x, upto)]

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """Distance (B,) between two lists of ``features`` (lets a caller compute a fixed target's once)."""
        d = 0
        for i, (a, b) in enumerate(zip(fx, fy)):
            d = d + getattr(self, f"lin{i}")((a - b) ** 2).mean(dim=(2, 3))  # (B,1)
        return d.flatten()  # (B,)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


class VGG19Perceptual(nn.Module):
    """ImageNet VGG19 feature L1 at relu1_1..relu5_1, weighted 1/32..1 (pix2pixHD): (B,3,S,S) x2 -> (B,)."""

    CUTS = (2, 7, 12, 21, 30)
    WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.slices = nn.ModuleList(features[lo:hi] for lo, hi in zip((0,) + self.CUTS[:-1], self.CUTS))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[None, :, None, None])
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[None, :, None, None])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x * 0.5 + 0.5 - self.mean) / self.std  # [-1,1] -> ImageNet normalisation
        out = []
        for s in self.slices:
            h = s(h)
            out.append(h)
        return out

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        return sum(w * (a - b).abs().mean(dim=(1, 2, 3)) for w, a, b in zip(self.WEIGHTS, fx, fy))  # (B,)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


def stlpips_weights_path() -> Path:
    """The ST-LPIPS VGG checkpoint inside the installed ``stlpips-pytorch`` package, sha256-verified."""
    from g2g.weights import WeightsError, locate

    try:
        return locate("stlpips-vgg", download=False)
    except WeightsError as e:
        raise PerceptualWeightsError(f"{e}; or use --perceptual vgg19") from None


def load_stlpips() -> ShiftTolerantLPIPS:
    """The ST-LPIPS network: from a packed copy where one is given (g2g.weights.read_packed), else the package's file."""
    from g2g.weights import read_packed

    net = ShiftTolerantLPIPS()
    packed = read_packed("stlpips-vgg")
    if packed is not None:
        state = {k: torch.from_numpy(v) for k, v in packed.items()}
    else:
        state = torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net


def load_vgg19() -> VGG19Perceptual:
    """torchvision's ImageNet VGG19 from the torch hub cache, downloading it if needed and possible."""
    from torchvision.models import VGG19_Weights, vgg19

    from g2g.weights import DOWNLOAD_ENV, downloads_allowed

    url = VGG19_Weights.IMAGENET1K_V1.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cache.is_file() and not downloads_allowed():
        raise PerceptualWeightsError(f"ImageNet VGG19 weights are not cached at {cache} and downloads are off "
                                     f"(--allow-download or {DOWNLOAD_ENV}=1); or use --perceptual stlpips (offline)")
    try:
        state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, weights_only=True, map_location="cpu")
    except Exception as e:
        raise PerceptualWeightsError(
            f"ImageNet VGG19 weights are neither cached at {cache} nor downloadable ({type(e).__name__}); "
            "use --perceptual stlpips (works offline)"
        ) from None
    model = vgg19(weights=None)
    model.load_state_dict(state)
    return VGG19Perceptual(model.features)


def load_perceptual(name: str = "stlpips", device: str | torch.device = "cpu") -> nn.Module:
    """A frozen perceptual distance ``net(x, y) -> (B,)`` for images in [-1,1], in eval mode on ``device``.

    Both networks also offer ``features(x)`` and ``distance(fx, fy)``, so a fixed
    target's features are computed once per step.
    """
    if name == "stlpips":
        net: nn.Module = load_stlpips()
    elif name == "vgg19":
        net = load_vgg19()
    else:
        raise ValueError(f"unknown perceptual network {name!r}; choose from {', '.join(PERCEPTUAL_NETS)}")
    net.requires_grad_(False)
    return net.eval().to(device)
