"""Subprocess entry for the exact-resume tests: train a tiny model, optionally hang after a step.

Usage: python train_worker.py RUN_DIR MODEL[+AUGMENT] MAX_STEPS CHECKPOINT_EVERY [HANG_AFTER_STEP MARKER_FILE]
"""
import sys
import time
from pathlib import Path

import torch

from medgan_core.config import TrainConfig
from medgan_core.data import ImageSet
from medgan_core.train import fit

TINY_MODEL = {"g_features": 4, "d_features": 4, "z_dim": 8}
STYLEGAN2_TINY = {"z_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 128, "channel_max": 8}
# StyleGAN2: both lazy regularisers every 2 steps so a short run exercises them
STYLEGAN2_TRAIN = {"lr_g": 2.5e-3, "lr_d": 2.5e-3, "betas": (0.0, 0.99),
                   "loss_options": {"r1_interval": 2, "pl_interval": 2}}
WGAN_GP_TRAIN = {"n_critic": 5, "betas": (0.0, 0.9), "lr_g": 1e-4, "lr_d": 1e-4}  # Gulrajani et al.
# Alpha-GAN-GP: 3 conv layers per scale, CBAM everywhere, self-attention at 8 px (16 and 32 px scales without)
ALPHA_TINY = {"features": 4, "max_features": 8, "blocks": 3, "coarse_noise": 2, "attention_sizes": (8,)}
MODEL_TRAIN = {"wgan-gp": WGAN_GP_TRAIN, "alpha-gan-gp": WGAN_GP_TRAIN,
               "progan": {"lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.0, 0.99), "loss_options": {"drift": 1e-3}},
               "stylegan2": STYLEGAN2_TRAIN, "cstylegan2": STYLEGAN2_TRAIN}
# ADA starts at p = 0.5 and moves it by 8 images / 200 = 0.04 at every D step: it stays inside (0, 1) in 8 steps
AUGMENT = {"ada": {"augment": "ada", "augment_options": {"ada_kimg": 0.2, "interval": 1, "p_init": 0.5}},
           "diffaugment": {"augment": "diffaugment"}, "": {}}
# ProGAN: stages of 3 steps (24 images / batch 8), fading over the whole stage, so step 4 is mid-fade of 8 px
MODEL_CONFIG = {"progan": {"base_features": 8, "z_dim": 8, "stage_images": 24, "fade_fraction": 1.0,
                           "stage_batch_sizes": (8, 8, 8, 4)},
                "stylegan2": STYLEGAN2_TINY, "cstylegan2": STYLEGAN2_TINY, "alpha-gan-gp": {**ALPHA_TINY, "min_size": 8}}
MASKED_MODELS = {"alpha-gan-gp", "singan-seg"}  # trained on image+mask pairs
# SinGAN-Seg: one pair, scales 18/24/32 px of 5 steps each (lr x0.1 from the 5th), so a kill at step 5 with a
# checkpoint at 4 resumes inside the decay of scale 0 and crosses into scale 1 (its noise amplitude is measured)
SINGAN_TINY = {**ALPHA_TINY, "attention_sizes": (), "min_size": 16, "iterations": 5, "steps_per_iteration": 1}
MODEL_CONFIG["singan-seg"] = SINGAN_TINY
MODEL_TRAIN["singan-seg"] = {"batch_size": 1, "hflip": False, "lr_g": 5e-4, "lr_d": 5e-4}
SINGLE_IMAGE_MODELS = {"singan-seg"}


def tiny_image_set(n: int = 48, size: int = 32, classes: int = 3, masks: bool = False) -> ImageSet:
    """Deterministic blob images: a bright disc whose position depends on the class (``masks``: it is the mask)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    generator = torch.Generator().manual_seed(123)
    images, labels = [], []
    for index in range(n):
        label = index % classes
        cy, cx = 8 + 8 * label, 16 + torch.randint(-3, 4, (1,), generator=generator).item()
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 25).float()
        images.append((disc * 200 + torch.rand(size, size, generator=generator) * 40).to(torch.uint8))
        labels.append(label)
    stacked = torch.stack(images)[:, None]  # (N, 1, S, S)
    return ImageSet(stacked, torch.tensor(labels), [f"class{k}" for k in range(classes)], source="tiny",
                    split="train", cache_key="tiny-v1", masks=torch.where(stacked > 150, 255, 0).to(torch.uint8)
                    if masks else None)


def tiny_train_config(max_steps: int, checkpoint_every: int, **overrides) -> TrainConfig:
    """Small, fast, CPU settings used by every resume test."""
    values = dict(max_steps=max_steps, batch_size=8, checkpoint_every=checkpoint_every, sample_every=1000,
                  log_every=1, progress=False, device="cpu", hflip=True, seed=7)
    values.update(overrides)
    return TrainConfig(**values)


if __name__ == "__main__":
    run_dir, max_steps, every = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
    model, _, augment = sys.argv[2].partition("+")  # e.g. "stylegan2+ada"
    hang_after = int(sys.argv[5]) if len(sys.argv) > 5 else None
    marker = Path(sys.argv[6]) if len(sys.argv) > 6 else None

    def hang(step: int) -> None:
        if step == hang_after:
            marker.write_text(str(step))
            time.sleep(600)  # the test kills us with SIGKILL here

    settings = {**MODEL_TRAIN.get(model, {}), **AUGMENT[augment]}
    data = tiny_image_set(masks=model in MASKED_MODELS)
    data = data.subset([0]) if model in SINGLE_IMAGE_MODELS else data
    fit(model, data, tiny_train_config(max_steps, every, **settings), run_dir,
        model_config=MODEL_CONFIG.get(model, TINY_MODEL), on_step=hang if hang_after else None)
