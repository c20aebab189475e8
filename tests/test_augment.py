"""Augmentation pipelines: identity cases, fill value, double differentiability, the ADA p rule, exact resume."""
import math

import pytest
import torch
import torch.nn as nn

from medgan_core.augment import ADA_OPS, AUGMENTS, DIFFAUGMENT_OPS, Augment, build_augment, cut_out, translate, warp

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# every op of every pipeline, alone and always applied
OP_CASES = ([("diffaugment", {"policy": (op,)}) for op in DIFFAUGMENT_OPS]
            + [("ada", {"ops": (op,), "p_init": 1.0}) for op in ADA_OPS])
PIPELINES = [("none", {}), ("diffaugment", {}), ("ada", {"p_init": 1.0})]


def ramp(batch=2, channels=1, size=8, dtype=torch.float32):
    """(B, C, size, size) fixed images spanning [-1, 1]."""
    return torch.linspace(-1, 1, batch * channels * size * size, dtype=dtype).view(batch, channels, size, size)


def seeded(augment: Augment, seed: int = 0):
    """``augment`` with its random parameters fixed: the same draws on every call, global RNG left untouched."""
    def run(images):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return augment(images)
    return run


def signs(positive: int, negative: int) -> torch.Tensor:
    """Synthetic logits with ``positive`` values > 0 and ``negative`` values < 0."""
    return torch.cat([torch.full((positive,), 2.5), torch.full((negative,), -0.7)])


# --- registry ----------------------------------------------------------------------------------------------------

def test_registry_holds_the_three_pipelines():
    assert set(AUGMENTS) == {"none", "diffaugment", "ada"}
    for name, options in PIPELINES:
        assert isinstance(build_augment(name, **options), Augment)
    assert set(DIFFAUGMENT_OPS) == {"brightness", "contrast", "translation", "cutout"}  # no saturation: grayscale
    assert set(ADA_OPS) == {"xflip", "brightness", "contrast", "translation", "scale", "rotation", "cutout"}


