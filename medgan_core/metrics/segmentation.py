"""Are generated masks any use? Mask realism and the SinGAN-Seg experiment (segmentation usefulness).

- :func:`mask_realism`: the distributions of mask area and centroid, generated vs real (two-sample
  Kolmogorov-Smirnov statistics), the share of mask pixels that lie on tissue, and the share of empty masks.
- :func:`segmentation_usefulness`: a small U-Net trained on (a) real pairs, (b) synthetic pairs only, (c) real +
  synthetic, with the same seeds (paired runs), scored by Dice and IoU on the real test pairs with bootstrap CIs.
  Thambawita et al. 2022 (SinGAN-Seg) ran this experiment; the goal there is (b) >= 0.8 x (a) and (c) >= (a).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import ks_2samp

from ..data import ImageSet, to_float
from ..stats import percentile_interval

SETTINGS = ("real", "synthetic", "real+synthetic")
TISSUE_LEVEL = 10  # uint8 intensity above which a pixel is tissue, not background (MRI backgrounds are ~0)


def dice_score(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice coefficient 2|A n B| / (|A| + |B|) of boolean masks; 1 when both are empty.

    Args:
        predicted: (N, 1, H, W) bool (or 0/1) masks.
        target: the true masks, same shape.
    Returns:
        (N,) float32.
    """
    a, b = predicted.bool().flatten(1), target.bool().flatten(1)
    overlap, total = (a & b).sum(1).float(), (a.sum(1) + b.sum(1)).float()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))


def iou_score(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image intersection over union of boolean masks; 1 when both are empty. (N,) float32."""
    a, b = predicted.bool().flatten(1), target.bool().flatten(1)
    union = (a | b).sum(1).float()
    return torch.where(union > 0, (a & b).sum(1).float() / union.clamp(min=1), torch.ones_like(union))


# ------------------------------------------------------------------------------------------------- mask realism

def _areas_and_centroids(masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mask area as a share of the image (N,), and (row, col) centroids in [0, 1] of the non-empty masks (M, 2)."""
    binary = masks[:, 0] > 127  # (N, H, W)
    areas = binary.flatten(1).float().mean(1)
    rows = torch.linspace(0, 1, binary.shape[1])[None, :, None]
    cols = torch.linspace(0, 1, binary.shape[2])[None, None, :]
    mass = binary.float().sum((1, 2))
    present = mass > 0
    centroids = torch.stack([(binary * rows).sum((1, 2)), (binary * cols).sum((1, 2))], 1)[present]
    return areas.numpy(), (centroids / mass[present, None]).numpy()


def mask_realism(real: ImageSet, synthetic: ImageSet) -> dict[str, float]:
    """How generated masks compare with real ones.

    Args:
        real: real pairs (``masks`` set).
        synthetic: generated pairs (e.g. :func:`medgan_core.sampling.synthetic_set` of an image+mask generator).
    Returns:
        ``area_ks``, ``centroid_row_ks``, ``centroid_col_ks`` (KS statistics: 0 = same distribution, 1 = disjoint),
        ``empty_share_real``/``_synthetic`` and ``on_tissue_real``/``_synthetic`` (share of mask pixels whose image
        pixel is above ``TISSUE_LEVEL``).
    Raises:
        ValueError: when either set has no masks.
    """
    if real.masks is None or synthetic.masks is None:
        raise ValueError("mask_realism needs masks on both sets: DataConfig(masks=True) and an image+mask generator")
    result: dict[str, float] = {}
    (real_areas, real_centres), (fake_areas, fake_centres) = (_areas_and_centroids(s.masks) for s in (real, synthetic))
    result["area_ks"] = float(ks_2samp(real_areas, fake_areas).statistic)
    for axis, name in enumerate(("row", "col")):
        both = len(real_centres) and len(fake_centres)
        result[f"centroid_{name}_ks"] = float(ks_2samp(real_centres[:, axis], fake_centres[:, axis]).statistic) \
            if both else float("nan")
    for label, data in (("real", real), ("synthetic", synthetic)):
        inside = data.masks[:, 0] > 127
        tissue = data.images.float().mean(1) > TISSUE_LEVEL
        result[f"empty_share_{label}"] = float((~inside.flatten(1).any(1)).float().mean())
        result[f"on_tissue_{label}"] = float((inside & tissue).sum() / inside.sum()) if inside.any() else float("nan")
    return result


# -------------------------------------------------------------------------------------------------------- U-Net

class UNet(nn.Module):
    """A small U-Net: ``depth`` 2x downsamplings, widths doubling from ``width``; (B, C, H, W) -> logits (B, 1, H, W)."""

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3):
        super().__init__()
        widths = [width * 2 ** k for k in range(depth + 1)]
        self.down = nn.ModuleList(_double_conv(c_in, c_out) for c_in, c_out in zip([in_channels] + widths, widths))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(depth))
        self.merge = nn.ModuleList(_double_conv(2 * widths[k], widths[k]) for k in range(depth))
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for k in reversed(range(len(self.up))):
            x = self.merge[k](torch.cat([self.up[k](x), skips[k]], dim=1))
        return self.head(x)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@dataclass
