"""PyTorch side of g2g (folder ``train/``, import name ``g2g.train``): generators, discriminator, identity and
perceptual networks, losses, the training recipes (``g2g.train.recipes``), the training step and loop."""

from g2g.errors import G2GError


class TrainError(G2GError):
    """A training run cannot start or continue (one-line message for the user)."""