@pytest.mark.parametrize("name, options, message", [
    ("diffaug", {}, r"valid names: \['ada', 'diffaugment', 'none'\]"),
    ("ada", {"taget": 0.6}, r"no option\(s\) \['taget'\].*'target': 0.6"),
    ("none", {"fill": -1.0}, r"no option\(s\) \['fill'\]; its options: none"),
    ("diffaugment", {"policy": ("translation", "saturation")}, r"no op\(s\) \['saturation'\]; its ops: \['bright"),
    ("diffaugment", {"policy": "translation"}, "tuple of names"),
    ("ada", {"ops": ("hue",)}, r"no op\(s\) \['hue'\]"),
    ("ada", {"p_init": 1.5}, r"p_init must lie in \[0, 1\]"),
    ("ada", {"interval": 0}, "interval must be"),
    ("ada", {"ada_kimg": 0}, "ada_kimg must be positive"),
    ("ada", {"target": 1.0}, "target must lie in"),
])
def test_build_augment_names_what_is_valid(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_augment(name, **options)


def test_ops_run_in_canonical_order_and_lists_are_accepted():
    # colour before geometry before cutout whatever the order given; lists come back from JSON configs
    assert build_augment("diffaugment", policy=["cutout", "brightness"]).policy == ("brightness", "cutout")
    assert build_augment("ada", ops=["cutout", "xflip", "rotation"]).ops == ("xflip", "rotation", "cutout")


# --- identity and RNG --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", [("none", {}), ("ada", {}), ("diffaugment", {"policy": ()})])
def test_disabled_pipelines_are_exactly_the_identity_and_draw_no_random_numbers(name, options):
    augment = build_augment(name, **options)
    images = torch.randn(4, 1, 8, 8)
    rng_before = torch.get_rng_state()
    assert torch.equal(augment(images), images)
    assert torch.equal(torch.get_rng_state(), rng_before)  # a run with ADA at p = 0 matches one without augmentation
    assert augment.p.item() == 0.0


def test_ada_at_p_zero_leaves_the_next_random_draws_unchanged():
    torch.manual_seed(3)
    build_augment("ada")(torch.randn(4, 1, 8, 8))
    with_augment = torch.rand(5)
    torch.manual_seed(3)
    torch.randn(4, 1, 8, 8)
    assert torch.equal(torch.rand(5), with_augment)


def test_ada_images_not_chosen_are_left_exactly_as_they_were():
    torch.manual_seed(0)
    augment = build_augment("ada", ops=("contrast",), p_init=0.5)
    images = torch.randn(2000, 1, 4, 4)
    out = augment(images)
    unchanged = (out == images).flatten(1).all(1).float().mean().item()
    assert 0.45 < unchanged < 0.55  # each image chosen with probability p


# --- fill value --------------------------------------------------------------------------------------------------

def test_translate_fills_the_uncovered_pixels_with_minus_one():
    images = torch.full((1, 1, 4, 4), 0.5)
    out = translate(images, torch.tensor([[1, -2]]), fill=-1.0)  # down 1, left 2
    expected = torch.full((1, 1, 4, 4), 0.5)
    expected[..., 0, :] = -1.0
    expected[..., :, 2:] = -1.0
    assert torch.equal(out, expected)


def test_cut_out_sets_the_square_to_minus_one_even_past_the_border():
    out = cut_out(torch.full((1, 1, 4, 4), 0.5), torch.tensor([[-1, 3]]), (2, 2), fill=-1.0)
    expected = torch.full((1, 1, 4, 4), 0.5)
    expected[..., 0, 3] = -1.0
    assert torch.equal(out, expected)


def test_warp_is_a_rotation_about_the_centre_with_minus_one_outside_also_for_wide_images():
    images = torch.arange(32.0).view(1, 1, 4, 8)
    out = warp(images, torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]]), fill=-1.0)  # a quarter turn
    torch.testing.assert_close(out[..., 2:6], torch.rot90(images[..., 2:6], -1, dims=(2, 3)))
    assert (out[..., :2] == -1).all() and (out[..., 6:] == -1).all()
    torch.testing.assert_close(warp(images, torch.eye(2)[None], fill=-1.0), images)


@pytest.mark.parametrize("name, op", [("diffaugment", "translation"), ("diffaugment", "cutout"),
                                      ("ada", "translation"), ("ada", "cutout")])
def test_pipelines_fill_with_the_background_never_mid_grey(name, op):
    key = "policy" if name == "diffaugment" else "ops"
    augment = build_augment(name, **{key: (op,)}, **({"p_init": 1.0} if name == "ada" else {}))
    torch.manual_seed(0)
    out = augment(torch.full((64, 1, 16, 16), 0.5))
    assert set(out.unique().tolist()) == {-1.0, 0.5}
    filled = (out == -1).flatten(1).sum(1)
    if op == "cutout":  # an 8 x 8 square, at least a quarter of it inside the image
        assert filled.min() >= 16 and filled.max() <= 64


def test_zoomed_out_images_get_minus_one_corners():
    out = warp(torch.full((1, 1, 8, 8), 0.5), 2 * torch.eye(2)[None], fill=-1.0)  # content shrunk to half
    assert out[0, 0, 0, 0] == -1 and out[0, 0, -1, -1] == -1 and out[0, 0, 4, 4] == 0.5


# --- shape, dtype, layout ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", PIPELINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_channels_last_are_preserved(name, options, dtype, channels):
    images = torch.randn(3, channels, 16, 16, dtype=dtype).to(memory_format=torch.channels_last)
    out = build_augment(name, **options)(images)
    assert out.shape == images.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    plain = build_augment(name, **options)(images.contiguous())
    assert plain.is_contiguous()


