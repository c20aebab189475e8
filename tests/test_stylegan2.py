"""StyleGAN2 and conditional StyleGAN2: shapes, closed forms of modulation and w averaging, truncation, style
mixing, noise modes, double backward, registry, and a fixed-output regression on tiny seeded models."""
import json
import math

import pytest
import torch

from medgan_core.models.stylegan2 import (PRESETS, ConditionalStyleGAN2Config, ModulatedConv2d,
                                          StyleGAN2Config, channels_at, recommended_train_settings,
                                          stylegan2_preset)
from medgan_core.models.layers import MinibatchStdDev
from medgan_core.config import to_dict
from medgan_core.registry import build_model, get_model_spec, make_config
from medgan_core.sampling import sample

TINY = dict(image_size=32, z_dim=32, w_dim=32, channel_base=512, channel_max=32)


def tiny(name="stylegan2", **overrides):
    return build_model(name, **{**TINY, **overrides})


def set_noise_strength(G, value):
    with torch.no_grad():
        for layer in G.synthesis.convs:
            layer.noise_strength.fill_(value)


@pytest.mark.parametrize("name", ["stylegan2", "cstylegan2"])
@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(name, image_size, channels):
    G, D, config = tiny(name, image_size=image_size, channels=channels)
    labels = torch.tensor([0, 3, 1]) if get_model_spec(name).conditional else None
    images = G(torch.randn(3, config.z_dim), labels)
    assert images.shape == (3, channels, image_size, image_size) and images.dtype == torch.float32
    assert G.num_ws == 2 * int(math.log2(image_size)) - 2
    assert G.mapping(torch.randn(3, config.z_dim), labels).shape == (3, G.num_ws, config.w_dim)
    logits = D(images, labels)
    assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_conditional_models_refuse_missing_labels():
    G, D, config = tiny("cstylegan2")
    with pytest.raises(ValueError, match="conditional generator needs labels"):
        G(torch.randn(2, config.z_dim))
    with pytest.raises(ValueError, match="conditional discriminator needs labels"):
        D(torch.randn(2, 1, 32, 32))


def test_unconditional_generator_accepts_labels_none():
    G, D, config = tiny()
    assert D(G(torch.randn(2, config.z_dim), None), None).shape == (2,)


def test_demodulated_weights_have_unit_norm_per_output_channel():
    conv = ModulatedConv2d(8, 16, 3, w_dim=32)
    weight = conv.modulated_weight(torch.randn(5, 32) * 3)  # (B, O, I, k, k)
    assert weight.shape == (5, 16, 8, 3, 3)
    torch.testing.assert_close(weight.square().sum(dim=(2, 3, 4)).sqrt(), torch.ones(5, 16))


def test_demodulated_conv_keeps_unit_variance():
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 64, 3, w_dim=32)
    with torch.no_grad():
        out = conv(torch.randn(4, 64, 64, 64), torch.randn(4, 32) * 2)
    assert abs(out.var().item() - 1) < 0.1  # borders (zero padding) lose ~2 %


@pytest.mark.parametrize("up", [False, True])
def test_fused_and_unfused_modulated_conv_agree(up):
    conv = ModulatedConv2d(8, 6, 3, w_dim=16, up=up)
    x, w = torch.randn(3, 8, 8, 8), torch.randn(3, 16)
    fused = conv(x, w, fused=True)
    assert fused.shape == (3, 6, 16 if up else 8, 16 if up else 8)
    torch.testing.assert_close(fused, conv(x, w, fused=False), atol=1e-5, rtol=1e-5)


