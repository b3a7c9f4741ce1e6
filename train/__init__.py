"""PyTorch side of g2g: generator, discriminator, identity and perceptual networks, losses, trainer."""
