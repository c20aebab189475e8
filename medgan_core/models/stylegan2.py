"""StyleGAN2 (Karras et al., 2020), unconditional (``stylegan2``) and class-conditional (``cstylegan2``).

Karras, Laine, Aittala, Hellsten, Lehtinen, Aila, "Analyzing and Improving the Image Quality of StyleGAN",
CVPR 2020 (arXiv:1912.04958), configured as in stylegan2-ada (Karras et al., "Training Generative Adversarial
Networks with Limited Data", NeurIPS 2020, arXiv:2006.06676): its ``auto`` network is the default here.

Generator: a mapping network (z normalised, ``mapping_layers`` fully connected layers at 1/100 learning rate)
turns z into a style vector w; a synthesis network starts from a learned 4x4 constant and, per resolution, runs
two modulated 3x3 convs (the first upsamples x2 with the [1, 3, 3, 1] FIR filter), each followed by per-pixel
noise, bias and leaky ReLU. Modulation scales the conv weight per input channel by ``affine(w)``; demodulation
rescales each output channel to unit L2 weight norm. A modulated 1x1 toRGB at every resolution feeds an image that
is upsampled and summed ("skip" generator); the output is linear (no tanh), as in the paper. Discriminator:
residual blocks (two 3x3 convs, the second downsampling, plus a 1x1 downsampled skip, summed and scaled by
1/sqrt(2)), then minibatch standard deviation, a 3x3 conv and two fully connected layers at 4x4. Every layer uses
the equalised learning rate (weights ~ N(0, 1), scaled at run time by ``lr_mul / sqrt(fan_in)``). The conditional
model adds a class embedding to the mapping input and makes D a projection discriminator (Miyato and Koyama,
2018, arXiv:1802.05637): the label is mapped to ``cmap_dim`` features that are dotted with D's last layer.

Departures from stylegan2-ada:

- Pure PyTorch: the FIR up/downsampling (``upfirdn2d``) is a depthwise conv, so no custom CUDA ops; no fp16
  layers or conv clamping (run it under ``torch.autocast`` instead: demodulation and the style arithmetic stay in
  float32, images and D logits come out in float32).
- The conditional generator also tracks a per-class average w (``w_avg_class``) and truncation pulls towards the
  class average (ada pulls every class towards the global one, so low psi drifts towards an all-class average).
- D's label mapping has ``mapping_layers`` layers (ada: 8); the class embedding is an ``nn.Embedding`` (ada: a
  fully connected layer on the one-hot label, the same function once normalised).
- Style mixing is per batch, as in ada: with probability ``style_mixing_prob`` the whole batch switches to a
  second latent at one random layer; the second latent does not update ``w_avg``.

Cost at 64 px, 1 channel (measured 2026-12-02 on the 2-core CPU build machine, torch 2.14; forward GFLOP per
image counted by ``torch.utils.flop_counter``):

    preset  G params  D params  forward GFLOP G / D  fit("stylegan2") training, batch 32
    paper   22.2 M    23.4 M    15.3 / 15.8          ~0.15 img/s (bench_stylegan2.py --quick, 1 thread, shared CPU)
    cpu      0.76 M    0.88 M    0.12 / 0.12         37.7 img/s (2 threads, idle machine; augment "none")

A ``paper`` step costs ~130x the FLOPs of a ``cpu`` step: on a 2-core CPU the ``paper`` network sees ~500 images in an
hour, the ``cpu`` one ~135,000. An intermediate width (channel_base 4096: 128 channels up to 32 px, 64 at 64 px)
trained at 5.3 img/s. On CPU the unfused modulated conv trains faster than the fused one (the fused form builds a
(B, O, I, 3, 3) weight per layer); both compute the same function, so ``fused_modconv`` can be switched on a
trained model; the default (None) trains unfused and samples fused, as stylegan2-ada does. Training throughput::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stylegan2.py --parts train   # fit next to a plain loop
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model
from .layers import EqualLinear, MinibatchStdDev, scaled_leaky_relu

VALID_SIZES = (32, 64, 128, 256)
NOISE_MODES = ("auto", "random", "const", "none")
SQRT2 = math.sqrt(2.0)


@dataclass
class StyleGAN2Config:
    """Architecture of the unconditional StyleGAN2; defaults are stylegan2-ada's ``auto`` network at 64 px."""

    image_size: int = 64  # one of VALID_SIZES
    channels: int = 1  # 1 (grayscale MRI) or 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2  # ada `auto`: 2; the paper: 8
    mapping_lr_mul: float = 0.01  # learning-rate multiplier of the mapping network
    w_avg_beta: float = 0.995  # decay of the running average of w (truncation centre)
    channel_base: int = 16384  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    mbstd_group: int = 4  # minibatch-stddev group size (the largest divisor of the batch up to this is used)
    mbstd_channels: int = 1  # minibatch-stddev features
    style_mixing_prob: float = 0.9  # per training batch (see Generator.forward)
    # True: one grouped conv with per-sample weights; False: scale the activations instead (same function);
    # None: stylegan2-ada's rule, unfused while training (1.6x faster to train at `paper` size on CPU), fused in eval
    fused_modconv: bool | None = None
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)  # FIR taps of the x2 up/downsampling

    def __post_init__(self):
        if self.image_size not in VALID_SIZES:
            raise ValueError(f"image_size={self.image_size} is not supported; use one of {VALID_SIZES} "
                             "(StyleGAN2 doubles a 4x4 constant up to the image size)")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels} is not supported; use 1 (grayscale) or 3 (RGB)")
        if self.mapping_layers < 1:
            raise ValueError(f"mapping_layers={self.mapping_layers}; the mapping network needs at least 1 layer")
        if channels_at(self, self.image_size) < 1:
            raise ValueError(f"channel_base={self.channel_base} leaves no channels at {self.image_size} px; "
                             f"use at least {self.image_size}")
        if self.mbstd_channels < 1 or channels_at(self, 4) % self.mbstd_channels:
            raise ValueError(f"mbstd_channels={self.mbstd_channels} must be >= 1 and divide the "
                             f"{channels_at(self, 4)} channels at 4 px")