def test_fused_and_unfused_generators_agree():
    G, _, config = tiny(channels=3)
    unfused, _, _ = tiny(channels=3, fused_modconv=False)
    unfused.load_state_dict(G.state_dict())
    set_noise_strength(G, 0.3)
    set_noise_strength(unfused, 0.3)
    G.eval(), unfused.eval()
    z = torch.randn(4, config.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(G(z), unfused(z), atol=3e-5, rtol=1e-5)


def test_truncation_psi_zero_gives_the_image_of_w_avg():
    G, _, config = tiny()
    G.eval()
    set_noise_strength(G, 0.3)
    with torch.no_grad():
        G.w_avg.normal_()
        images = G(torch.randn(4, config.z_dim), truncation_psi=0.0)
        centre = G.synthesis(G.w_avg.expand(1, G.num_ws, -1))
    torch.testing.assert_close(images, centre.expand(4, -1, -1, -1))


def test_conditional_truncation_pulls_towards_the_class_average():
    G, _, config = tiny("cstylegan2")
    G.eval()
    with torch.no_grad():
        G.w_avg_class.normal_()  # distinct class centres
        images = G(torch.randn(4, config.z_dim), torch.tensor([0, 0, 2, 2]), truncation_psi=0.0)
        class_two = G.synthesis(G.w_avg_class[2].expand(1, G.num_ws, -1))
    torch.testing.assert_close(images[0], images[1])
    torch.testing.assert_close(images[2], images[3])
    torch.testing.assert_close(images[2], class_two[0])
    assert not torch.allclose(images[0], images[2])


def test_mix_styles_takes_the_first_cutoff_layers_from_a():
    G, _, config = tiny()
    ws_a, ws_b = torch.randn(2, G.num_ws, config.w_dim), torch.randn(2, G.num_ws, config.w_dim)
    mixed = G.mix_styles(ws_a, ws_b, 3)
    assert torch.equal(mixed[:, :3], ws_a[:, :3]) and torch.equal(mixed[:, 3:], ws_b[:, 3:])
    with pytest.raises(ValueError, match="cutoff"):
        G.mix_styles(ws_a, ws_b, G.num_ws + 1)


def test_style_mixing_in_training_uses_mix_styles_and_leaves_w_avg_to_the_first_latent(monkeypatch):
    G, _, config = tiny(style_mixing_prob=1.0)
    cutoffs = []
    mix = G.mix_styles
    monkeypatch.setattr(G, "mix_styles", lambda a, b, cutoff: cutoffs.append(cutoff) or mix(a, b, cutoff))
    z = torch.randn(4, config.z_dim)
    with torch.no_grad():
        expected = 0.995 * G.w_avg + 0.005 * G.mapping_network(z).mean(dim=0)
        G.train()(z)
    assert len(cutoffs) == 1 and 1 <= cutoffs[0] < G.num_ws
    torch.testing.assert_close(G.w_avg, expected)


def test_w_avg_moves_towards_the_batch_mean_in_training_mode_only():
    G, _, config = tiny()
    z = torch.randn(6, config.z_dim)
    with torch.no_grad():
        G.w_avg.normal_()
        before = G.w_avg.clone()
        w = G.eval().mapping(z)[:, 0]
        assert torch.equal(G.w_avg, before)
        G.train().mapping(z)
    torch.testing.assert_close(G.w_avg, 0.995 * before + 0.005 * w.mean(dim=0))


def test_w_avg_class_updates_only_the_classes_in_the_batch():
    G, _, config = tiny("cstylegan2")
    z, labels = torch.randn(3, config.z_dim), torch.tensor([1, 3, 1])
    with torch.no_grad():
        G.w_avg_class.normal_()
        before = G.w_avg_class.clone()
        w = G.train().mapping(z, labels)[:, 0]
    expected = before.clone()
    expected[1] = 0.995 * before[1] + 0.005 * w[[0, 2]].mean(dim=0)
    expected[3] = 0.995 * before[3] + 0.005 * w[1]
    torch.testing.assert_close(G.w_avg_class, expected)


def test_eval_forward_is_deterministic_and_training_noise_is_random():
    G, _, config = tiny(style_mixing_prob=0.0)
    set_noise_strength(G, 0.5)
    z = torch.randn(2, config.z_dim)
    with torch.no_grad():
        G.eval()
        assert torch.equal(G(z), G(z))
        G.train()
        assert not torch.allclose(G(z), G(z))
        assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const"))
        assert not torch.allclose(G(z, noise_mode="const"), G(z, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="fresh")


def test_models_are_registered_and_sizes_are_checked():
    assert get_model_spec("stylegan2").objective == "stylegan2"
    spec = get_model_spec("cstylegan2")
    assert spec.conditional and spec.config_cls is ConditionalStyleGAN2Config
    G, D, config = tiny(channels=3)
    assert isinstance(config, StyleGAN2Config) and G.config is config
    assert "w_avg" in G.state_dict() and "synthesis.convs.0.noise_const" in G.state_dict()
    with pytest.raises(ValueError, match=r"image_size=48 is not supported; use one of \(32, 64, 128, 256\)"):
        build_model("stylegan2", image_size=48)
    with pytest.raises(ValueError, match="channels=2"):
        build_model("cstylegan2", channels=2)


def test_config_round_trips_through_json_and_sampling_is_reproducible_from_the_seed():
    G, _, config = tiny("cstylegan2", channels=3)
    assert make_config("cstylegan2", json.loads(json.dumps(to_dict(config)))) == config
    set_noise_strength(G, 0.5)
    G.train()
    first = sample(G, 3, seed=7)
    assert first.shape == (3, 3, 32, 32) and G.training  # eval mode inside sample(), const noise
    assert torch.equal(first, sample(G, 3, seed=7))


def test_default_config_is_the_ada_auto_network_and_presets_fit_the_config():
    config = StyleGAN2Config()
    assert (config.image_size, config.channels, config.z_dim, config.w_dim) == (64, 1, 512, 512)
    assert (config.mapping_layers, config.mapping_lr_mul, config.mbstd_group) == (2, 0.01, 4)
    assert [channels_at(config, r) for r in (4, 8, 16, 32, 64)] == [512, 512, 512, 512, 256]
    for name in PRESETS:
        preset = stylegan2_preset(name, 128)
        assert preset["image_size"] == 128
        StyleGAN2Config(**preset)
        ConditionalStyleGAN2Config(**preset)
    with pytest.raises(ValueError, match="unknown StyleGAN2 preset"):
        stylegan2_preset("huge", 64)
    with pytest.raises(ValueError, match="image_size=512"):
        stylegan2_preset("cpu", 512)


def test_recommended_train_settings_follow_the_ada_auto_rule():
    settings = recommended_train_settings(64, 32)
    assert settings == {"lr": 0.0025, "betas": (0.0, 0.99), "r1_gamma": pytest.approx(0.0256), "ema_kimg": 10.0}
    assert recommended_train_settings(256, 16)["r1_gamma"] == pytest.approx(0.8192)


def test_discriminator_accepts_channels_last_images():
    G, D, config = tiny("cstylegan2", channels=3)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(D(images.contiguous(memory_format=torch.channels_last), labels), D(images, labels))


def test_minibatch_std_uses_the_largest_group_dividing_the_batch():
    layer = MinibatchStdDev(group_size=4, num_channels=2)
    out = layer(torch.ones(6, 4, 2, 2))  # groups of 3
    assert out.shape == (6, 6, 2, 2)
    torch.testing.assert_close(out[:, 4:], torch.full((6, 2, 2, 2), 1e-4), atol=1e-6, rtol=0)
    x = torch.zeros(6, 4, 2, 2)
    x[0] = 3.0  # group {0, 2, 4}: std of (3, 0, 0) = sqrt(2); group {1, 3, 5}: 0
    std = layer(x)[:, 4, 0, 0]
    torch.testing.assert_close(std[[0, 2, 4]], torch.full((3,), math.sqrt(2.0)))
    assert std[[1, 3, 5]].max() < 1e-3


@pytest.mark.parametrize("name", ["stylegan2", "cstylegan2"])
def test_discriminator_is_twice_differentiable(name):
    _, D, _ = tiny(name)
    labels = torch.tensor([0, 1, 2, 3]) if get_model_spec(name).conditional else None
    images = torch.randn(4, 1, 32, 32, requires_grad=True)
    (gradients,) = torch.autograd.grad(D(images, labels).sum(), images, create_graph=True)
    gradients.square().sum().backward()  # R1
    grads = [p.grad for p in D.parameters() if p.grad is not None]  # biases of linear ends drop out of the penalty
    assert D.from_rgb.weight.grad is not None and D.fc.weight.grad is not None
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("fused", [True, False])
def test_synthesis_is_twice_differentiable(fused):
    G, _, config = tiny(fused_modconv=fused)
    set_noise_strength(G, 0.1)
    ws = G.mapping(torch.randn(3, config.z_dim))
    images = G.synthesis(ws)
    (gradients,) = torch.autograd.grad((images * torch.randn_like(images)).sum(), ws, create_graph=True)
    gradients.square().sum(2).mean(1).sqrt().mean().backward()  # path length
    grads = [p.grad for p in G.synthesis.parameters() if p.grad is not None]
    assert G.synthesis.convs[1].conv.weight.grad is not None and G.synthesis.to_rgbs[-1].conv.weight.grad is not None
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_autocast_keeps_demodulation_and_outputs_in_float32():
    G, D, config = tiny()
    G.eval()
    conv = ModulatedConv2d(64, 16, 3, w_dim=32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        weight = conv.modulated_weight(torch.randn(5, 32))
        ws = G.mapping(torch.randn(2, config.z_dim))
        images = G.synthesis(ws)
        logits = D(images)
    torch.testing.assert_close(weight.square().sum(dim=(2, 3, 4)), torch.ones(5, 16))  # bf16 would be ~1e-2 off
    assert ws.dtype == images.dtype == logits.dtype == torch.float32
    assert torch.isfinite(images).all() and torch.isfinite(logits).all()


# Fixed outputs of tiny seeded models (computed once with this file's code; a silent numerical change fails here).
EXPECTED = {
    "stylegan2": {"image": [-3.080197, -2.585131, -3.084049, -3.031798, 1.924746, 1.616326, 2.023052, 1.64198],
                  "logits": [-4.967727, -0.352332]},
    "cstylegan2": {"image": [2.301811, 1.95575, 1.768754, 1.63142, 2.046729, 2.279903, 2.170333, 2.323203],
                   "logits": [-0.62647, 0.848793]},
}


@pytest.mark.parametrize("name", ["stylegan2", "cstylegan2"])
def test_fixed_output_of_a_seeded_tiny_model(name):
    torch.manual_seed(0)
    G, D, config = tiny(name)
    G.eval()
    set_noise_strength(G, 0.2)
    z = torch.randn(2, config.z_dim, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 2]) if get_model_spec(name).conditional else None
    with torch.no_grad():
        images = G(z, labels, truncation_psi=0.7)
        logits = D(images, labels)
    expected = EXPECTED[name]
    torch.testing.assert_close(images[:, 0, 16, 12:16].flatten(), torch.tensor(expected["image"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), atol=1e-4, rtol=0)
