"""SinGAN-Seg: the single-image pyramid, its schedule, noise amplitudes, reconstruction, freezing, resume, batch mode."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgan_core import load_generator
from medgan_core.checkpoint import load_checkpoint_meta
from medgan_core.config import DataConfig
from medgan_core.data import BatchStream, load_images
from medgan_core.losses import OBJECTIVES
from medgan_core.models.singan_seg import growth_plan, pick_pair, train_config, train_pairs
from medgan_core.registry import build_model, make_config
from medgan_core.sampling import export_dataset, sample, split_masks
from medgan_core.train import fit
from test_alpha_gan_gp import pairs_folder
from test_train import kill_and_resume
from train_worker import SINGAN_TINY, tiny_image_set

ONE_PAIR = tiny_image_set(masks=True).subset([0])  # (1, 1, 32, 32) + mask


def tiny_fit(run_dir, steps=None, data=ONE_PAIR, **config):
    """The tiny pyramid (18, 24, 32 px; 5 steps per scale) on one pair."""
    return fit("singan-seg", data, train_config(max_steps=steps, device="cpu", progress=False, log_every=1,
                                                sample_every=1000), run_dir, model_config={**SINGAN_TINY, **config})


@pytest.mark.parametrize("image_size,expected", [
    (64, [27, 36, 48, 64]),
    (128, [30, 40, 54, 72, 96, 128]),
    (256, [26, 34, 46, 61, 81, 108, 144, 192, 256]),
])
def test_pyramid_of_min_size_25_and_factor_0_75_with_widths_doubling_every_4_scales(image_size, expected):
    G, D, config = build_model("singan-seg", image_size=image_size, with_mask=True)
    assert (config.min_size, config.scale_factor, config.blocks) == (25, 0.75, 5) and G.sizes == expected
    widths = [scale.head[0].out_channels for scale in G.scales]
    assert widths == [min(32 * 2 ** (k // 4), 128) for k in range(len(expected))]
    assert G(torch.randn(1, config.z_dim)).shape == (1, 2, image_size, image_size)


def test_the_schedule_is_one_stage_per_scale_with_lr_x0_1_from_80_percent_of_each():
    config = make_config("singan-seg", {"image_size": 64, "iterations": 10})  # 30 loop steps per scale
    plans = [growth_plan(config, step) for step in range(130)]
    assert [p.stage for p in plans[::30]] == [0, 1, 2, 3, 3] and plans[0].total_steps == 120
    assert [p.lr_scale for p in plans[:30]] == [1.0] * 24 + [0.1] * 6, "iteration 8 of 10 on: x0.1"
    assert plans[30].lr_scale == 1.0 and plans[54].lr_scale == 0.1, "restored at the next scale, decayed again"
    assert {p.batch_size for p in plans} == {1} and [plans[k].resolution for k in (0, 30, 60, 90)] == config.sizes


def test_noise_amplitude_is_0_1_x_the_rmse_of_the_upsampled_coarser_reconstruction():
    torch.manual_seed(0)
    G, _, config = build_model("singan-seg", image_size=32, with_mask=True, **SINGAN_TINY)
    G.begin_stage(0, torch.zeros(1, 2, 18, 18))
    assert G.noise_amplitude[0] == 1.0, "scale 0: amplitude 1"
    G.set_growth(0, 1.0)
    coarse = G.eval().reconstruct()  # (1, 2, 18, 18)
    real = F.interpolate(coarse, size=(24, 24), mode="bilinear", align_corners=False) + 0.5  # RMSE exactly 0.5
    G.train().begin_stage(1, real)
    assert G.noise_amplitude[1].item() == pytest.approx(0.05, rel=1e-5)
    assert torch.equal(G.scales[1].body[0].weight, G.scales[0].body[0].weight), "scale 1 starts from scale 0"


def test_a_pair_trains_samples_and_exports_end_to_end_with_a_deterministic_reconstruction(tmp_path):
    data = load_images(DataConfig(dataset=str(pairs_folder(tmp_path / "pairs", n=2)), image_size=32, masks=True,
                                  cache_dir=str(tmp_path / "cache")))
    result = tiny_fit(tmp_path / "run", data=pick_pair(data, 1))
    G = result.generator
    assert result.step == 15 and G.output_shape == (2, 32, 32) and G.noise_amplitude[1:].gt(0).all()
    assert {"rec_mse", "gp", "wasserstein"} <= set(result.history.columns)

    # the reconstruction path: fixed noise, deterministic, what the loss sees and what the checkpoint rebuilds
    with torch.no_grad():
        reconstruction = G.eval().reconstruct()
        assert torch.equal(reconstruction, G.reconstruct()) and torch.equal(reconstruction, G(G.reconstruction_noise))
        assert torch.equal(G.generate_from_scale(1, len(G.sizes), seed=3), reconstruction), "nothing redrawn"
        assert not torch.equal(G.generate_from_scale(1, 1, seed=3), reconstruction)
        assert torch.equal(load_generator(tmp_path / "run").reconstruct(), reconstruction)
        real = torch.randn(1, 2, 32, 32)
        G.train()
        loss, stats = OBJECTIVES["singan"].g_real(G, real, None, gp_lambda=0.1, rec_weight=10.0)
        assert torch.equal(G.reconstruct(), G.reconstruct()), "training mode too"
        assert loss.item() == pytest.approx(10 * F.mse_loss(G.reconstruct(), real).item())

    images, masks = split_masks(sample(G, 4, seed=0))
    assert images.shape == masks.shape == (4, 1, 32, 32)
    out = export_dataset(G, tmp_path / "export", 3, make_zip=False)
    again = load_images(DataConfig(dataset=str(out), image_size=32, masks=True, cache_dir=str(tmp_path / "cache")))
    assert again.masks is not None and len(again) == 3, "exported pairs load back as pairs"


def test_coarser_scales_do_not_change_while_a_finer_one_trains(tmp_path):
    first = tiny_fit(tmp_path / "run", steps=5)  # scale 0 done, scale 1 not begun
    rates = load_checkpoint_meta(first.checkpoint)["optimizers"]
    assert [rates[name]["param_groups"][0]["lr"] for name in ("opt_g", "opt_d")] == [5e-4 * 0.1] * 2, "the loop's lr"
    before = {k: v.clone() for k, v in first.discriminator.state_dict().items()}
    G_before = {k: v.clone() for k, v in load_generator(tmp_path / "run", use_ema=False).state_dict().items()}
    second = tiny_fit(tmp_path / "run", steps=10)  # resumed: scale 1 trains
    G_after = load_generator(tmp_path / "run", use_ema=False).state_dict()
    D_after = second.discriminator.state_dict()
    for state_before, state_after in ((G_before, G_after), (before, D_after)):
        frozen = [k for k in state_before if ".0." in k[:12]]  # scales.0.* / critics.0.*, BatchNorm statistics too
        assert len(frozen) > 10 and all(torch.equal(state_before[k], state_after[k]) for k in frozen)
        trained = [k for k in state_before if ".1." in k[:12] and k.endswith("weight")]
        assert any(not torch.equal(state_before[k], state_after[k]) for k in trained), "scale 1 trained"
        untouched = [k for k in state_before if ".2." in k[:12]]
        assert all(torch.equal(state_before[k], state_after[k]) for k in untouched), "scale 2 not begun"


def test_clear_errors_for_a_whole_dataset_an_image_without_mask_and_an_impossible_size(tmp_path):
    with pytest.raises(ValueError, match=r"ONE image\+mask pair, but the data hold 48 images: pick one with "
                                         r"singan_seg.pick_pair"):
        tiny_fit(tmp_path / "many", data=tiny_image_set(masks=True))
    with pytest.raises(ValueError, match="this image has no mask: load it with DataConfig\\(masks=True\\)"):
        tiny_fit(tmp_path / "no-mask", data=tiny_image_set().subset([0]))
    with pytest.raises(ValueError, match="min_size must be between 4 and image_size=16"):
        build_model("singan-seg", image_size=16)
    with pytest.raises(IndexError, match="pair index 5 is outside 0..0"):
        pick_pair(ONE_PAIR, 5)


@pytest.mark.slow  # two subprocess training runs
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """Checkpoint at step 4 (inside scale 0's lr decay), kill after 5, resume to 8 across the start of scale 1."""
    checkpoint, _, _ = kill_and_resume(tmp_path, "singan-seg")
    assert checkpoint.tensors["G.noise_amplitude"][1] > 0 and int(checkpoint.tensors["G.stage"]) == 1


def test_batch_mode_trains_one_pyramid_per_pair_and_resumes_per_pair(tmp_path):
    pairs = tiny_image_set(n=2, masks=True)
    train = train_config(device="cpu", progress=False, sample_every=1000, log_every=1)
    tiny_fit(tmp_path / "batch" / "pair-0001", steps=7, data=pick_pair(pairs, 1))  # an interrupted pair
    first = train_pairs(pairs, tmp_path / "batch", train, model_config=SINGAN_TINY, indices=[0])
    assert first["status"].tolist() == ["trained"] and first["step"].tolist() == [15]
    summary = train_pairs(pairs, tmp_path / "batch", train, model_config=SINGAN_TINY)
    assert summary["status"].tolist() == ["finished before", "resumed"] and summary["step"].tolist() == [15, 15]
    history = (tmp_path / "batch" / "pair-0001" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 15, "one row per step, the first 7 kept from before the interruption"


def test_a_new_scale_starts_from_the_coarser_reconstruction_and_learns_it_where_the_coarse_one_saturates():
    """Scale 0 maps noise to the whole pair, with tanh saturated at -1 on the black background and outside the mask.
    A copy of it as scale 1 used to add a second pair on top of the upsampled one (reconstruction MSE ~0.7 on brain
    MRI, stuck: its gradient vanished in the saturated tanh); the new scale's residual now starts at 0."""
    torch.manual_seed(0)
    G, _, config = build_model("singan-seg", image_size=32, with_mask=True, **{**SINGAN_TINY, "features": 8})
    pyramid = [next(BatchStream(ONE_PAIR, 1, resolution=s, masks=True).epoch(0))[0] for s in G.sizes]  # the loop's

    def reconstruction_steps(stage, steps):
        optimizer = torch.optim.Adam(G.scales[stage].parameters(), lr=5e-3, betas=(0.5, 0.999))
        for _ in range(steps):
            loss = F.mse_loss(G.train().reconstruct(), pyramid[stage])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return F.mse_loss(G.reconstruct(), pyramid[stage]).item()

    G.set_growth(0, 1.0)
    G.begin_stage(0, pyramid[0])
    assert reconstruction_steps(0, 150) < 0.01
    with torch.no_grad():
        assert G.eval().reconstruct()[:, 1].min() < -0.99, "the mask's outside: tanh near -1 at scale 0"
        coarse = F.interpolate(G.reconstruct(), size=(24, 24), mode="bilinear", align_corners=False)
    G.set_growth(1, 1.0)
    G.begin_stage(1, pyramid[1])
    for mode in (False, True):
        with torch.no_grad():
            assert torch.equal(G.train(mode).reconstruct(), coarse), "residual 0: the coarser reconstruction"
    start = F.mse_loss(coarse, pyramid[1]).item()
    assert G.noise_amplitude[1].item() == pytest.approx(0.1 * start ** 0.5, rel=1e-4)
    assert torch.equal(G.scales[1].body[0].weight, G.scales[0].body[0].weight), "head and body still copied"
    assert reconstruction_steps(1, 30) < min(start, 0.02)