@pytest.mark.parametrize("name, options", PIPELINES)
def test_runs_under_cpu_autocast_and_keeps_the_input_dtype(name, options):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = build_augment(name, **options)(torch.randn(2, 1, 8, 8))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# --- differentiability -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", OP_CASES, ids=[f"{n}-{next(iter(o.values()))[0]}" for n, o in OP_CASES])
def test_every_op_is_twice_differentiable(name, options):
    augment = seeded(build_augment(name, **options))
    images = (torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert not torch.equal(augment(images), images)  # the op does act with this seed
    assert torch.autograd.gradcheck(augment, (images,))
    assert torch.autograd.gradgradcheck(augment, (images,))


@pytest.mark.parametrize("name, options", PIPELINES)
def test_r1_penalty_trains_d_through_the_augmentation(name, options):
    torch.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(36, 1))
    real = torch.rand(4, 1, 8, 8).mul(2).sub(1).requires_grad_()
    logits = D(build_augment(name, **options)(real))
    (gradients,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    gradients.square().sum().backward()
    for weight in (D[0].weight, D[3].weight):  # the biases do not enter the input gradient
        assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0


# --- randomness and fixed outputs --------------------------------------------------------------------------------

def test_diffaugment_is_deterministic_for_a_seed_and_differs_between_seeds():
    augment, images = build_augment("diffaugment"), ramp(4)
    assert torch.equal(seeded(augment, 0)(images), seeded(augment, 0)(images))
    assert not torch.equal(seeded(augment, 0)(images), seeded(augment, 1)(images))


# seed 0 on ramp(): computed once with torch 2.14.1 on the CPU; a change means the ops or their draws changed
EXPECTED_DIFFAUGMENT_ROW = [-0.577186, -0.567918, -0.558651, -0.549384, -0.540116, -0.530849, -0.521581, -0.512314]
EXPECTED_DIFFAUGMENT_COLUMN = [0.588024, 0.66765, 0.747276, 0.826902, 0.906528, 0.986153, 1.065779, -1.0]
EXPECTED_ADA_ROW = [-0.984229, -0.611261, -0.446019, -0.455275, -0.464531, -0.473787, -0.489106, -0.719079]
EXPECTED_ADA_COLUMN = [-0.159133, 0.145932, 0.286182, 0.426433, 0.566683, 0.706933, 0.847184, 0.20504]


def test_diffaugment_fixed_output():
    out = seeded(build_augment("diffaugment"), 0)(ramp())
    expected_row = torch.tensor(EXPECTED_DIFFAUGMENT_ROW)
    expected_column = torch.tensor(EXPECTED_DIFFAUGMENT_COLUMN)
    torch.testing.assert_close(out[0, 0, 3], expected_row, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1, 0, :, 5], expected_column, rtol=0, atol=1e-5)


def test_ada_fixed_output_at_p_one():
    out = seeded(build_augment("ada", p_init=1.0), 0)(ramp())
    expected_row = torch.tensor(EXPECTED_ADA_ROW)
    expected_column = torch.tensor(EXPECTED_ADA_COLUMN)
    torch.testing.assert_close(out[0, 0, 3], expected_row, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1, 0, :, 5], expected_column, rtol=0, atol=1e-5)


# --- the ADA p rule ----------------------------------------------------------------------------------------------

def test_p_rises_by_batch_times_interval_over_ada_kimg_when_d_is_overconfident():
    augment = build_augment("ada", ada_kimg=100, interval=4)
    for _ in range(4):
        augment.accumulate(signs(8, 0))  # r_t = 1 > 0.6
    augment.update(batch_images=8)
    assert augment.p.item() == torch.tensor(8 * 4 / 100_000).item()
    assert augment.stats()["ada_rt"].item() == 1.0
    assert augment.count.item() == 0 and augment.sign_sum.item() == 0  # sums restart


def test_p_falls_when_r_t_is_below_target_and_holds_at_the_target():
    augment = build_augment("ada", p_init=0.5, ada_kimg=1, interval=1)
    augment.accumulate(signs(3, 2))  # r_t = 0.2 < 0.6
    augment.update(batch_images=100)
    assert augment.p.item() == pytest.approx(0.4)
    assert augment.stats()["ada_rt"].item() == pytest.approx(0.2)
    augment.accumulate(signs(4, 1))  # r_t = 0.6: no move
    augment.update(batch_images=100)
    assert augment.p.item() == pytest.approx(0.4)