@dataclass
class ConditionalStyleGAN2Config(StyleGAN2Config):
    """:class:`StyleGAN2Config` plus the classes: G maps (z, label) to w, D is a projection discriminator."""

    num_classes: int = 4  # e.g. 4 tumour types or 4 dementia stages
    embed_dim: int | None = None  # class embedding size in G's mapping input; None = w_dim (as ada)

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes}; a conditional model needs at least 1 class")


PRESETS: dict[str, dict] = {
    # stylegan2-ada `auto` below 512 px: channel_base 0.5 * 32768, mapping 2, minibatch-stddev group 4
    "paper": dict(z_dim=512, w_dim=512, mapping_layers=2, channel_base=16384, channel_max=512, mbstd_group=4),
    # for 2-core CPUs and short runs: 128 channels at 4-8 px, halved at each doubling (16 at 64 px; see the docstring)
    "cpu": dict(z_dim=128, w_dim=128, mapping_layers=2, channel_base=1024, channel_max=128, mbstd_group=4),
}


def stylegan2_preset(name: str, image_size: int) -> dict:
    """Model-config overrides of a named network size.

    Args:
        name: ``"paper"`` (stylegan2-ada's ``auto`` network) or ``"cpu"`` (slim, for laptops and 2-core CPUs).
        image_size: one of ``VALID_SIZES``.
    Returns:
        Field values for :class:`StyleGAN2Config` (or the conditional one), ``image_size`` included.
    Raises:
        ValueError: for an unknown preset or image size.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown StyleGAN2 preset {name!r}; use one of {sorted(PRESETS)}")
    if image_size not in VALID_SIZES:
        raise ValueError(f"image_size={image_size} is not supported; use one of {VALID_SIZES}")
    return {**PRESETS[name], "image_size": image_size}


def recommended_train_settings(image_size: int, batch_size: int) -> dict:
    """Training settings of stylegan2-ada's ``auto`` configuration.

    ada also evaluates R1 every 16 D steps and the path-length penalty (weight 2) every 4 G steps; those are
    options of the ``stylegan2`` objective in ``medgan_core.losses``.

    Args:
        image_size: image side in pixels.
        batch_size: images per step.
    Returns:
        ``lr`` (both networks), Adam ``betas``, ``r1_gamma`` (0.0002 * size^2 / batch) and ``ema_kimg``
        (batch * 10 / 32).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive")
    return {"lr": 0.0025, "betas": (0.0, 0.99), "r1_gamma": 0.0002 * image_size ** 2 / batch_size,
            "ema_kimg": batch_size * 10 / 32}


