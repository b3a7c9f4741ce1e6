"""The GAN term's discriminators: FUNIT's patch discriminator and the projected one (heads on frozen VGG16)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import celeba

torch = pytest.importorskip("torch")


def _projected():
    from g2g.train.perceptual import load_stlpips
    from g2g.train.projected_disc import ProjectedDiscriminator

    return ProjectedDiscriminator(load_stlpips())


def test_the_projected_discriminator_trains_and_saves_only_its_heads_and_passes_gradients_to_its_input():
    torch.manual_seed(0)
    d = _projected().train()
    trunk = {k: v.clone() for k, v in d._trunk.state_dict().items()}
    assert d._trunk.training is False  # the frozen trunk stays in eval mode
    assert all(k.startswith("heads.") for k in d.state_dict())  # a checkpoint holds no VGG weights
    assert sum(p.numel() for p in d.parameters()) < 200_000  # the heads only (the trunk has 14.7 M)
    x = torch.rand(2, 3, 64, 64, requires_grad=True) * 2 - 1
    x.retain_grad()
    opt = torch.optim.Adam(d.parameters(), 1e-2)
    logits = d(x)
    assert logits.shape[0] == 2 and logits.ndim == 2
    before = [p.detach().clone() for p in d.parameters()]
    opt.zero_grad()
    logits.mean().backward()
    opt.step()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the generator gets a gradient through the trunk
    assert any((p.detach() - b).abs().max() > 0 for p, b in zip(d.parameters(), before))
    assert all(torch.equal(trunk[k], v) for k, v in d._trunk.state_dict().items())  # the trunk never trains


def _blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from g2g.train.appearance_model import HighPass

    return x - HighPass(sigma)(x)  # its Gaussian low-pass


def test_the_projected_discriminator_tells_a_soft_face_from_a_photo_after_steps_where_a_patch_one_cannot(one_thread):
    """The reason it exists: a face slightly softer than a photograph (what an early generator draws) is told apart
    on people it never saw after 30 steps of batch 4; FUNIT's patch discriminator, trained from scratch the same
    way, is still near chance."""
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from g2g.config import model_preset
    from g2g.train import losses as L
    from g2g.train.projected_disc import build_discriminator

    photos = celeba(48, 1)
    faces = np.stack([np.asarray(Image.fromarray(img[20:198]).resize((64, 64), Image.BILINEAR)) for _, img in photos])
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    train, held_out = x[:32], x[32:]  # different people
    auc = {}
    for kind in ("patch", "projected"):
        torch.manual_seed(0)
        d = build_discriminator(kind, model_preset("refiner", image_size=64), torch.device("cpu"), None)
        opt = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
        for _ in range(30):
            real, soft = train[torch.randint(0, 32, (4,))], _blurred(train[torch.randint(0, 32, (4,))], 0.7)
            logits = d(torch.cat([real, soft]))
            l_real, l_fake = L.d_gan_loss(logits[:4], logits[4:])
            opt.zero_grad()
            L.discriminator_loss(l_real, l_fake, 0.2).backward()
            opt.step()
        with torch.no_grad():
            scores = torch.cat([d(held_out).flatten(1).mean(1), d(_blurred(held_out, 0.7)).flatten(1).mean(1)])
        auc[kind] = roc_auc_score(np.r_[np.ones(16), np.zeros(16)], scores.numpy())
    assert auc["projected"] > 0.8 and auc["projected"] > auc["patch"] + 0.15, auc
