"""SinGAN-Seg: one generator pyramid trained on ONE image+mask pair, scale by scale (SinGAN's recipe).

Thambawita et al. 2022 (SinGAN-Seg) train SinGAN (Shaham et al. 2019) on one image with its mask as a last channel,
one pyramid per pair, and use the pyramids to make synthetic pairs. Here the pyramid is Alpha-GAN-GP's
(:mod:`.alpha_gan_gp`: the same scale generators with CBAM, the same flat latent), trained with SinGAN's recipe:

- Scales from ``min_size`` (25) up to the image size, each ``scale_factor`` (0.75) times the next
  (``pyramid_sizes``: 27, 36, 48, 64 at 64 px). SinGAN instead bends its factor so that the coarsest side is
  exactly ``min_size``; the ladder here keeps the factor and stops at the last side >= ``min_size``.
- 5 conv layers per scale, 32 channels doubling every 4 scales up to 128 (``features``, ``blocks``,
  ``max_features``); no self-attention by default (``attention_sizes=()``), CBAM after every conv. As in SinGAN,
  the critics have batch norm too (batch 1: it normalises over positions) and every conv starts from N(0, 0.02),
  every batch-norm scale from N(1, 0.02) (``critic_norm``, ``singan_init``).
- Scale by scale: one growth stage per scale. While scale k trains, scales < k are frozen (no gradient, BatchNorm in
  eval mode) and only scale k's generator and critic are updated; scale k starts as a copy of scale k-1 when their
  widths match (SinGAN), except the generator's output conv, which starts at zero: the new scale's residual is 0,
  so it starts from the upsampled coarser reconstruction (a copy of scale 0, which maps noise to the whole pair with
  tanh saturated at -1 on the black background and outside the mask, added a second pair and stayed stuck there).
  The critic of stage k judges the image at scale k's size only.
- Noise: scale 0 draws its map at amplitude 1; at scale k > 0 the amplitude is ``noise_scale`` (0.1) x the RMSE
  between the upsampled reconstruction of the coarser scales and the real image at that scale, computed when the
  stage begins (``begin_stage``) and kept with the fixed reconstruction noise (scale 0: one random map, finer
  scales: zeros) as buffers, so checkpoints and Hub files carry them.
- Loss (objective ``singan`` in :mod:`medgan_core.losses`): WGAN-GP with lambda 0.1 plus 10 x the MSE of the
  reconstruction, Adam lr 5e-4, betas (0.5, 0.999), both rates x0.1 from 80% of each scale (``lr_decay_at``).
- One SinGAN iteration (3 critic steps, then 3 generator steps) is three steps of the shared loop with
  ``n_critic=1`` (D, G, D, G, D, G: the same counts, interleaved); ``iterations`` per scale (2000 in the paper).
  :func:`train_config` gives these settings; EMA is off there (SinGAN has none).

:func:`pick_pair` takes one pair out of a dataset; :func:`train_pairs` trains one pyramid per pair, each in its own
run folder, skipping finished ones and resuming the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import find_latest_checkpoint, load_checkpoint_meta
from ..config import DataConfig, TrainConfig
from ..data import ImageSet
from ..registry import register_model
from ..train import fit, fit_model_config
from . import alpha_gan_gp
from .alpha_gan_gp import AlphaGANGPConfig, pyramid_sizes
from .layers import Growing, GrowthStep, dcgan_init_

MODEL = "singan-seg"


@dataclass
class SinGANSegConfig(AlphaGANGPConfig):
    min_size: int = 25  # side of the coarsest scale (SinGAN: 25)
    scale_factor: float = 0.75  # side ratio between consecutive scales (SinGAN: 0.75)
    attention_sizes: tuple[int, ...] = ()  # SinGAN has no self-attention
    coarse_noise: int = 0  # channels of scale 0's noise map; 0: as many as the output (SinGAN), so every scale's
                           # input has the same shape and scale 1 can start as a full copy of scale 0
    iterations: int = 2000  # SinGAN iterations per scale (each 3 D + 3 G steps)
    steps_per_iteration: int = 3  # loop steps (D + G each, n_critic 1) per SinGAN iteration
    lr_decay_at: float = 0.8  # share of each scale after which both learning rates are multiplied by lr_decay
    lr_decay: float = 0.1
    noise_scale: float = 0.1  # noise amplitude of scale k > 0 = this x RMSE of the coarser reconstruction
    critic_norm: bool = True  # batch norm in the critics (SinGAN)
    singan_init: bool = True  # SinGAN's weights: convs N(0, 0.02), batch-norm scales N(1, 0.02)

    def __post_init__(self) -> None:
        self.coarse_noise = self.coarse_noise or self.out_channels

    @staticmethod
    def check_data(data: ImageSet, values: dict[str, Any]) -> None:
        """Refuse data that are not one image (+ mask); ``fit`` calls it with the ImageSet and the config values.

        Raises:
            ValueError: for several images, or an image without a mask (unless ``with_mask=False`` was asked for).
        """
        if len(data) != 1:
            raise ValueError(f"{MODEL} trains one pyramid on ONE image+mask pair, but the data hold {len(data)} "
                             f"images: pick one with singan_seg.pick_pair(data, index) (the notebook's pair_index), "
                             f"or train one pyramid per pair with singan_seg.train_pairs(data, out_dir)")
        if data.masks is None and values.get("with_mask") is not False:
            raise ValueError(f"{MODEL} generates an image with its mask, but this image has no mask: load it with "
                             f"DataConfig(masks=True) (<name>_mask.png beside <name>.png, or masks/ beside images/), "
                             f"or pass model_config with_mask=False to train SinGAN on the image alone")


def growth_plan(config: SinGANSegConfig, step: int, n_critic: int = 1) -> GrowthStep:
    """Scale, batch size 1, resolution and learning-rate factor of loop step ``step`` (0-based).

    Each scale lasts ``iterations * steps_per_iteration`` loop steps; from ``lr_decay_at`` of its iterations on,
    both learning rates are multiplied by ``lr_decay`` (SinGAN's MultiStepLR at 1600 of 2000). Steps past the
    schedule stay at the last scale.

    Args:
        config: the model config.
        step: loop (generator) steps done so far.
        n_critic: critic steps per loop step (1 for SinGAN's 3 + 3; more adds critic steps, not loop steps).
    Returns:
        The :class:`~medgan_core.models.layers.GrowthStep`.
    """
    sizes = config.sizes
    per_scale = config.iterations * config.steps_per_iteration
    stage = min(step // per_scale, len(sizes) - 1)
    start = stage * per_scale
    decayed = step - start >= round(config.iterations * config.lr_decay_at) * config.steps_per_iteration
    return GrowthStep(stage, 1.0, 1, start, sizes[stage], len(sizes) * per_scale,
                      config.lr_decay if decayed else 1.0)


@torch.no_grad()
def _start_from_coarser(scales: nn.ModuleList, k: int) -> None:
    """Copy scale ``k - 1``'s tensors into scale ``k`` where their shapes match (equal widths; SinGAN)."""
    previous = scales[k - 1].state_dict()
    for name, tensor in scales[k].state_dict().items():
        if previous[name].shape == tensor.shape:
            tensor.copy_(previous[name])


class Generator(Growing, alpha_gan_gp.Generator):
    """z (B, z_dim) -> image + mask (B, C + 1, s, s) at the current scale's side s (the image size once trained)."""

    def __init__(self, config: SinGANSegConfig):
        super().__init__(len(config.sizes), config)
        del self.noise_amplitude  # computed when each scale's stage begins, not learned
        self.register_buffer("noise_amplitude", torch.ones(len(self.sizes)))
        coarse = config.coarse_noise * self.sizes[0] ** 2
        fixed = torch.cat([torch.randn(coarse), torch.zeros(config.z_dim - coarse)])
        self.register_buffer("reconstruction_noise", fixed[None])  # (1, z_dim): scale 0 random, finer scales 0

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C [+ 1], s, s) at the current scale (a run stopped early generates below the image size)."""
        side = self.sizes[self._stage]
        return self.config.out_channels, side, side

    def train(self, mode: bool = True) -> "Generator":
        super().train(mode)
        for scale in self.scales[:self._stage]:  # trained scales keep BatchNorm's running statistics
            scale.train(False)
        return self

    def scale_outputs(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every scale's output up to the current one, coarse to fine: (B, C + 1, s_k, s_k) each."""
        maps = self.noise_maps(z)
        outputs: list[torch.Tensor] = []
        for k in range(self._stage + 1):
            frozen = self.training and k < self._stage  # no graph through trained scales
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                outputs.append(self.run_scale(k, outputs[-1] if outputs else None, maps[k], labels))
        return outputs

    def reconstruct(self) -> torch.Tensor:
        """(1, C + 1, s, s): the current scale's output from the fixed reconstruction noise."""
        return self(self.reconstruction_noise)

    @torch.no_grad()
    def begin_stage(self, stage: int, real: torch.Tensor) -> None:
        """Before scale ``stage`` trains: start it from the coarser scale and set its noise amplitude to
        ``noise_scale`` x RMSE(upsampled reconstruction of the coarser scales, ``real``) (1 at scale 0).

        Args:
            stage: the scale about to train.
            real: the real image (+ mask) at that scale's side, (B, C + 1, s, s).
        """
        if stage == 0:
            self.noise_amplitude[0] = 1.0
            return
        _start_from_coarser(self.scales, stage)
        tail = self.scales[stage].tail[0]  # the residual starts at 0: the new scale starts as the coarser output
        nn.init.zeros_(tail.weight)
        nn.init.zeros_(tail.bias)
        mode, alpha = self.training, self._alpha
        self.set_growth(stage - 1, 1.0)
        coarser = self.eval().reconstruct()  # trained scales as they will run from now on
        self.set_growth(stage, alpha)
        self.train(mode)
        up = F.interpolate(coarser, size=real.shape[-2:], mode="bilinear", align_corners=False)
        self.noise_amplitude[stage] = self.config.noise_scale * (up - real).square().mean().sqrt()

    @torch.no_grad()
    def generate_from_scale(self, n: int, from_scale: int, seed: int) -> torch.Tensor:
        """SinGAN's generation from scale k: the reconstruction below ``from_scale``, fresh noise from it on.

        Args:
            n: samples.
            from_scale: first scale with fresh noise (0: a free sample; the number of scales: the reconstruction).
            seed: seed of the fresh noise.
        Returns:
            (n, C + 1, s, s) samples.
        """
        return self.generate_from_coarse(self.reconstruction_noise.expand(n, -1), from_scale, seed)


class Critic(Growing, alpha_gan_gp.Critic):
    """image + mask (B, C + 1, s, s) at the current scale's side -> scores (B,) of that scale's critic alone."""

    def __init__(self, config: SinGANSegConfig):
        super().__init__(len(config.sizes), config, norm=config.critic_norm)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.critics[self._stage](images)[0]

    def begin_stage(self, stage: int, real: torch.Tensor) -> None:
        """Start scale ``stage``'s critic from the coarser one (``real`` is not needed)."""
        if stage > 0:
            _start_from_coarser(self.critics, stage)


@register_model(MODEL, config=SinGANSegConfig, objective="singan", growth=growth_plan,
                description="SinGAN-Seg: a pyramid trained scale by scale on ONE image+mask pair (SinGAN's recipe)")
def build(config: SinGANSegConfig) -> tuple[Generator, Critic]:
    if config.num_classes:
        raise ValueError(f"{MODEL} is unconditional (num_classes=0): it learns one image")
    pyramid_sizes(config.image_size, config.min_size, config.scale_factor)  # fails early on impossible sizes
    G, D = Generator(config), Critic(config)
    if config.singan_init:
        G.apply(dcgan_init_)
        D.apply(dcgan_init_)
    return G, D


def train_config(**overrides: Any) -> TrainConfig:
    """SinGAN's loop settings as a :class:`~medgan_core.config.TrainConfig`: batch 1 (the one pair), Adam lr 5e-4
    with betas (0.5, 0.999), n_critic 1, no flips, no EMA; ``overrides`` win.

    Returns:
        The TrainConfig.
    """
    values = dict(batch_size=1, lr_g=5e-4, lr_d=5e-4, betas=(0.5, 0.999), n_critic=1, hflip=False, ema_kimg=0.0)
    return TrainConfig(**{**values, **overrides})


def pick_pair(data: ImageSet, index: int) -> ImageSet:
    """Pair ``index`` of an image+mask dataset as a one-image set (what ``singan-seg`` trains on).

    Args:
        data: images loaded with ``DataConfig(masks=True)`` (without masks: one image, for plain SinGAN).
        index: which pair, 0 .. len(data) - 1 (``data.files[index]`` names it).
    Returns:
        The one-image ImageSet.
    Raises:
        IndexError: for an index outside the set.
    """
    if not 0 <= index < len(data):
        raise IndexError(f"pair index {index} is outside 0..{len(data) - 1}")
    return data.subset([index])


def train_pairs(data: ImageSet, out_dir: str | Path, train: TrainConfig | None = None, *,
                model_config: dict[str, Any] | None = None, data_config: DataConfig | None = None,
                indices: Iterable[int] | None = None) -> pd.DataFrame:
    """SinGAN-Seg's batch mode: one pyramid per pair, each in ``out_dir/pair-<index>``, one after the other.

    A pair whose newest checkpoint has reached the run's length is skipped; an unfinished one resumes exactly from
    its newest checkpoint, so an interrupted batch picks up where it stopped when called again.

    Args:
        data: image+mask pairs (``DataConfig(masks=True)``).
        out_dir: parent folder of the pairs' run folders.
        train: loop settings (default :func:`train_config`).
        model_config: architecture overrides for every pyramid.
        data_config: recorded in every checkpoint.
        indices: pairs to train (default: all).
    Returns:
        One row per pair: index, file, run_dir, status ("trained", "resumed" or "finished before"; ", time budget"
        when ``train.max_minutes`` stopped it: call again to go on), step.
    """
    train = train or train_config()
    rows = []
    for index in range(len(data)) if indices is None else indices:
        pair, run_dir = pick_pair(data, index), Path(out_dir) / f"pair-{index:04d}"
        config = fit_model_config(MODEL, pair, model_config)
        total = train.max_steps if train.max_steps is not None else growth_plan(config, 0).total_steps
        newest = find_latest_checkpoint(run_dir / "checkpoints")
        before = load_checkpoint_meta(newest)["step"] if newest else 0
        if before >= total:
            step, status = before, "finished before"
        else:
            result = fit(MODEL, pair, train, run_dir, model_config=model_config, data_config=data_config)
            step = result.step
            status = ("resumed" if before else "trained") + ("" if result.stopped == "completed" else ", time budget")
        rows.append({"index": index, "file": data.files[index] if data.files else "", "run_dir": str(run_dir),
                     "status": status, "step": step})
    return pd.DataFrame(rows)