def test_p_is_clamped_to_zero_and_one():
    low = build_augment("ada", ada_kimg=1, interval=1)
    low.accumulate(signs(0, 8))
    low.update(batch_images=500)
    assert low.p.item() == 0.0
    high = build_augment("ada", p_init=0.9, ada_kimg=1, interval=1)
    high.accumulate(signs(8, 0))
    high.update(batch_images=500)
    assert high.p.item() == 1.0


def test_update_without_logits_changes_nothing_and_stats_start_with_nan():
    augment = build_augment("ada", p_init=0.3)
    augment.update(batch_images=8)
    assert augment.p.item() == pytest.approx(0.3)
    assert math.isnan(augment.stats()["ada_rt"].item())


def test_step_updates_every_interval_d_steps():
    augment = build_augment("ada", ada_kimg=1, interval=3)
    moves = []
    for _ in range(6):
        augment.accumulate(signs(4, 0))
        augment.step(batch_images=10)
        moves.append(augment.p.item())
    assert moves == pytest.approx([0, 0, 0.03, 0.03, 0.03, 0.06])


def test_state_dict_round_trip_resumes_exactly_mid_interval():
    a = build_augment("ada", ada_kimg=1, interval=4)
    for logits in (signs(8, 0), signs(8, 0), signs(8, 0), signs(8, 0), signs(5, 3), signs(1, 7)):
        a.accumulate(logits)
        a.step(batch_images=8)
    state = {key: value.clone() for key, value in a.state_dict().items()}  # as saved to a checkpoint file
    assert set(state) == {"p", "sign_sum", "count", "steps", "rt"}
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert state["count"].item() == 16 and state["steps"].item() == 2  # saved between two updates

    b = build_augment("ada", ada_kimg=1, interval=4)
    b.load_state_dict(state, strict=True)
    images = ramp(4)
    assert torch.equal(seeded(a, 5)(images), seeded(b, 5)(images))  # the loaded p drives the forward pass
    for augment in (a, b):
        for logits in (signs(8, 0), signs(0, 8)):
            augment.accumulate(logits)
            augment.step(batch_images=8)
    assert a.p.item() == b.p.item() and a.p.item() != state["p"].item()
    assert a.rt.item() == b.rt.item()
    assert torch.equal(seeded(a, 6)(images), seeded(b, 6)(images))


def test_non_adaptive_pipelines_keep_no_state_and_ignore_the_p_calls():
    for name in ("none", "diffaugment"):
        augment = build_augment(name)
        augment.accumulate(signs(8, 0))
        augment.update(batch_images=8)
        augment.step(batch_images=8)
        assert augment.state_dict() == {}
        assert set(augment.stats()) == {"aug_p"}
    assert build_augment("diffaugment").p.item() == 1.0


# --- CUDA (skipped without a GPU) --------------------------------------------------------------------------------

@CUDA
@pytest.mark.parametrize("name, options", PIPELINES)
def test_cuda_autocast_channels_last_and_no_host_sync(name, options):
    augment = build_augment(name, **options).to("cuda")
    images = torch.randn(4, 3, 16, 16, device="cuda").to(memory_format=torch.channels_last).requires_grad_()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in forward or accumulate raises
    try:
        with torch.autocast("cuda", dtype=torch.float16):
            out = augment(images)
            augment.accumulate(out.flatten(1).mean(1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    (gradients,) = torch.autograd.grad(out.square().sum(), images, create_graph=True)
    gradients.sum().backward()


@CUDA
def test_cuda_diffaugment_is_deterministic_for_a_seed():
    augment, images = build_augment("diffaugment").to("cuda"), ramp(4).cuda()
    torch.manual_seed(0)
    first = augment(images)
    torch.manual_seed(0)
    assert torch.equal(augment(images), first)
