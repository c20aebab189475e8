"""Dice/IoU of known masks, mask realism, and the segmentation-usefulness experiment on an easy task."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan_core.data import ImageSet
from medgan_core.metrics.segmentation import (SegmenterConfig, UNet, dice_score, evaluate_segmenter, iou_score,
                                              mask_realism, segmentation_usefulness, train_segmenter)


def masks_of(*boxes, size=8):
    """(N, 1, size, size) bool masks, one box (top, left, bottom, right) each (None: empty)."""
    out = torch.zeros(len(boxes), 1, size, size, dtype=torch.bool)
    for k, box in enumerate(boxes):
        if box is not None:
            top, left, bottom, right = box
            out[k, 0, top:bottom, left:right] = True
    return out


def test_dice_and_iou_of_known_masks():
    a = masks_of((0, 0, 4, 4), (0, 0, 4, 4), (0, 0, 4, 4), None, None)
    b = masks_of((0, 0, 4, 4), (4, 4, 8, 8), (0, 0, 4, 2), None, (0, 0, 1, 1))
    # identical, disjoint, half inside (8 of 16: dice 2*8/(16+8), iou 8/16), both empty, empty vs one pixel
    assert dice_score(a, b).tolist() == pytest.approx([1.0, 0.0, 2 * 8 / 24, 1.0, 0.0])
    assert iou_score(a, b).tolist() == pytest.approx([1.0, 0.0, 0.5, 1.0, 0.0])


def square_pairs(n: int, size: int = 32, seed: int = 0, shift: int = 0) -> ImageSet:
    """Images with a bright square on tissue-grey background, the square being the mask (``shift`` moves it)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.full((n, 1, size, size), 60, dtype=torch.uint8)
    masks = torch.zeros((n, 1, size, size), dtype=torch.uint8)
    for k in range(n):
        top, left = (torch.randint(2, size // 2 - 2, (2,), generator=generator) + shift).tolist()
        side = int(torch.randint(5, 9, (1,), generator=generator))
        images[k, 0, top:top + side, left:left + side] = 200
        masks[k, 0, top:top + side, left:left + side] = 255
    images = (images.float() + torch.randn(images.shape, generator=generator) * 8).clamp(0, 255).to(torch.uint8)
    return ImageSet(images, torch.zeros(n, dtype=torch.long), ["lesion"], masks=masks)


def test_mask_realism_is_zero_for_the_same_masks_and_large_for_moved_ones():
    real = square_pairs(40)
    same = mask_realism(real, real)
    assert same["area_ks"] == 0 and same["centroid_row_ks"] == 0 and same["on_tissue_real"] == 1.0
    moved = mask_realism(real, square_pairs(40, seed=1, shift=12))
    assert moved["centroid_row_ks"] > 0.8 and moved["centroid_col_ks"] > 0.8 and moved["area_ks"] < 0.4
    with pytest.raises(ValueError, match="needs masks on both sets"):
        mask_realism(real, ImageSet(real.images, real.labels, ["lesion"]))


def test_unet_keeps_the_size_and_learns_an_easy_task():
    assert UNet(1, width=4, depth=2)(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    train, test = square_pairs(48), square_pairs(16, seed=9)
    model = train_segmenter(train.images, train.masks, SegmenterConfig(epochs=15, width=8, depth=2, lr=3e-3))
    report = evaluate_segmenter(model, test.images, test.masks, n_boot=200)
    assert report.dice > 0.8 and report.dice_ci[0] <= report.dice <= report.dice_ci[1]


def test_usefulness_runs_three_paired_settings_and_a_useless_generator_scores_lower():
    real_train, real_test = square_pairs(32), square_pairs(16, seed=9)
    blank = ImageSet(torch.full((32, 1, 32, 32), 60, dtype=torch.uint8), torch.zeros(32, dtype=torch.long),
                     ["lesion"], masks=torch.zeros((32, 1, 32, 32), dtype=torch.uint8))  # no lesions at all
    table = segmentation_usefulness(real_train, real_test, blank, seeds=(0,), n_boot=100,
                                    config=SegmenterConfig(epochs=12, batch_size=8, width=8, depth=2, lr=3e-3))
    means = table[table.seed == "mean"].set_index("setting")
    assert list(means.index) == ["real", "synthetic", "real+synthetic"]
    assert means.loc["synthetic", "dice"] < 0.5 < means.loc["real", "dice"]
    assert means.loc["real+synthetic", "n_train"] == 64 and np.isfinite(means["dice_low"]).all()
