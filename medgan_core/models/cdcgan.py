"""Conditional DCGAN (as in the dementia-stage cDCGAN recipe): noise + class embedding -> image; the discriminator sees the
image stacked with a learned spatial label map. BCE-with-logits non-saturating loss, with
separate G/D learning rates (the dementia-stage cDCGAN recipe: G 2e-4, D 5e-5) set in the TrainConfig.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..registry import register_model
from .layers import DCGANGenerator, dcgan_discriminator_stack, dcgan_init_, stage_widths


@dataclass
class ConditionalDCGANConfig:
    num_classes: int = 4  # e.g. 4 tumour types or 4 dementia stages
    image_size: int = 128  # the dementia-stage cDCGAN recipe trained at 128 px
    channels: int = 1
    z_dim: int = 100  # the dementia-stage cDCGAN recipe: 100
    embed_dim: int = 4  # label embedding concatenated to z (the dementia-stage cDCGAN recipe: 4; 16 let G ignore z, one image per class)
    g_features: int = 64
    d_features: int = 64
    max_features: int = 512
    d_batchnorm: bool = True  # the dementia-stage cDCGAN recipe's D had none; with it samples were sharper in our demo runs
    d_minibatch_std: bool = True  # D sees batch diversity: guards against one image per class


class Generator(DCGANGenerator):
    """(z (B, z_dim), labels (B,)) -> image (B, C, S, S) in [-1, 1]."""


class Discriminator(nn.Module):
    """(image (B, C, S, S), labels (B,)) -> logits (B,); the label enters as an extra (1, S, S) channel."""

    def __init__(self, config: ConditionalDCGANConfig):
        super().__init__()
        self.config = config
        size = config.image_size
        self.label_map = nn.Embedding(config.num_classes, size * size)
        widths = stage_widths(size, config.d_features, config.max_features)
        self.net = dcgan_discriminator_stack(config.channels + 1, widths, norm="batch" if config.d_batchnorm else "none",
                                             minibatch_std=config.d_minibatch_std)
        self.apply(dcgan_init_)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("conditional discriminator needs labels: D(images, labels)")
        size = self.config.image_size
        label_map = self.label_map(labels).view(-1, 1, size, size).to(images.dtype)  # (B, 1, S, S)
        return self.net(torch.cat([images, label_map], dim=1)).flatten()


@register_model("cdcgan", config=ConditionalDCGANConfig, objective="nonsaturating", conditional=True,
                description="Conditional DCGAN: class embedding in G, spatial label map in D (the dementia-stage cDCGAN recipe)")
def build(config: ConditionalDCGANConfig) -> tuple[Generator, Discriminator]:
    return Generator(config), Discriminator(config)
