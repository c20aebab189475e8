"""Blocks shared by several GANs (the DCGAN family; the stage state of growing ones). Model-specific layers stay in
their model file."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

VALID_SIZES = (32, 64, 128, 256, 512)


def stages_from_4px(image_size: int) -> int:
    """Validate a square image side for the DCGAN-style stacks (4x4 doubled up to the size).

    Args:
        image_size: requested side in pixels.
    Returns:
        The number of stride-2 stages between 4 px and ``image_size``.
    Raises:
        ValueError: for sizes that are not a power of two in ``VALID_SIZES``.
    """
    if image_size not in VALID_SIZES:
        raise ValueError(f"image_size={image_size} is not supported; use one of {VALID_SIZES} "
                         "(the models double 4x4 feature maps up to the image size)")
    return image_size.bit_length() - 3  # log2(size) - 2


def stage_widths(image_size: int, base_features: int, max_features: int) -> list[int]:
    """Channel widths at resolutions 4, 8, ..., image_size/2 (widest at 4x4).

    Args:
        image_size: output side.
        base_features: width at the highest inner resolution (``ngf``/``ndf``).
        max_features: cap on the width at low resolutions.
    Returns:
        One width per resolution, from 4x4 upwards.
    """
    n_stages = stages_from_4px(image_size)
    return [min(max_features, base_features * 2 ** (n_stages - 1 - i)) for i in range(n_stages)]


class UpBlock(nn.Sequential):
    """Transposed conv doubling the resolution, then BatchNorm and ReLU (DCGAN generator)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


NORMS = {
    "batch": nn.BatchNorm2d,
    "instance": lambda channels: nn.InstanceNorm2d(channels, affine=True),
    "layer": lambda channels: nn.GroupNorm(1, channels),  # layer norm over (C, H, W)
}


