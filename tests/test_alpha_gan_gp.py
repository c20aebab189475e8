"""Alpha-GAN-GP: attention blocks, the pyramid, coarse-to-fine resampling, and image+mask training end to end."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from medgan_core.config import DataConfig
from medgan_core.data import load_images
from medgan_core.losses import gradient_penalty
from medgan_core.models.alpha_gan_gp import CBAM, SelfAttention, pyramid_sizes
from medgan_core.registry import build_model
from medgan_core.sampling import export_dataset, make_grid, sample, split_masks, synthetic_set
from medgan_core.train import fit
from test_losses import LinearCritic
from train_worker import ALPHA_TINY, MODEL_TRAIN, tiny_image_set, tiny_train_config


def test_self_attention_starts_as_the_identity_and_then_mixes_positions():
    block = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), x), "gamma = 0: exactly the input"
    with torch.no_grad():
        block.gamma.fill_(1.0)
    changed = block(x)
    x2 = x.clone()
    x2[:, :, 0, 0] += 5  # one position changes: with attention every position's output moves
    assert not torch.allclose(block(x2)[:, :, 7, 7], changed[:, :, 7, 7])


def test_cbam_gates_lie_in_0_1_and_keep_the_shape():
    torch.manual_seed(0)  # (large activations would saturate float32's sigmoid to exactly 0 or 1)
    block = CBAM(32)
    x = torch.randn(3, 32, 16, 16)
    channel_gate, spatial_gate = block[0].gate(x), block[1].gate(block[0](x))
    assert channel_gate.shape == (3, 32, 1, 1) and spatial_gate.shape == (3, 1, 16, 16)
    for gate in (channel_gate, spatial_gate):
        assert (gate > 0).all() and (gate < 1).all()
    assert block(x).shape == x.shape and (block(x).abs() <= x.abs() + 1e-6).all(), "gates only attenuate"


def test_the_gradient_penalty_passes_through_attention_unchanged():
    """A linear critic scaled by 3 after an identity attention block: penalty (3 - 1)^2 = 4, as without it."""
    linear, attention = LinearCritic((4, 8, 8), 3.0), SelfAttention(4)
    real, fake = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
    penalty = gradient_penalty(lambda x, labels=None: linear(attention(x)), real, fake)
    assert penalty.item() == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize("image_size,min_size,factor,expected", [
    (64, 16, 0.5, [16, 32, 64]),
    (64, 16, 0.75, [20, 27, 36, 48, 64]),
    (128, 16, 0.5, [16, 32, 64, 128]),
    (128, 25, 0.75, [30, 40, 54, 72, 96, 128]),
    (256, 25, 0.75, [26, 34, 46, 61, 81, 108, 144, 192, 256]),
])
def test_pyramid_sizes(image_size, min_size, factor, expected):
    assert pyramid_sizes(image_size, min_size, factor) == expected
    G, _, config = build_model("alpha-gan-gp", image_size=image_size, min_size=min_size, scale_factor=factor,
                               features=4, max_features=4, blocks=3, attention_sizes=())
    assert [scale.head[0].in_channels for scale in G.scales][0] == config.coarse_noise and G.sizes == expected


def test_impossible_pyramids_fail_with_the_valid_range():
    with pytest.raises(ValueError, match="scale_factor must be between 0 and 1"):
        pyramid_sizes(64, 16, 1.5)
    with pytest.raises(ValueError, match="min_size must be between 4 and image_size=64"):
        build_model("alpha-gan-gp", image_size=64, min_size=80)


def test_generate_from_coarse_keeps_the_coarse_scales_and_redraws_the_rest():
    G, _, config = build_model("alpha-gan-gp", image_size=32, min_size=8, **ALPHA_TINY)
    G.eval()
    z = torch.randn(2, config.z_dim)
    with torch.no_grad():
        assert torch.equal(G.generate_from_coarse(z, len(G.sizes), seed=1), G(z)), "nothing redrawn"
        redrawn = G.generate_from_coarse(z, 1, seed=1)
        assert torch.equal(redrawn, G.generate_from_coarse(z, 1, seed=1)), "deterministic from the seed"
        fine = G.latent_slice(1)
        mixed = z.clone()
        mixed[:, fine.start:] = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))[:, fine.start:]
        assert torch.equal(redrawn, G(mixed)), "scale 0's noise kept, every finer one redrawn"
        assert not torch.equal(redrawn, G(z))


def pairs_folder(root, n=12, size=32):
    """``<class>/<i>.png`` + ``_mask.png``: a bright square whose mask marks it."""
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(n):
            top, left = torch.randint(2, size - 12, (2,), generator=generator).tolist()
            image = torch.full((size, size), 40, dtype=torch.uint8)
            image[top:top + 10, left:left + 10] = 220
            Image.fromarray(image.numpy()).save(root / name / f"{i}.png")
            Image.fromarray(((image > 100) * 255).to(torch.uint8).numpy()).save(root / name / f"{i}_mask.png")
    return root


def test_image_mask_pairs_train_sample_and_export_in_the_mask_layout(tmp_path):
    data = load_images(DataConfig(dataset=str(pairs_folder(tmp_path / "pairs")), image_size=32, masks=True,
                                  cache_dir=str(tmp_path / "cache")))
    result = fit("alpha-gan-gp", data, tiny_train_config(2, 2, **MODEL_TRAIN["alpha-gan-gp"]), tmp_path / "run",
                 model_config={**ALPHA_TINY, "min_size": 8})
    G = result.generator
    assert G.config.with_mask and G.output_shape == (2, 32, 32)
    images, masks = split_masks(sample(G, 4, seed=0))
    assert images.shape == (4, 1, 32, 32) and masks.shape == (4, 1, 32, 32)
    assert make_grid(sample(G, 4, seed=0)).shape[-1] == 3, "masks drawn as a red overlay"
    synthetic = synthetic_set(G, 3)
    assert synthetic.channels == 1 and synthetic.masks.shape == (3, 1, 32, 32), "metrics see images only"
    out = export_dataset(G, tmp_path / "export", 3, make_zip=False)
    again = load_images(DataConfig(dataset=str(out), image_size=32, masks=True,
                                   cache_dir=str(tmp_path / "cache")))
    assert again.masks is not None and len(again) == 3, "exported pairs load back as pairs"
    with pytest.raises(ValueError, match="with_mask=True but the training data have no masks"):
        fit("alpha-gan-gp", tiny_image_set(), tiny_train_config(1, 1), tmp_path / "no-masks",
            model_config={**ALPHA_TINY, "with_mask": True})
