"""ProGAN (Karras et al., 2018): a generator and critic that grow 4 -> 8 -> ... -> image_size during training.

Equalised learning rate (weights ~ N(0, 1) scaled at run time by He's constant), PixelNorm in G, a minibatch
standard-deviation channel in the critic, LeakyReLU 0.2, WGAN-GP loss with epsilon drift. Each new resolution
fades in: the output is ``alpha * new + (1 - alpha) * upsampled previous`` with alpha rising 0 -> 1 over
``fade_fraction`` of the stage. The original MedGAN recipe's defaults: z 256, 256 channels, 128 px, batch sizes [32, 32, 32, 16, 16, 16],
lr 1e-3, lambda 10.

One departure from the paper, on by default (``tanh_output``): the blended image goes through tanh. With the
paper's linear output the generator must learn to emit exactly -1 for the black MRI background, and with
equalised lr and zero-padded borders it draws a bright square frame for its first ~1,000 steps on brain MRI; with
tanh the heads appear sooner (fixed 32 px, brain_tumor_mri_small: varied heads by ~1,100 steps instead of ~1,500).
tanh is applied after the fade-in blend, so nearest upsampling still commutes with it (alpha 0 = upsampled
previous stage).

As in the paper since 2026-12-02 (``as_in_paper``): the critic's last layer has equalised lr (gain 1), toRGB layers
use gain 1 (they feed no nonlinearity), and during a fade-in the real images are blended with their
down-and-up-sampled version (``alpha * x + (1 - alpha) * up(avgpool(x))``) as the fakes are. Files saved before then
lack the field and load with ``as_in_paper=False``: a plain ``nn.Linear`` head, toRGB gain sqrt(2), reals not faded,
so they keep generating exactly what they did.

The current stage and alpha are buffers of both networks (saved in checkpoints and Hub files, so a loaded
generator produces images at the resolution it was trained to); :func:`growth_plan` tells the training loop
which stage, alpha and batch size a given step uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model
from .layers import EqualLinear, Growing, GrowthStep, MinibatchStdDev, stages_from_4px


@dataclass
class ProGANConfig:
    image_size: int = 128  # final resolution (256 on request)
    channels: int = 1
    z_dim: int = 256  # the original MedGAN recipe
    base_features: int = 256  # channels at 4..32 px (the original MedGAN recipe: IN_CHANNELS 256), halved at each doubling above 32 px
    stage_images: int = 24_000  # real images shown to the critic per stage (the original MedGAN recipe: 30 epochs of ~800)
    fade_fraction: float = 0.5  # share of each stage (after the first) spent fading the new layers in
    stage_batch_sizes: tuple[int, ...] = (32, 32, 32, 16, 16, 16, 8)  # per stage 4, 8, ... px (the original MedGAN recipe)
    tanh_output: bool = True  # False = the paper's linear output (see the module docstring)
    # False: the layers of files saved before 2026-12-02 (they lack the field and load as False; module docstring)
    as_in_paper: bool = field(default=True, metadata={"absent_in_old_files": False})


def _widths(config: ProGANConfig) -> list[int]:
    """Channels at 4, 8, ..., image_size px."""
    n_stages = stages_from_4px(config.image_size) + 1
    return [max(8, config.base_features // max(1, 2 ** (i - 3))) for i in range(n_stages)]


class WSConv2d(nn.Module):
    """Conv with equalised learning rate: weights ~ N(0, 1), multiplied by gain / sqrt(fan_in) in forward (He's gain
    sqrt(2) before a LeakyReLU, 1 for a linear output)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int | None = None,
                 gain: float = math.sqrt(2.0)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit average square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class Generator(Growing):
    """z (B, z_dim) -> image (B, C, R, R), R = 4 * 2**stage, in [-1, 1] (tanh) or roughly so (linear)."""

    def __init__(self, config: ProGANConfig):
        widths = _widths(config)
        super().__init__(len(widths))
        self.config = config
        self.initial = nn.Sequential(PixelNorm(), nn.Unflatten(1, (config.z_dim, 1, 1)))
        self.project = WSConv2d(config.z_dim, widths[0], kernel_size=4, padding=3)  # 1x1 -> 4x4
        self.first = nn.Sequential(nn.LeakyReLU(0.2), PixelNorm(), WSConv2d(widths[0], widths[0]), nn.LeakyReLU(0.2),
                                   PixelNorm())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), WSConv2d(w_in, w_out), nn.LeakyReLU(0.2),
                          PixelNorm(), WSConv2d(w_out, w_out), nn.LeakyReLU(0.2), PixelNorm())
            for w_in, w_out in zip(widths[:-1], widths[1:]))
        rgb_gain = 1.0 if config.as_in_paper else math.sqrt(2.0)
        self.to_image = nn.ModuleList(WSConv2d(w, config.channels, kernel_size=1, gain=rgb_gain) for w in widths)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it generates now: the current stage's resolution (a run stopped early by its
        time budget generates below ``config.image_size``)."""
        side = 4 * 2 ** self._stage
        return self.config.channels, side, side

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.first(self.project(self.initial(z)))  # (B, w0, 4, 4)
        previous = x
        for block in self.blocks[:self._stage]:
            previous, x = x, block(x)
        image = self.to_image[self._stage](x)
        if self._stage > 0 and self._alpha < 1:
            faded = F.interpolate(self.to_image[self._stage - 1](previous), scale_factor=2, mode="nearest")
            image = self._alpha * image + (1 - self._alpha) * faded
        return torch.tanh(image) if self.config.tanh_output else image


class Discriminator(Growing):
    """Critic: image (B, C, R, R) at the current stage's resolution -> scores (B,)."""

    def __init__(self, config: ProGANConfig):
        widths = _widths(config)
        super().__init__(len(widths))
        self.config = config
        self.from_image = nn.ModuleList(nn.Sequential(WSConv2d(config.channels, w, kernel_size=1), nn.LeakyReLU(0.2))
                                        for w in widths)
        # blocks[i] takes resolution index i + 1 down to i
        self.blocks = nn.ModuleList(
            nn.Sequential(WSConv2d(w_hi, w_hi), nn.LeakyReLU(0.2), WSConv2d(w_hi, w_lo), nn.LeakyReLU(0.2),
                          nn.AvgPool2d(2))
            for w_lo, w_hi in zip(widths[:-1], widths[1:]))
        score = EqualLinear(widths[0], 1) if config.as_in_paper else nn.Linear(widths[0], 1)
        self.final = nn.Sequential(MinibatchStdDev(), WSConv2d(widths[0] + 1, widths[0]), nn.LeakyReLU(0.2),
                                   WSConv2d(widths[0], widths[0], kernel_size=4, padding=0), nn.LeakyReLU(0.2),
                                   nn.Flatten(), score)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        stage = self._stage
        x = self.from_image[stage](images)
        if stage > 0:
            x = self.blocks[stage - 1](x)
            if self._alpha < 1:
                faded = self.from_image[stage - 1](F.avg_pool2d(images, 2))
                x = self._alpha * x + (1 - self._alpha) * faded
            for block in reversed(self.blocks[:stage - 1]):
                x = block(x)
        return self.final(x).flatten()