class DownBlock(nn.Sequential):
    """Strided conv halving the resolution, optional normalisation, LeakyReLU 0.2 (DCGAN discriminator).

    ``norm`` is ``"batch"``, ``"instance"``, ``"layer"`` or ``"none"``; a WGAN-GP critic must not use
    ``"batch"`` (the gradient penalty is per sample).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        if norm != "none" and norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; use one of {sorted(NORMS) + ['none']}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=norm == "none")]
        if norm != "none":
            layers.append(NORMS[norm](out_channels))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        super().__init__(*layers)


class LatentInput(nn.Module):
    """z (B, z_dim) [+ label embedding (B, embed_dim)] -> (B, out_features, 1, 1), the input of a DCGAN stack."""

    def __init__(self, z_dim: int, num_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.out_features = z_dim + (embed_dim if num_classes else 0)

    def reset_parameters(self) -> None:
        """Label embedding ~ N(0, 1): the same scale as z."""
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, 0.0, 1.0)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embedding is not None:
            if labels is None:
                raise ValueError("conditional generator needs labels: G(z, labels) with labels of shape (B,)")
            z = torch.cat([z, self.embedding(labels)], dim=1)  # (B, z_dim + embed_dim)
        return z[:, :, None, None]


def dcgan_generator_stack(in_features: int, widths: list[int], channels: int) -> nn.Sequential:
    """(B, in_features, 1, 1) -> (B, channels, S, S) in [-1, 1], S = 8 * 2**(len(widths)-1).

    Args:
        in_features: channels of the 1x1 input (noise, plus label embedding if conditional).
        widths: from :func:`stage_widths`.
        channels: image channels.
    Returns:
        The generator body.
    """
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(in_features, widths[0], 4, stride=1, padding=0, bias=False),  # (B, w0, 4, 4)
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    layers += [UpBlock(w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:])]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, stride=2, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


class DCGANGenerator(nn.Module):
    """z (B, z_dim) [+ labels (B,)] -> image (B, C, S, S) in [-1, 1]: the DCGAN generator of dcgan, cdcgan, wgan-gp.

    Reads ``image_size``, ``channels``, ``z_dim``, ``g_features``, ``max_features`` and, when present,
    ``num_classes`` / ``embed_dim`` (label embedding concatenated to z) from ``config``.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        num_classes = getattr(config, "num_classes", 0)
        self.latent = LatentInput(config.z_dim, num_classes, getattr(config, "embed_dim", 0))
        widths = stage_widths(config.image_size, config.g_features, config.max_features)
        self.net = dcgan_generator_stack(self.latent.out_features, widths, config.channels)
        self.apply(dcgan_init_)
        self.latent.reset_parameters()

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it generates."""
        return self.config.channels, self.config.image_size, self.config.image_size

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.latent(z, labels))  # (B, z_dim [+ embed_dim], 1, 1) -> (B, C, S, S)


@dataclass(frozen=True)
class GrowthStep:
    """Where training stands at one generator step."""

    stage: int  # 0 = the first (ProGAN: 4 px)
    alpha: float  # fade-in of the newest block
    batch_size: int
    stage_start: int  # first generator step of this stage
    resolution: int  # side of this stage's images (ProGAN: 4 * 2**stage)
    total_steps: int  # generator steps of the whole schedule
    lr_scale: float = 1.0  # factor on both learning rates at this step (SinGAN-Seg's decay late in each scale)
    fade_reals: bool = False  # during a fade-in, blend the real images like the fakes (ProGAN)


class Growing(nn.Module):
    """A network trained stage by stage (ProGAN's resolutions, SinGAN-Seg's scales): the current stage and fade-in
    alpha as buffers (saved, so a loaded network runs at the stage it was trained to) mirrored in Python numbers
    (fast). Cooperative: arguments after ``n_stages`` go to the next base class."""

    def __init__(self, n_stages: int, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_stages = n_stages
        self.register_buffer("stage", torch.tensor(n_stages - 1))
        self.register_buffer("alpha", torch.tensor(1.0))
        self._stage, self._alpha = n_stages - 1, 1.0
        self.register_load_state_dict_post_hook(lambda module, keys: module._read_buffers())

    def _read_buffers(self) -> None:
        self._stage, self._alpha = int(self.stage), float(self.alpha)

    def set_growth(self, stage: int, alpha: float) -> None:
        """Run at ``stage`` (0 = the first) with the newest block faded in by ``alpha`` in [0, 1]."""
        if not 0 <= stage < self.n_stages:
            raise ValueError(f"stage must be in 0..{self.n_stages - 1}, got {stage}")
        self._stage, self._alpha = stage, float(alpha)
        self.stage.fill_(stage)
        self.alpha.fill_(alpha)


class MinibatchStdDev(nn.Module):
    """Append the standard deviation across groups of samples as ``num_channels`` extra channels (ProGAN; StyleGAN2's
    version splits the channels into ``num_channels`` groups, one feature each).

    A discriminator that sees how varied a batch is can punish a generator that ignores its noise. The group is the
    largest size up to ``group_size`` that divides the batch.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        group = next(g for g in range(min(self.group_size, batch), 0, -1) if batch % g == 0)
        features = self.num_channels
        grouped = x.float().reshape(group, -1, features, channels // features, height, width)  # (G, B/G, F, C/F, H, W)
        std = grouped.var(dim=0, unbiased=False).add(1e-8).sqrt().mean(dim=(2, 3, 4))  # (B/G, F)
        feature = std.to(x.dtype).repeat(group, 1).view(batch, features, 1, 1).expand(batch, features, height, width)
        return torch.cat([x, feature], dim=1)


def dcgan_discriminator_stack(in_channels: int, widths: list[int], norm: str = "batch",
                              minibatch_std: bool = False) -> nn.Sequential:
    """(B, in_channels, S, S) -> (B, 1, 1, 1) logits; ``widths`` listed from 4x4 upwards as in the generator.

    Args:
        in_channels: image channels (plus label-map channels if conditional).
        widths: from :func:`stage_widths`, reversed internally (narrow at full resolution).
        norm: normalisation of the inner blocks (never on the first layer, as in DCGAN), see :class:`DownBlock`.
        minibatch_std: add a :class:`MinibatchStdDev` channel before the last conv (against mode collapse).
    Returns:
        The discriminator body.
    """
    down = widths[::-1]
    layers: list[nn.Module] = [DownBlock(in_channels, down[0], norm="none")]
    layers += [DownBlock(w_in, w_out, norm) for w_in, w_out in zip(down[:-1], down[1:])]
    if minibatch_std:
        layers.append(MinibatchStdDev())
    layers.append(nn.Conv2d(down[-1] + int(minibatch_std), 1, 4, stride=1, padding=0))  # (B, 1, 1, 1)
    return nn.Sequential(*layers)


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN weight init: N(0, 0.02) for convs, N(1, 0.02) for BatchNorm scales (apply with ``.apply``)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def scaled_leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) times sqrt(2): the gain keeps the activations' second moment (StyleGAN2)."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate, optionally followed by leaky ReLU (gain sqrt 2).

    Args:
        in_features: input size.
        out_features: output size.
        bias_init: initial value of the (effective) bias.
        lr_mul: learning-rate multiplier: weights are stored divided by it and scaled back at run time.
        activation: apply leaky ReLU.
    """

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, (self.weight * self.weight_gain).to(x.dtype), (self.bias * self.lr_mul).to(x.dtype))
        return scaled_leaky_relu(x) if self.activation else x