class SegmenterConfig:
    """How the usefulness U-Net is trained (the same for every setting and seed)."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    width: int = 16
    depth: int = 3
    max_minutes: float | None = None  # per training run
    device: str = "cpu"


@dataclass
class SegmentationReport:
    """Dice and IoU of one segmenter on the real test pairs, with bootstrap CIs over the test images."""

    dice: float
    dice_ci: tuple[float, float]
    iou: float
    iou_ci: tuple[float, float]
    per_image_dice: np.ndarray = field(repr=False)


def train_segmenter(images: torch.Tensor, masks: torch.Tensor, config: SegmenterConfig, seed: int = 0) -> UNet:
    """Train a :class:`UNet` on image+mask pairs with BCE + soft Dice loss and random horizontal flips.

    Args:
        images: (N, C, H, W) uint8.
        masks: (N, 1, H, W) uint8, 0/255.
        config: the recipe.
        seed: fixes initialisation, order and flips.
    Returns:
        The trained U-Net, in eval mode.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(config.device)
    model = UNet(images.shape[1], config.width, config.depth).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    started = time.monotonic()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            x, y = to_float(images[rows]).to(device), (masks[rows] > 127).float().to(device)
            flip = (torch.rand(len(rows), generator=generator) < 0.5).to(device)[:, None, None, None]
            x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
            logits = model(x)
            probabilities = torch.sigmoid(logits)
            soft_dice = 1 - (2 * (probabilities * y).sum((1, 2, 3)) + 1) / (probabilities.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logits, y) + soft_dice.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes:
            break
    return model.eval()


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *, n_boot: int = 1000,
                       seed: int = 0, batch_size: int = 64) -> SegmentationReport:
    """Dice and IoU (mean over images, predicted mask = probability > 0.5) with percentile-bootstrap CIs.

    Args:
        model: a segmenter returning logits.
        images: (N, C, H, W) uint8 test images.
        masks: (N, 1, H, W) uint8 true masks.
        n_boot: bootstrap resamples of the test images.
        seed: fixes the resamples.
        batch_size: images per forward pass.
    Returns:
        The :class:`SegmentationReport`.
    """
    device = next(model.parameters()).device
    predicted = torch.cat([model(to_float(images[i:i + batch_size]).to(device)).cpu() > 0
                           for i in range(0, len(images), batch_size)])
    dice, iou = dice_score(predicted, masks > 127), iou_score(predicted, masks > 127)
    rows = torch.randint(len(images), (n_boot, len(images)), generator=torch.Generator().manual_seed(seed))
    return SegmentationReport(float(dice.mean()), percentile_interval(dice[rows].mean(1)), float(iou.mean()),
                              percentile_interval(iou[rows].mean(1)), dice.numpy())


def segmentation_usefulness(real_train: ImageSet, real_test: ImageSet, synthetic: ImageSet, *,
                            seeds: Sequence[int] = (0, 1), config: SegmenterConfig | None = None,
                            n_boot: int = 1000) -> pd.DataFrame:
    """The SinGAN-Seg experiment: one U-Net recipe trained on real, synthetic, and real + synthetic pairs.

    Args:
        real_train: real training pairs (masks set).
        real_test: real test pairs, never trained on.
        synthetic: generated pairs.
        seeds: one run per setting and seed; a seed gives every setting the same initialisation (paired runs).
        config: the U-Net recipe.
        n_boot: bootstrap resamples for the CIs.
    Returns:
        One row per (setting, seed) plus a ``mean`` row per setting: dice, dice_low, dice_high, iou, iou_low,
        iou_high, n_train; the mean rows' CIs come from the seed-averaged per-image Dice.
    Raises:
        ValueError: when a set has no masks.
    """
    for data in (real_train, real_test, synthetic):
        if data.masks is None:
            raise ValueError(f"the {data.split} set has no masks: load real pairs with DataConfig(masks=True) and "
                             "generate with an image+mask model")
    config = config or SegmenterConfig()
    training = {"real": (real_train.images, real_train.masks), "synthetic": (synthetic.images, synthetic.masks),
                "real+synthetic": (torch.cat([real_train.images, synthetic.images]),
                                   torch.cat([real_train.masks, synthetic.masks]))}
    rows, per_image = [], {}
    for setting in SETTINGS:
        images, masks = training[setting]
        for seed in seeds:
            report = evaluate_segmenter(train_segmenter(images, masks, config, seed), real_test.images,
                                        real_test.masks, n_boot=n_boot, seed=seed)
            per_image.setdefault(setting, []).append(report.per_image_dice)
            rows.append({"setting": setting, "seed": seed, "dice": report.dice, "dice_low": report.dice_ci[0],
                         "dice_high": report.dice_ci[1], "iou": report.iou, "iou_low": report.iou_ci[0],
                         "iou_high": report.iou_ci[1], "n_train": len(images)})
    table = pd.DataFrame(rows).astype({"seed": object})  # "mean" rows follow
    generator = torch.Generator().manual_seed(0)
    resample = torch.randint(len(real_test), (n_boot, len(real_test)), generator=generator).numpy()
    for setting in SETTINGS:
        dice = np.mean(per_image[setting], axis=0)  # (N,) seed-averaged
        low, high = percentile_interval(dice[resample].mean(1))
        subset = table[table.setting == setting]
        table.loc[len(table)] = {"setting": setting, "seed": "mean", "dice": float(dice.mean()), "dice_low": low,
                                 "dice_high": high, "iou": subset["iou"].mean(), "iou_low": np.nan,
                                 "iou_high": np.nan, "n_train": int(subset["n_train"].iloc[0])}
    return table