def growth_plan(config: ProGANConfig, step: int, n_critic: int = 1) -> GrowthStep:
    """Stage, alpha and batch size of generator step ``step`` (0-based).

    Each stage lasts ``ceil(stage_images / (batch_size * n_critic))`` generator steps; stages after the first fade
    their new block in over the first ``fade_fraction`` of them. Steps past the schedule stay at the last stage.

    Args:
        config: the model config (image size, stage_images, fade_fraction, stage_batch_sizes).
        step: generator steps done so far.
        n_critic: critic batches per generator step.
    Returns:
        The :class:`GrowthStep`.
    """
    batch_sizes = [config.stage_batch_sizes[min(s, len(config.stage_batch_sizes) - 1)]
                   for s in range(len(_widths(config)))]
    lengths = [math.ceil(config.stage_images / (b * n_critic)) for b in batch_sizes]
    starts = [sum(lengths[:s]) for s in range(len(lengths))]
    stage = max(s for s in range(len(lengths)) if starts[s] <= step)
    fade = max(1, int(lengths[stage] * config.fade_fraction))
    alpha = 1.0 if stage == 0 else min(1.0, (step - starts[stage] + 1) / fade)
    return GrowthStep(stage, alpha, batch_sizes[stage], starts[stage], 4 * 2 ** stage, sum(lengths),
                      fade_reals=config.as_in_paper)


@register_model("progan", config=ProGANConfig, objective="wgan-gp", growth=growth_plan,
                description="ProGAN: growing 4 px -> image_size with fade-in, equalised lr, PixelNorm, minibatch std")
def build(config: ProGANConfig) -> tuple[Generator, Discriminator]:
    return Generator(config), Discriminator(config)
