"""DCGAN (Radford et al., 2015): unconditional, transposed-conv generator, strided-conv discriminator.

Any power-of-two size from 32 to 512 px, 1 or 3 channels. Defaults follow the DCGAN paper
(z 100, 64 base features); the original MedGAN recipe used z 256 at 256 px.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..registry import register_model
from .layers import DCGANGenerator, dcgan_discriminator_stack, dcgan_init_, stage_widths


@dataclass
class DCGANConfig:
    image_size: int = 64  # output side in pixels
    channels: int = 1  # 1 = grayscale MRI
    z_dim: int = 100  # latent size
    g_features: int = 64  # generator width at the highest inner resolution (ngf)
    d_features: int = 64  # discriminator width at full resolution (ndf)
    max_features: int = 512  # width cap at low resolutions


class Generator(DCGANGenerator):
    """z (B, z_dim) -> image (B, C, S, S) in [-1, 1]."""


class Discriminator(nn.Module):
    """image (B, C, S, S) -> real/fake logits (B,)."""

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        widths = stage_widths(config.image_size, config.d_features, config.max_features)
        self.net = dcgan_discriminator_stack(config.channels, widths)
        self.apply(dcgan_init_)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(images).flatten()


@register_model("dcgan", config=DCGANConfig, objective="nonsaturating",
                description="DCGAN: unconditional baseline, BCE non-saturating loss")
def build(config: DCGANConfig) -> tuple[Generator, Discriminator]:
    return Generator(config), Discriminator(config)
