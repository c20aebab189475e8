"""Shapes and registry behaviour of every registered model."""
import dataclasses
import json

import pytest
import torch

from medgan_core.registry import build_model, get_model_spec, list_models, make_config


# the DCGAN family (tanh output, g_features/d_features); StyleGAN2 has its own tests in test_stylegan2.py
FIXED_SIZE_MODELS = sorted(name for name in list_models()
                           if "g_features" in {f.name for f in dataclasses.fields(get_model_spec(name).config_cls)})


@pytest.mark.parametrize("name", FIXED_SIZE_MODELS)
@pytest.mark.parametrize("image_size", [64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(name, image_size, channels):
    conditional = get_model_spec(name).conditional
    classes = {"num_classes": 3} if conditional else {}
    G, D, config = build_model(name, image_size=image_size, channels=channels, g_features=8, d_features=8, **classes)
    labels = torch.tensor([0, 1, 0]) if conditional else None
    z = torch.randn(3, config.z_dim)
    images = G(z, labels)
    assert images.shape == (3, channels, image_size, image_size) and G.output_shape == images.shape[1:]
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    logits = D(images, labels)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_models())
def test_every_generator_states_the_shape_it_generates(name):
    """Exports, Hub cards and comparisons read output_shape, so every registered generator must have it right."""
    conditional = get_model_spec(name).conditional
    small = {field.name: value for field, value in [(f, {"g_features": 8, "d_features": 8, "base_features": 16,
                                                        "channel_base": 256, "channel_max": 16}.get(f.name))
                                                    for f in dataclasses.fields(get_model_spec(name).config_cls)]
             if value is not None}
    G, _, config = build_model(name, image_size=32, channels=3, **small, **({"num_classes": 2} if conditional else {}))
    with torch.no_grad():
        images = G(torch.randn(2, config.z_dim), torch.tensor([0, 1]) if conditional else None)
    assert G.output_shape == images.shape[1:] == (3, 32, 32)


def test_default_dcgan_is_the_classic_64px_architecture():
    G, D, config = build_model("dcgan")
    assert (config.image_size, config.z_dim, config.g_features) == (64, 100, 64)
    widths = [m.out_channels for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [512, 256, 128, 64, 1]


def test_conditional_generator_depends_on_label():
    G, _, config = build_model("cdcgan", image_size=64, g_features=8, d_features=8)
    G.eval()
    z = torch.randn(1, config.z_dim).repeat(2, 1)
    images = G(z, torch.tensor([0, 3]))
    assert not torch.allclose(images[0], images[1])


def test_conditional_models_require_labels():
    G, D, config = build_model("cdcgan", image_size=64, g_features=8, d_features=8)
    with pytest.raises(ValueError, match="needs labels"):
        G(torch.randn(2, config.z_dim))
    with pytest.raises(ValueError, match="needs labels"):
        D(torch.randn(2, 1, 64, 64))


@pytest.mark.parametrize("bad_size", [48, 100, 2, 1024])
def test_impossible_image_size_is_rejected_clearly(bad_size):
    with pytest.raises(ValueError, match=r"image_size=\d+ is not supported; use one of"):
        build_model("dcgan", image_size=bad_size)


def test_unknown_model_and_unknown_setting_fail_clearly():
    with pytest.raises(KeyError, match="registered models"):
        get_model_spec("no-such-gan")
    with pytest.raises(ValueError, match="do not fit model 'dcgan'.*num_classes"):
        make_config("dcgan", {"num_classes": 4})


def test_registry_lists_both_dcgans_with_descriptions():
    models = list_models()
    assert {"dcgan", "cdcgan", "wgan-gp", "cwgan-gp"} <= set(models)
    assert all(models.values())


def test_minibatch_stddev_feature_measures_batch_diversity():
    from medgan_core.models.layers import MinibatchStdDev

    layer = MinibatchStdDev(group_size=4)
    same = torch.ones(8, 3, 4, 4)
    out = layer(same)
    assert out.shape == (8, 4, 4, 4) and torch.allclose(out[:, 3], torch.full((8, 4, 4), 1e-4), atol=1e-4)
    varied = torch.randn(6, 3, 4, 4) * 2  # groups of 3: the largest size up to 4 dividing 6
    assert layer(varied)[:, 3].mean() > 1.0


def test_wgan_gp_critic_has_no_batchnorm_and_names_the_conditional_variant():
    _, critic, _ = build_model("wgan-gp", g_features=8, d_features=8)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in critic.modules())  # layer norm by default
    with pytest.raises(ValueError, match="use 'cwgan-gp'"):
        build_model("wgan-gp", num_classes=4)
    with pytest.raises(ValueError, match="unknown norm 'batch2'"):
        build_model("wgan-gp", critic_norm="batch2")
    _, critic, _ = build_model("cwgan-gp", num_classes=2, g_features=8, d_features=8)
    images = torch.randn(2, 1, 64, 64)
    scores = critic(images.repeat(2, 1, 1, 1), torch.tensor([0, 0, 1, 1]))
    assert not torch.allclose(scores[:2], scores[2:])  # the projection term depends on the label


PROGAN_TINY = {"base_features": 16, "z_dim": 16}


@pytest.mark.parametrize("image_size", [64, 128])
def test_progan_shapes_at_every_stage_and_alpha(image_size):
    G, D, config = build_model("progan", image_size=image_size, channels=1, **PROGAN_TINY)
    assert G._stage == D._stage == G.n_stages - 1  # built at full size: a loaded generator makes full images
    for stage in range(G.n_stages):
        for alpha in (0.0, 0.3, 1.0):
            G.set_growth(stage, alpha)
            D.set_growth(stage, alpha)
            images = G(torch.randn(4, config.z_dim))
            assert images.shape == (4, 1, 4 * 2 ** stage, 4 * 2 ** stage) and G.output_shape == images.shape[1:]
            scores = D(images)
            assert scores.shape == (4,) and torch.isfinite(scores).all()


def test_progan_fade_in_starts_from_the_upsampled_previous_stage():
    G, D, config = build_model("progan", image_size=64, **PROGAN_TINY)
    z = torch.randn(4, config.z_dim)
    x = torch.randn(4, 1, 64, 64)
    for stage in range(1, G.n_stages):
        G.set_growth(stage - 1, 1.0)
        D.set_growth(stage - 1, 1.0)
        previous, previous_scores = G(z), D(torch.nn.functional.avg_pool2d(x[..., :4 * 2 ** stage, :4 * 2 ** stage], 2))
        G.set_growth(stage, 0.0)
        D.set_growth(stage, 0.0)
        upsampled = torch.nn.functional.interpolate(previous, scale_factor=2, mode="nearest")
        torch.testing.assert_close(G(z), upsampled)
        torch.testing.assert_close(D(x[..., :4 * 2 ** stage, :4 * 2 ** stage]), previous_scores)
        G.set_growth(stage, 1.0)
        assert not torch.allclose(G(z), upsampled)  # alpha 1: the new block's own output


def test_progan_tanh_output_is_the_linear_output_squashed():
    torch.manual_seed(0)
    G_tanh, _, config = build_model("progan", image_size=32, **PROGAN_TINY)
    G_linear, _, _ = build_model("progan", image_size=32, tanh_output=False, **PROGAN_TINY)
    G_linear.load_state_dict(G_tanh.state_dict())
    z = torch.randn(4, config.z_dim)
    for alpha in (0.0, 0.5, 1.0):
        G_tanh.set_growth(2, alpha)
        G_linear.set_growth(2, alpha)
        torch.testing.assert_close(G_tanh(z), torch.tanh(G_linear(z)))


def test_progan_growth_schedule_stages_fade_and_batch_sizes():
    from medgan_core.models.progan import growth_plan

    config = make_config("progan", {"image_size": 32, "stage_images": 64, "fade_fraction": 0.5,
                                    "stage_batch_sizes": (16, 16, 8, 8)})
    plans = [growth_plan(config, step) for step in range(40)]
    assert [p.stage for p in plans[:4]] == [0] * 4 and plans[4].stage == 1 and plans[8].stage == 2
    assert [p.alpha for p in plans[4:8]] == [0.5, 1.0, 1.0, 1.0]  # fade over half of the 4-step stage
    assert [p.batch_size for p in (plans[0], plans[8], plans[16])] == [16, 8, 8]
    assert plans[-1].stage == 3 and plans[-1].resolution == 32 and plans[0].total_steps == 4 + 4 + 8 + 8
    assert growth_plan(config, 0, n_critic=2).total_steps == 12


def test_progan_follows_the_paper_and_files_saved_before_keep_their_layers(tmp_path):
    from medgan_core.hub import from_pretrained, save_pretrained
    from medgan_core.models.layers import EqualLinear
    from medgan_core.registry import stored_config

    _, D, config = build_model("progan", image_size=32, **PROGAN_TINY)
    assert config.as_in_paper and isinstance(D.final[-1], EqualLinear)
    assert [m.scale for m in build_model("progan", config)[0].to_image] == [0.25] * 4  # gain 1 / sqrt(16 channels)
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "as_in_paper"}  # as written before the field
    assert make_config("progan", old).as_in_paper  # a user's settings take the defaults
    assert not stored_config("progan", old).as_in_paper and stored_config("progan", dataclasses.asdict(config))
    torch.manual_seed(0)
    legacy, legacy_D, _ = build_model("progan", image_size=32, as_in_paper=False, **PROGAN_TINY)
    assert isinstance(legacy_D.final[-1], torch.nn.Linear)
    save_pretrained(legacy, tmp_path, model_name="progan")
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["model_config"]["as_in_paper"]  # a file saved before the field existed
    (tmp_path / "config.json").write_text(json.dumps(stored))
    z = torch.randn(3, config.z_dim)
    torch.testing.assert_close(from_pretrained(tmp_path)(z), legacy.eval()(z))  # it still draws what it drew


def test_progan_stage_survives_a_state_dict_round_trip():
    G, _, config = build_model("progan", image_size=32, **PROGAN_TINY)
    G.set_growth(1, 0.25)
    fresh, _, _ = build_model("progan", config)
    fresh.load_state_dict(G.state_dict())
    assert (fresh._stage, fresh._alpha) == (1, 0.25)
    assert fresh(torch.randn(2, config.z_dim)).shape == (2, 1, 8, 8)
