"""Alpha-GAN-GP: a multi-scale (SinGAN-style) generator pyramid with attention that makes an image and its mask.

The Alpha-GAN-GP recipe (WGAN-GP + attention + a SinGAN-Seg pyramid), written from the papers: SinGAN (Shaham et
al. 2019) for the pyramid, CBAM (Woo et al. 2018) for channel and spatial attention, SAGAN (Zhang et al. 2019) for
self-attention, WGAN-GP (Gulrajani et al. 2017) for the loss.

- The pyramid runs from ``min_size`` px up to the image size, each scale ``scale_factor`` times the next
  (``pyramid_sizes``: 16, 32, 64 at 64 px with the default 0.5; 0.75 gives SinGAN's finer ladder).
- Scale 0 turns a noise map into a coarse image; every later scale upsamples the coarser output, adds its own
  fresh noise (times a learned amplitude) and adds a residual computed from that: ``x_k = up(x_{k-1}) +
  G_k(up(x_{k-1}) + a_k n_k)``. Each single-scale generator is a stack of conv blocks with CBAM after each, and
  SAGAN self-attention (gamma starting at 0) at the sizes in ``attention_sizes``.
- All the noise maps of one sample are one flat latent of ``config.z_dim`` numbers (scale 0's map first), so seeds,
  interpolation and the training loop work as for every other model, and :meth:`Generator.generate_from_coarse`
  keeps a sample's coarse scales while redrawing the finer ones.
- One critic per scale sees the image (+ mask) downsampled to its size; the scores add up. Critics carry CBAM and
  no batch norm (it would break the per-sample gradient penalty).
- ``with_mask`` (default: whenever the data were loaded with masks): one more output channel, the mask in [-1, 1]
  (> 0 is inside), generated and judged together with the image.
- Trained jointly (all scales in every step, on batches of the whole dataset) by the shared loop with the
  ``wgan-gp`` objective: n_critic 5, Adam (0, 0.9), lambda 10 (``TrainConfig(n_critic=5, betas=(0.0, 0.9))``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model_pair


@dataclass
class AlphaGANGPConfig:
    image_size: int = 64
    channels: int = 1  # image channels (the mask, if any, is one more)
    with_mask: bool = False  # also generate the segmentation mask (fit sets it when the data have masks)
    num_classes: int = 0  # > 0: class-conditional (label embedding as input channels at every scale)
    min_size: int = 16  # side of the coarsest scale
    scale_factor: float = 0.5  # side ratio between consecutive scales (SinGAN: ~0.75)
    features: int = 32  # conv width at the coarsest scale; doubles every 4 scales (SinGAN)
    max_features: int = 128
    blocks: int = 5  # conv layers per scale, head and tail included (SinGAN: 5)
    coarse_noise: int = 8  # channels of scale 0's noise map
    attention_sizes: tuple[int, ...] = (16, 32)  # scales with SAGAN self-attention (its cost grows as side^4)
    embed_dim: int = 8  # label embedding channels when conditional

    @property
    def sizes(self) -> list[int]:
        """Side of every scale, coarse to fine."""
        return pyramid_sizes(self.image_size, self.min_size, self.scale_factor)

    @property
    def out_channels(self) -> int:
        return self.channels + int(self.with_mask)

    @property
    def z_dim(self) -> int:
        """Numbers in one sample's noise: scale 0's map, then one map per finer scale."""
        sizes = self.sizes
        return self.coarse_noise * sizes[0] ** 2 + sum(self.out_channels * s * s for s in sizes[1:])


def pyramid_sizes(image_size: int, min_size: int, scale_factor: float) -> list[int]:
    """The pyramid's scale sides, coarse to fine: ``image_size`` times ``scale_factor**k`` (rounded) down to the
    last one >= ``min_size``.

    Raises:
        ValueError: for a factor outside (0, 1) or ``min_size`` above the image size.
    """
    if not 0 < scale_factor < 1:
        raise ValueError(f"scale_factor must be between 0 and 1, got {scale_factor}")
    if not 4 <= min_size <= image_size:
        raise ValueError(f"min_size must be between 4 and image_size={image_size}, got {min_size}")
    sizes = [image_size]
    while round(sizes[-1] * scale_factor) >= min_size:
        sizes.append(round(sizes[-1] * scale_factor))
    return sizes[::-1]


# ------------------------------------------------------------------------------------------------------ attention

class ChannelAttention(nn.Module):
    """CBAM's channel gate: a shared MLP over the average- and max-pooled features, sigmoid, per channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 1, 1) weights in (0, 1)."""
        return torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialAttention(nn.Module):
    """CBAM's spatial gate: a 7x7 conv over the channel-wise max and mean, sigmoid, per position."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) weights in (0, 1)."""
        return torch.sigmoid(self.conv(torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Sequential):
    """Channel attention, then spatial attention (Woo et al. 2018); the shape is unchanged."""

    def __init__(self, channels: int):
        super().__init__(ChannelAttention(channels), SpatialAttention())


class SelfAttention(nn.Module):
    """SAGAN self-attention: every position attends to every other; ``gamma`` starts at 0, so the block starts as
    the identity and the network learns how much global context to mix in."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query, self.key = nn.Conv2d(channels, inner, 1), nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        key = self.key(x).flatten(2)  # (B, C/8, N)
        attention = torch.softmax(query @ key, dim=-1)  # (B, N, N): row i = where position i looks
        mixed = self.value(x).flatten(2) @ attention.transpose(1, 2)  # (B, C, N)
        return x + self.gamma * mixed.view(batch, channels, height, width)


# ------------------------------------------------------------------------------------------------------ networks

def scale_width(config: AlphaGANGPConfig, scale: int) -> int:
    """Conv width of scale ``scale``: ``features``, doubling every 4 scales, at most ``max_features`` (SinGAN)."""
    return min(config.features * 2 ** (scale // 4), config.max_features)


def _body(width: int, blocks: int, size: int, config: AlphaGANGPConfig, norm: bool) -> nn.Sequential:
    """``blocks - 2`` conv layers, each followed by CBAM; self-attention after them at the attention sizes."""
    layers: list[nn.Module] = []
    for _ in range(max(blocks - 2, 1)):
        layers += [nn.Conv2d(width, width, 3, padding=1)]
        layers += [nn.BatchNorm2d(width)] if norm else []
        layers += [nn.LeakyReLU(0.2), CBAM(width)]
    if size in config.attention_sizes:
        layers.append(SelfAttention(width))
    return nn.Sequential(*layers)


class ScaleGenerator(nn.Module):
    """One scale: (B, in, s, s) -> (B, out, s, s) in [-1, 1] (tanh): head conv, attentive body, tail conv."""

    def __init__(self, in_channels: int, out_channels: int, width: int, size: int, config: AlphaGANGPConfig):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2))
        self.body = _body(width, config.blocks, size, config, norm=True)
        self.tail = nn.Sequential(nn.Conv2d(width, out_channels, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))


class Generator(nn.Module):
    """(z (B, z_dim), labels (B,) if conditional) -> image [+ mask] (B, C [+ 1], S, S)."""

    def __init__(self, config: AlphaGANGPConfig):
        super().__init__()
        self.config = config
        self.sizes = config.sizes
        extra = config.embed_dim if config.num_classes else 0
        self.embedding = nn.Embedding(config.num_classes, config.embed_dim) if config.num_classes else None
        out = config.out_channels
        self.scales = nn.ModuleList(
            ScaleGenerator((config.coarse_noise if k == 0 else out) + extra, out, scale_width(config, k), size, config)
            for k, size in enumerate(self.sizes))
        self.noise_amplitude = nn.Parameter(torch.full((len(self.sizes),), 0.1))  # learned, per scale (scale 0 unused)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.config.out_channels, self.config.image_size, self.config.image_size)

    def noise_maps(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The flat latents (B, z_dim) as one noise map per scale, coarse to fine."""
        shapes = [(self.config.coarse_noise, self.sizes[0])] + [(self.config.out_channels, s) for s in self.sizes[1:]]
        maps, start = [], 0
        for channels, size in shapes:
            maps.append(z[:, start:start + channels * size * size].reshape(-1, channels, size, size))
            start += channels * size * size
        return maps

    def latent_slice(self, scale: int) -> slice:
        """Where scale ``scale``'s noise lies in the flat latent."""
        maps = self.noise_maps(torch.zeros(1, self.config.z_dim))
        start = sum(m.numel() for m in maps[:scale])
        return slice(start, start + maps[scale].numel())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale_outputs(z, labels)[-1]

    def scale_outputs(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every scale's output, coarse to fine: (B, C [+ 1], s_k, s_k) each; the last is the sample."""
        maps = self.noise_maps(z)
        if self.embedding is not None and labels is None:
            raise ValueError("conditional generator needs labels: G(z, labels)")
        outputs: list[torch.Tensor] = []
        for k, noise in enumerate(maps):
            outputs.append(self.run_scale(k, outputs[-1] if outputs else None, noise, labels))
        return outputs

    def run_scale(self, k: int, coarser: torch.Tensor | None, noise: torch.Tensor,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scale ``k``'s output: scale 0 turns its noise map into an image; a finer scale upsamples the ``coarser``
        output and adds the residual it computes from that plus its amplitude times ``noise``.

        Args:
            k: the scale.
            coarser: scale ``k - 1``'s output (B, C [+ 1], s_{k-1}, s_{k-1}); None for scale 0.
            noise: scale ``k``'s noise map, from :meth:`noise_maps`.
            labels: class labels when conditional.
        Returns:
            (B, C [+ 1], s_k, s_k).
        """
        if coarser is not None:
            up = F.interpolate(coarser, size=noise.shape[-2:], mode="bilinear", align_corners=False)
            inputs = up + self.noise_amplitude[k] * noise
        else:
            inputs = noise
        if self.embedding is not None:
            inputs = torch.cat([inputs, self.embedding(labels)[:, :, None, None].expand(-1, -1, *noise.shape[-2:])],
                               dim=1)
        return up + self.scales[k](inputs) if coarser is not None else self.scales[k](inputs)

    @torch.no_grad()
    def generate_from_coarse(self, z: torch.Tensor, from_scale: int, seed: int,
                             labels: torch.Tensor | None = None) -> torch.Tensor:
        """Keep the layout of ``z``'s scales below ``from_scale`` and redraw the noise of every finer scale.

        Args:
            z: (B, z_dim) latents fixing the coarse layout.
            from_scale: first scale to redraw (0 redraws everything; ``len(sizes)`` redraws nothing).
            seed: seed of the new fine noise.
            labels: class labels when conditional.
        Returns:
            (B, C [+ 1], S, S) images.
        """
        if not 0 <= from_scale <= len(self.sizes):
            raise ValueError(f"from_scale must be between 0 and {len(self.sizes)}, got {from_scale}")
        fresh = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)).to(z.device)
        start = self.latent_slice(from_scale).start if from_scale < len(self.sizes) else z.shape[1]
        mixed = torch.cat([z[:, :start], fresh[:, start:]], dim=1)
        return self(mixed, labels)


class ScaleCritic(nn.Module):
    """One scale's critic: head conv, attentive body, 1-channel tail, averaged over positions. No batch norm by
    default (it would mix the samples of a batch in the gradient penalty); ``norm`` adds it after every inner conv,
    as SinGAN's critic of one image (batch 1) has."""

    def __init__(self, in_channels: int, width: int, size: int, config: AlphaGANGPConfig, norm: bool = False):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), *([nn.BatchNorm2d(width)] if norm else []),
                                  nn.LeakyReLU(0.2))
        self.body = _body(width, config.blocks, size, config, norm=norm)
        self.tail = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B,), pooled features (B, width))."""
        features = self.body(self.head(x))
        return self.tail(features).mean((1, 2, 3)), features.mean((2, 3))


class Critic(nn.Module):
    """image [+ mask] (B, C [+ 1], S, S) [, labels] -> scores (B,): the sum of every scale's critic on the input
    resized to its scale (area), plus a projection term per scale when conditional. ``norm``: batch norm in every
    critic (see :class:`ScaleCritic`)."""

    def __init__(self, config: AlphaGANGPConfig, norm: bool = False):
        super().__init__()
        self.config = config
        self.sizes = config.sizes
        self.critics = nn.ModuleList(ScaleCritic(config.out_channels, scale_width(config, k), size, config, norm)
                                     for k, size in enumerate(self.sizes))
        self.projections = nn.ModuleList(nn.Embedding(config.num_classes, scale_width(config, k))
                                         for k in range(len(self.sizes))) if config.num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.projections is not None and labels is None:
            raise ValueError("conditional critic needs labels: D(images, labels)")
        total = images.new_zeros(images.shape[0])
        for k, (critic, size) in enumerate(zip(self.critics, self.sizes)):
            resized = images if size == images.shape[-1] else F.interpolate(images, size=(size, size), mode="area")
            scores, features = critic(resized)
            total = total + scores
            if self.projections is not None:
                total = total + (self.projections[k](labels) * features).sum(1) / math.sqrt(features.shape[1])
        return total


@register_model_pair("alpha-gan-gp", "calpha-gan-gp", config=AlphaGANGPConfig, objective="wgan-gp",
                     description="Alpha-GAN-GP: multi-scale generator pyramid with CBAM + self-attention, image + "
                                 "mask, WGAN-GP",
                     conditional_description="Conditional Alpha-GAN-GP: label channels at every scale, projection "
                                             "critics")
def build(config: AlphaGANGPConfig) -> tuple[Generator, Critic]:
    pyramid_sizes(config.image_size, config.min_size, config.scale_factor)  # fails early on impossible sizes
    return Generator(config), Critic(config)
