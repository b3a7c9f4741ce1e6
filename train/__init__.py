"""PyTorch side of g2g (folder ``train/``, import name ``g2g.train``): generators, discriminator, identity and
perceptual networks, losses, the training step and loop."""