def channels_at(config: StyleGAN2Config, resolution: int) -> int:
    """Feature channels of both networks at ``resolution`` px: ``min(channel_base // resolution, channel_max)``."""
    return min(config.channel_base // resolution, config.channel_max)


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


def _filter_2d(taps: tuple[int, ...]) -> torch.Tensor:
    """Separable FIR kernel (T, T) from 1-D taps, normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _fir(x: torch.Tensor, kernel: torch.Tensor, pad0: int, pad1: int, stride: int = 1) -> torch.Tensor:
    """Filter every channel of x (B, C, H, W) with ``kernel`` after zero padding (pad0 before, pad1 after)."""
    channels = x.shape[1]
    weight = kernel.to(x.dtype)[None, None].repeat(channels, 1, 1, 1)  # (C, 1, T, T), depthwise
    return F.conv2d(F.pad(x, (pad0, pad1, pad0, pad1)), weight, stride=stride, groups=channels)


def _upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W): insert zeros after every sample, then low-pass (gain 4 keeps the mean)."""
    batch, channels, height, width = x.shape
    x = F.pad(x.reshape(batch, channels, height, 1, width, 1), (0, 1, 0, 0, 0, 1))
    x = x.reshape(batch, channels, 2 * height, 2 * width)
    taps = kernel.shape[-1]
    return _fir(x, kernel * 4, (taps + 1) // 2, (taps - 2) // 2)


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate (same-size output, or halved with ``down``), optional leaky ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel side.
        bias: learn a bias.
        activation: apply leaky ReLU (gain sqrt 2).
        down: halve the resolution: FIR low-pass, then a stride-2 conv (for 1x1, filter and subsample first).
        resample_filter: FIR taps used when ``down``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: bool = False, down: bool = False, resample_filter: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.activation = activation
        self.down = down
        self.register_buffer("kernel", _filter_2d(resample_filter) if down else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        k = self.weight.shape[-1]
        if not self.down:
            x = F.conv2d(x, weight, bias, padding=k // 2)
        elif k == 1:  # (B, I, H, W) -> (B, I, H/2, W/2) -> (B, O, H/2, W/2)
            taps = self.kernel.shape[-1]
            x = F.conv2d(_fir(x, self.kernel, (taps - 1) // 2, (taps - 2) // 2, stride=2), weight, bias)
        else:  # blur with the padding of both steps, then a valid stride-2 conv: (B, I, H, W) -> (B, O, H/2, W/2)
            taps = self.kernel.shape[-1]
            x = _fir(x, self.kernel, k // 2 + (taps - 1) // 2, k // 2 + (taps - 2) // 2)
            x = F.conv2d(x, weight, bias, stride=2)
        return scaled_leaky_relu(x) if self.activation else x


class ModulatedConv2d(nn.Module):
    """Conv whose weights are scaled per sample by a style ``affine(w)`` and optionally demodulated.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel side.
        w_dim: size of w.
        demodulate: rescale each output channel's modulated weights to unit L2 norm (off for toRGB).
        up: double the resolution (transposed stride-2 conv, then FIR low-pass).
        resample_filter: FIR taps used when ``up``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, *,
                 demodulate: bool = True, up: bool = False, resample_filter: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: plain convs at init
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.demodulate = demodulate
        self.up = up
        self.register_buffer("kernel", _filter_2d(resample_filter) if up else None, persistent=False)

    def _styles_and_weight(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(w.device.type, enabled=False):  # styles feed the demodulation: keep float32
            styles = self.affine(w.float())  # (B, I)
        return styles, self.weight.float() * self.weight_gain  # (B, I), (O, I, k, k)

    def _demod_coefficients(self, styles: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # sum over (i, kh, kw) of (w_oi s_i)^2 = sum_i s_i^2 * sum_k w_oik^2, without the (B, O, I, k, k) tensor
        with torch.autocast(styles.device.type, enabled=False):  # a matmul: autocast would make it half precision
            return torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)  # (B, O)

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample conv weights (B, O, I, k, k), float32, for w (B, w_dim)."""
        styles, weight = self._styles_and_weight(w)
        modulated = weight[None] * styles[:, None, :, None, None]
        if self.demodulate:
            modulated = modulated * self._demod_coefficients(styles, weight)[:, :, None, None, None]
        return modulated

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        """(B, I, H, W), w (B, w_dim) -> (B, O, H, W), or (B, O, 2H, 2W) with ``up``.

        ``fused`` folds the batch into conv groups (one conv with per-sample weights); otherwise the input is
        scaled by the styles, convolved with the shared weight and the output scaled by the demodulation
        coefficients: the same function.
        """
        batch, in_channels, height, width = x.shape
        k = self.weight.shape[-1]
        if fused:
            weight = self.modulated_weight(w).to(x.dtype)  # (B, O, I, k, k)
            x = x.reshape(1, batch * in_channels, height, width)  # the batch becomes conv groups
            if self.up:
                weight = weight.transpose(1, 2).reshape(batch * in_channels, -1, k, k)  # (B*I, O, k, k)
                x = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            else:
                x = F.conv2d(x, weight.reshape(-1, in_channels, k, k), padding=k // 2, groups=batch)
            x = x.reshape(batch, -1, *x.shape[2:])  # (B, O, H', W')
        else:
            styles, weight = self._styles_and_weight(w)
            x = x * styles[:, :, None, None].to(x.dtype)
            if self.up:
                x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            else:
                x = F.conv2d(x, weight.to(x.dtype), padding=k // 2)
            if self.demodulate:
                x = x * self._demod_coefficients(styles, weight)[:, :, None, None].to(x.dtype)
        if self.up:  # (B, O, 2H + 1, 2W + 1) -> (B, O, 2H, 2W)
            taps = self.kernel.shape[-1]
            x = _fir(x, self.kernel * 4, (taps + 1) // 2 - k // 2, (taps - 2) // 2 - k // 2 + 1)
        return x


class MappingNetwork(nn.Module):
    """z (B, z_dim) [+ labels (B,)] -> w (B, w_dim): normalised inputs, then an MLP with leaky ReLU.

    Args:
        z_dim: latent size (0 for a label-only mapping, as in the projection discriminator).
        w_dim: output size (and hidden width).
        num_layers: fully connected layers.
        lr_mul: learning-rate multiplier of the layers.
        num_classes: classes embedded (0 = unconditional).
        embed_dim: class embedding size.
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float, num_classes: int = 0,
                 embed_dim: int = 0):
        super().__init__()
        self.z_dim = z_dim
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None  # N(0, 1) init
        in_features = z_dim + (embed_dim if num_classes else 0)
        self.layers = nn.Sequential(*(EqualLinear(in_features if i == 0 else w_dim, w_dim, lr_mul=lr_mul,
                                                  activation=True) for i in range(num_layers)))

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, z_dim) or None when ``z_dim`` is 0, labels (B,) when conditional -> w (B, w_dim), float32."""
        parts = [] if self.z_dim == 0 else [_normalize_2nd_moment(z)]
        if self.embed is not None:
            parts.append(_normalize_2nd_moment(self.embed(labels)))  # same scale as z, whatever embed_dim is
        with torch.autocast(parts[0].device.type, enabled=False):  # cheap, and w (truncation, w_avg) wants float32
            return self.layers(torch.cat(parts, dim=1))  # (B, w_dim)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (upsampling x2 if ``up``), per-pixel noise, bias, leaky ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        w_dim: size of w.
        resolution: output side (size of the constant noise).
        up: double the resolution.
        resample_filter: FIR taps.
        noise_generator: RNG for the constant noise, so it does not depend on (or consume) the global RNG.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool,
                 resample_filter: tuple[int, ...], noise_generator: torch.Generator):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up, resample_filter=resample_filter)
        self.noise_strength = nn.Parameter(torch.zeros(()))  # learned, from 0: noise is used only if it helps
        self.register_buffer("noise_const", torch.randn(resolution, resolution, generator=noise_generator))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, fused: bool) -> torch.Tensor:
        x = self.conv(x, w, fused)  # (B, O, R, R)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)  # (B, 1, R, R)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        return scaled_leaky_relu(x + self.bias.to(x.dtype)[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation, plus bias: features (B, I, R, R) -> image (B, C, R, R), float32."""

    def __init__(self, in_channels: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool) -> torch.Tensor:
        return self.conv(x, w, fused).float() + self.bias[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> images (B, C, S, S): 4x4 constant, two modulated convs per resolution, skip toRGBs.

    Layer ``i`` reads ``ws[:, i]``; each toRGB shares its w with the next resolution's first conv, so
    ``num_ws = 2 * log2(S) - 2``.

    Args:
        config: the model config.
    """

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.fused = config.fused_modconv
        noise_generator = torch.Generator().manual_seed(0)  # const noise: the same for every model, kept as buffers
        layer = dict(resample_filter=config.resample_filter, noise_generator=noise_generator)
        channels4 = channels_at(config, 4)
        self.input = nn.Parameter(torch.randn(channels4, 4, 4))
        self.convs = nn.ModuleList([SynthesisLayer(channels4, channels4, config.w_dim, 4, up=False, **layer)])
        self.to_rgbs = nn.ModuleList([ToRGB(channels4, config.channels, config.w_dim)])
        resolution = 8
        while resolution <= config.image_size:
            in_channels, out_channels = channels_at(config, resolution // 2), channels_at(config, resolution)
            self.convs.append(SynthesisLayer(in_channels, out_channels, config.w_dim, resolution, up=True, **layer))
            self.convs.append(SynthesisLayer(out_channels, out_channels, config.w_dim, resolution, up=False, **layer))
            self.to_rgbs.append(ToRGB(out_channels, config.channels, config.w_dim))
            resolution *= 2
        self.num_ws = len(self.convs) + 1
        self.register_buffer("kernel", _filter_2d(config.resample_filter), persistent=False)

    def forward(self, ws: torch.Tensor, noise_mode: str = "auto") -> torch.Tensor:
        """Render images from styles.

        Args:
            ws: styles (B, num_ws, w_dim).
            noise_mode: ``"random"`` (fresh noise from the global RNG), ``"const"`` (the stored noise),
                ``"none"``, or ``"auto"``: random in training mode, const in eval mode.
        Returns:
            Images (B, C, S, S), float32, linear output (roughly [-1, 1] once trained).
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode={noise_mode!r}; use one of {NOISE_MODES}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must have shape (B, {self.num_ws}, w_dim); got {tuple(ws.shape)}")
        if noise_mode == "auto":
            noise_mode = "random" if self.training else "const"
        fused = (not self.training) if self.fused is None else self.fused
        x = self.input[None].expand(ws.shape[0], -1, -1, -1)  # (B, C4, 4, 4)
        x = self.convs[0](x, ws[:, 0], noise_mode, fused)
        image = self.to_rgbs[0](x, ws[:, 1], fused)  # (B, C, 4, 4)
        for i, to_rgb in enumerate(self.to_rgbs[1:]):
            x = self.convs[2 * i + 1](x, ws[:, 2 * i + 1], noise_mode, fused)  # upsamples x2
            x = self.convs[2 * i + 2](x, ws[:, 2 * i + 2], noise_mode, fused)
            image = _upsample2x(image, self.kernel) + to_rgb(x, ws[:, 2 * i + 3], fused)
        return image


class Generator(nn.Module):
    """StyleGAN2 generator: z (B, z_dim) [+ labels (B,)] -> images (B, C, S, S).

    Conditional when ``config`` has ``num_classes`` (:class:`ConditionalStyleGAN2Config`).

    Args:
        config: the model config.
    """

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        self.num_classes = getattr(config, "num_classes", 0)
        embed_dim = (getattr(config, "embed_dim", None) or config.w_dim) if self.num_classes else 0
        self.mapping_network = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers,
                                              config.mapping_lr_mul, self.num_classes, embed_dim)
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.register_buffer("w_avg", torch.zeros(config.w_dim))  # truncation centre, tracked in training mode
        if self.num_classes:
            self.register_buffer("w_avg_class", torch.zeros(self.num_classes, config.w_dim))  # one per class

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it generates."""
        return self.config.channels, self.config.image_size, self.config.image_size

    def mapping(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0, *,
                update_w_avg: bool = True) -> torch.Tensor:
        """Map latents to styles; in training mode also update the running average(s) of w.

        Args:
            z: latents (B, z_dim).
            labels: classes (B,) int64 for the conditional model; ignored by the unconditional one.
            truncation_psi: ``w = w_avg + psi * (w - w_avg)``, towards the class average when conditional.
            update_w_avg: update the averages (training mode only); off for style mixing's second latent.
        Returns:
            ws (B, num_ws, w_dim): w repeated for every layer.
        Raises:
            ValueError: when a conditional generator gets no labels.
        """
        if self.num_classes and labels is None:
            raise ValueError("conditional generator needs labels: G(z, labels) with labels of shape (B,)")
        if not self.num_classes:
            labels = None
        w = self.mapping_network(z, labels)  # (B, w_dim)
        if self.training and update_w_avg:
            self._track_w_avg(w.detach().float(), labels)
        if truncation_psi != 1:
            centre = (self.w_avg if labels is None else self.w_avg_class[labels]).to(w.dtype)
            w = centre + truncation_psi * (w - centre)
        return w[:, None].repeat(1, self.num_ws, 1)

    @torch.no_grad()
    def _track_w_avg(self, w: torch.Tensor, labels: torch.Tensor | None) -> None:
        beta = self.config.w_avg_beta
        self.w_avg.copy_(w.mean(dim=0).lerp(self.w_avg, beta))  # beta * w_avg + (1 - beta) * batch mean
        if labels is not None:
            one_hot = F.one_hot(labels, self.num_classes).float()  # (B, K); a matmul, deterministic on CUDA
            counts = one_hot.sum(dim=0)  # (K,)
            means = (one_hot.t() @ w) / counts.clamp(min=1)[:, None]  # (K, w_dim)
            updated = means.lerp(self.w_avg_class, beta)
            self.w_avg_class.copy_(torch.where(counts[:, None] > 0, updated, self.w_avg_class))  # present only

    def mix_styles(self, ws_a: torch.Tensor, ws_b: torch.Tensor, cutoff: int) -> torch.Tensor:
        """Layers ``[0, cutoff)`` from ``ws_a``, the rest from ``ws_b`` (coarse from a, fine from b).

        Args:
            ws_a: styles (B, num_ws, w_dim).
            ws_b: styles (B, num_ws, w_dim).
            cutoff: number of layers taken from ``ws_a``, 0..num_ws.
        Returns:
            Mixed styles (B, num_ws, w_dim).
        """
        if not 0 <= cutoff <= self.num_ws:
            raise ValueError(f"cutoff={cutoff} must be in 0..{self.num_ws} (num_ws)")
        return torch.cat([ws_a[:, :cutoff], ws_b[:, cutoff:]], dim=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
                noise_mode: str = "auto") -> torch.Tensor:
        """Generate images; in training mode, with probability ``style_mixing_prob`` per batch, the layers from a
        random cutoff in 1..num_ws-1 onwards use the styles of a second latent (style mixing regularisation).

        Args:
            z: latents (B, z_dim).
            labels: classes (B,) for the conditional model.
            truncation_psi: see :meth:`mapping`.
            noise_mode: see :meth:`SynthesisNetwork.forward`.
        Returns:
            Images (B, C, S, S), float32.
        """
        ws = self.mapping(z, labels, truncation_psi)
        if self.training and self.config.style_mixing_prob > 0 and torch.rand(()) < self.config.style_mixing_prob:
            cutoff = int(torch.randint(1, self.num_ws, ()))  # CPU draws: no device sync
            ws_b = self.mapping(torch.randn_like(z), labels, truncation_psi, update_w_avg=False)
            ws = self.mix_styles(ws, ws_b, cutoff)
        return self.synthesis(ws, noise_mode)


class DiscriminatorBlock(nn.Module):
    """Residual block: (B, I, R, R) -> (B, O, R/2, R/2) = (skip + conv1(conv0(x))) / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, resample_filter: tuple[int, ...]):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation=True)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation=True, down=True,
                                 resample_filter=resample_filter)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True, resample_filter=resample_filter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / SQRT2  # keeps the variance of the sum


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: images (B, C, S, S) [+ labels (B,)] -> logits (B,), float32.

    Conditional when ``config`` has ``num_classes``: a projection discriminator whose last layer gives
    ``cmap_dim`` (= channels at 4 px) features, dotted with the mapped label and divided by sqrt(cmap_dim).

    Args:
        config: the model config.
    """

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        self.num_classes = getattr(config, "num_classes", 0)
        channels4 = channels_at(config, 4)
        self.cmap_dim = channels4 if self.num_classes else 0
        self.from_rgb = EqualConv2d(config.channels, channels_at(config, config.image_size), 1, activation=True)
        resolutions = [config.image_size // 2 ** i for i in range(config.image_size.bit_length() - 3)]  # S..8
        self.blocks = nn.Sequential(*(DiscriminatorBlock(channels_at(config, r), channels_at(config, r // 2),
                                                         config.resample_filter) for r in resolutions))
        self.mbstd = MinibatchStdDev(config.mbstd_group, config.mbstd_channels)
        self.conv = EqualConv2d(channels4 + config.mbstd_channels, channels4, 3, activation=True)
        self.fc = EqualLinear(channels4 * 16, channels4, activation=True)
        self.out = EqualLinear(channels4, self.cmap_dim or 1)
        self.mapping_network = MappingNetwork(0, self.cmap_dim, config.mapping_layers, config.mapping_lr_mul,
                                              self.num_classes, self.cmap_dim) if self.num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Score images (higher = more real).

        Args:
            images: (B, C, S, S), any memory format.
            labels: classes (B,) for the conditional model; ignored by the unconditional one.
        Returns:
            Logits (B,), float32.
        Raises:
            ValueError: when a conditional discriminator gets no labels.
        """
        if self.num_classes and labels is None:
            raise ValueError("conditional discriminator needs labels: D(images, labels) with labels of shape (B,)")
        x = self.blocks(self.from_rgb(images))  # (B, C4, 4, 4)
        x = self.conv(self.mbstd(x))  # (B, C4, 4, 4)
        x = self.out(self.fc(x.flatten(1))).float()  # (B, cmap_dim or 1)
        if self.mapping_network is None:
            return x[:, 0]
        cmap = self.mapping_network(None, labels)  # (B, cmap_dim)
        return (x * cmap.float()).sum(dim=1) / math.sqrt(self.cmap_dim)


@register_model("stylegan2", config=StyleGAN2Config, objective="stylegan2",
                description="StyleGAN2: mapping network, modulated convs, noise, skip G, residual D (Karras 2020)")
def build(config: StyleGAN2Config) -> tuple[Generator, Discriminator]:
    return Generator(config), Discriminator(config)


@register_model("cstylegan2", config=ConditionalStyleGAN2Config, objective="stylegan2", conditional=True,
                description="Conditional StyleGAN2: class embedding in the mapping, projection discriminator")
def build_conditional(config: ConditionalStyleGAN2Config) -> tuple[Generator, Discriminator]:
    return Generator(config), Discriminator(config)
