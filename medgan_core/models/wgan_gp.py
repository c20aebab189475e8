"""WGAN-GP (Gulrajani et al., 2017): Wasserstein loss with a gradient penalty, n_critic critic steps per G step.

Generator as in the original MedGAN recipe (z 256, 32 base features, BatchNorm + ReLU transposed convs, 1 channel). The critic has no
BatchNorm (the penalty is per sample) and no sigmoid: layer norm by default, instance norm or none on request.
Registered twice: ``wgan-gp`` (unconditional) and ``cwgan-gp`` (class-conditional: label embedding in G,
projection in the critic, Miyato & Koyama 2018). Train with ``TrainConfig(n_critic=5, betas=(0.0, 0.9),
lr_g=1e-4, lr_d=1e-4)``; the loss options ``gp_lambda`` (10) and ``drift`` (0) go in ``TrainConfig.loss_options``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..registry import register_model_pair
from .layers import DCGANGenerator, dcgan_discriminator_stack, dcgan_init_, stage_widths


@dataclass
class WGANGPConfig:
    image_size: int = 64  # 64 or 128 (any power of two 32-512)
    channels: int = 1
    z_dim: int = 256  # the original MedGAN recipe
    g_features: int = 32  # the original MedGAN recipe: features_g=32
    d_features: int = 32
    max_features: int = 512
    critic_norm: str = "layer"  # "layer", "instance" or "none": never batch norm in a WGAN-GP critic
    num_classes: int = 0  # 0: unconditional; > 0: conditional (cwgan-gp)
    embed_dim: int = 16  # label embedding concatenated to z when conditional


class Generator(DCGANGenerator):
    """(z (B, z_dim), labels (B,) if conditional) -> image (B, C, S, S) in [-1, 1]."""


class Critic(nn.Module):
    """image (B, C, S, S) [, labels (B,)] -> unbounded scores (B,); projection term when conditional."""

    def __init__(self, config: WGANGPConfig):
        super().__init__()
        self.config = config
        widths = stage_widths(config.image_size, config.d_features, config.max_features)
        stack = dcgan_discriminator_stack(config.channels, widths, norm=config.critic_norm)
        self.features, self.score = stack[:-1], stack[-1]  # (B, W, 4, 4) features, then a 4x4 conv to 1
        self.projection = nn.Embedding(config.num_classes, widths[0]) if config.num_classes else None
        self.apply(dcgan_init_)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(images)  # (B, W, 4, 4)
        scores = self.score(features).flatten()  # (B,)
        if self.projection is not None:
            if labels is None:
                raise ValueError("conditional critic needs labels: D(images, labels)")
            scores = scores + (self.projection(labels) * features.sum(dim=(2, 3))).sum(dim=1)
        return scores


@register_model_pair("wgan-gp", "cwgan-gp", config=WGANGPConfig, objective="wgan-gp",
                     description="WGAN-GP: Wasserstein loss + gradient penalty, n_critic=5, layer-norm critic (the "
                                 "original MedGAN recipe)",
                     conditional_description="Conditional WGAN-GP: label embedding in G, projection critic")
def build(config: WGANGPConfig) -> tuple[Generator, Critic]:
    return Generator(config), Critic(config)
