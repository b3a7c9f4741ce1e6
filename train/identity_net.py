"""The identity network shared by the training ID loss, export and ``g2g eval``.

``IdentityNet`` reads g2g's aligned crops as they are ((B, 3, S, S) in [-1, 1],
aligned with ``AlignConfig(size=S, zoom=z).template()``, i.e. dlib's 150 px chip
template zoomed out by z around the centre) and resamples, differentiably, the
region its backbone was trained on: dlib's 150 px chip, exactly (``F.affine_grid``
+ bilinear ``F.grid_sample``, which export to ONNX opset >= 16). Gradients flow
back to the crops, so a generator can be trained against it.

Backbones: ``dlib`` (default; PyTorch port of dlib's ResNet, 128-d, Euclidean
distance, 0.6 threshold) and, when their weights file is present or downloadable,
facenet-pytorch's InceptionResnetV1 ``facenet-vggface2`` / ``facenet-casia-webface``
(512-d, unit norm). facenet was trained on MTCNN box crops (margin 0) resized to
160 px; g2g maps it to the same square as dlib's chip (zoom 1 of the template),
resampled to 160 px, which frames the face like such a box from the eyebrows to
the chin, and standardises pixels as facenet-pytorch does ((x - 127.5) / 128).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2g.faces.distances import DistanceConvention, distance_convention
from g2g.faces.preprocess import DEFAULT_ZOOM
from g2g.weights import WeightsError, locate, verified_sha256

NAMES = ("dlib", "facenet-vggface2", "facenet-casia-webface")
__all__ = ["IdentityNet", "load_identity_net", "distance_convention", "DistanceConvention", "NAMES", "WeightsError"]


class IdentityNet(nn.Module):
    """Aligned crops (B, 3, S, S) in [-1, 1] -> identity embeddings (B, D)."""

    def __init__(self, backbone: nn.Module, name: str, zoom: float, chip: int, chip_zoom: float, dim: int):
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.zoom = float(zoom)  # alignment zoom of the crops this net reads
        self.chip = chip  # side of the backbone's input, px
        self.chip_zoom = float(chip_zoom)  # that input covers chip_zoom x dlib's 150 px chip square
        self.dim = dim
        self.weights_sha256 = ""

    def theta(self, size: int) -> tuple[float, float]:
        """Scale and offset of the crop -> chip affine in grid_sample's normalised coordinates.

        Chip pixel u (pixel centres at integers, like the crops) sits at crop pixel
        (u - chip/2) * r + size/2 with r = chip_zoom * size / (zoom * chip) crop px per
        chip px; in align_corners=False coordinates that is n = (chip_zoom/zoom) * b + (1 - r)/size.
        """
        r = self.chip_zoom * size / (self.zoom * self.chip)
        return self.chip_zoom / self.zoom, (1.0 - r) / size

    def to_chip(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) aligned crops -> (B, 3, chip, chip) backbone chips, same value range."""
        b, _, s, _ = crops.shape
        scale, shift = self.theta(s)
        theta = torch.tensor([[[scale, 0.0, shift], [0.0, scale, shift]]], dtype=crops.dtype, device=crops.device)
        grid = F.affine_grid(theta, [1, 3, self.chip, self.chip], align_corners=False)  # (1, chip, chip, 2)
        return F.grid_sample(crops, grid.expand(b, -1, -1, -1), mode="bilinear", padding_mode="border",
                             align_corners=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = self.to_chip(crops)  # (B, 3, chip, chip) in [-1, 1]
        if self.name == "dlib":
            return self.backbone((x + 1.0) * 127.5)  # dlib reads RGB in 0-255
        return self.backbone(x * (127.5 / 128.0))  # facenet: (p - 127.5) / 128 of p in 0-255

    def train(self, mode: bool = True) -> "IdentityNet":
        """Always eval: a frozen loss network must not switch facenet's dropout or batch norm on."""
        return super().train(False)

    def convention(self) -> DistanceConvention:
        return distance_convention(self.name)


def _facenet(name: str) -> nn.Module:
    from facenet_pytorch import InceptionResnetV1

    path = locate(name)  # WeightsError when absent and not downloadable
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # the training classifier
    net = InceptionResnetV1(pretrained=None, classify=False)
    net.load_state_dict(state)
    return net


def load_identity_net(name: str = "dlib", zoom: float = DEFAULT_ZOOM) -> IdentityNet:
    """A frozen, eval-mode identity network for crops aligned at ``zoom``."""
    if name == "dlib":
        from g2g.train.dlib_resnet import CHIP_SIZE, EMBED_DIM, load_dlib_resnet

        net = IdentityNet(load_dlib_resnet(), name, zoom, CHIP_SIZE, 1.0, EMBED_DIM)
        weights = "dlib-resnet"
    elif name in ("facenet-vggface2", "facenet-casia-webface"):
        net = IdentityNet(_facenet(name), name, zoom, 160, 1.0, 512)
        weights = name
    else:
        raise ValueError(f"unknown identity net {name!r}; choose from {', '.join(NAMES)}")
    net.weights_sha256 = verified_sha256(weights)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
