"""Loss functions against closed forms."""
import math

import pytest
import torch

from medgan_core.losses import (OBJECTIVES, d_logistic_loss, drift_penalty, g_nonsaturating_loss, gradient_penalty,
                                path_length_penalty, r1_penalty, wasserstein_d_loss, wasserstein_g_loss)
from medgan_core.train import lazy_adjusted


def test_logistic_losses_match_binary_cross_entropy():
    real, fake = torch.randn(16), torch.randn(16)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones(16)) + bce(fake, torch.zeros(16))
    torch.testing.assert_close(d_logistic_loss(real, fake), expected_d)
    torch.testing.assert_close(g_nonsaturating_loss(fake), bce(fake, torch.ones(16)))


def test_logistic_loss_at_zero_logits_is_2_log_2():
    zeros = torch.zeros(8)
    assert math.isclose(d_logistic_loss(zeros, zeros).item(), 2 * math.log(2), rel_tol=1e-6)


def test_logistic_loss_is_stable_for_huge_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(d_logistic_loss(big, -big))
    assert d_logistic_loss(big.abs(), -big.abs()).item() < 1e-6


def test_nonsaturating_objective_reports_probabilities():
    D = lambda x, labels: x.flatten()  # logits = the input itself  # noqa: E731
    loss, stats = OBJECTIVES["nonsaturating"].d_loss(D, torch.full((4,), 10.0), torch.full((4,), -10.0), None)
    assert loss.item() < 1e-3
    assert stats["d_real"].item() > 0.99 and stats["d_fake"].item() < 0.01


class LinearCritic(torch.nn.Module):
    """D(x) = scale * <w, x> with ||w|| = 1: its input gradient has norm ``scale`` everywhere."""

    def __init__(self, shape, scale):
        super().__init__()
        weight = torch.randn(shape)
        self.weight = torch.nn.Parameter(weight / weight.norm())
        self.scale = scale

    def forward(self, images, labels=None):
        return self.scale * (images * self.weight).flatten(1).sum(1)


def test_gradient_penalty_is_zero_for_a_1_lipschitz_linear_critic():
    real, fake = torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)
    assert gradient_penalty(LinearCritic((1, 16, 16), 1.0), real, fake).item() < 1e-8


def test_gradient_penalty_of_a_critic_scaled_by_3_is_lambda_times_4():
    real, fake = torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)
    penalty = gradient_penalty(LinearCritic((1, 16, 16), 3.0), real, fake)
    assert abs(10 * penalty.item() - 10 * (3 - 1) ** 2) < 1e-3


def test_gradient_penalty_trains_the_critic_and_works_under_autocast():
    critic = LinearCritic((1, 8, 8), 3.0)
    real, fake = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = gradient_penalty(critic, real, fake)
    assert penalty.dtype == torch.float32 and abs(penalty.item() - 4.0) < 1e-3
    penalty.backward()
    assert critic.weight.grad is not None and critic.weight.grad.norm() > 0


def test_wasserstein_losses_and_objective_stats():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    assert wasserstein_d_loss(real, fake).item() == -3.0
    assert wasserstein_g_loss(fake).item() == 0.0
    assert drift_penalty(real).item() == 10.0
    critic = LinearCritic((1, 4, 4), 1.0)
    objective = OBJECTIVES["wgan-gp"]
    options = objective.resolve_options({"drift": 1e-3})
    loss, stats = objective.d_loss(critic, torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4), None, **options)
    assert set(stats) == {"wasserstein", "gp", "real_scores"} and stats["gp"].item() < 1e-8
    with pytest.raises(ValueError, match="has no option"):
        objective.resolve_options({"gp_lamda": 5})


def test_r1_on_a_linear_critic_is_gamma_over_2_times_the_squared_weight_norm():
    critic = LinearCritic((1, 8, 8), 3.0)  # grad_x D = 3 w with ||w|| = 1, for every image
    real = torch.randn(4, 1, 8, 8, requires_grad=True)
    assert abs(r1_penalty(critic(real), real).item() - 9.0) < 1e-4
    objective = OBJECTIVES["stylegan2"]
    options = objective.resolve_options({"r1_gamma": 0.5})
    loss, stats = objective.d_reg.loss(critic, torch.randn(4, 1, 8, 8), None, {}, **options)
    assert abs(loss.item() - 0.5 / 2 * 9.0) < 1e-4 and abs(stats["r1"].item() - 9.0) < 1e-4
    loss.backward()
    assert critic.weight.grad.norm() > 0  # the penalty trains D


def test_r1_gamma_follows_the_stylegan2_ada_auto_rule_unless_given():
    objective = OBJECTIVES["stylegan2"]
    assert objective.resolve_options({}, image_size=64, batch_size=32)["r1_gamma"] == 0.0002 * 64 ** 2 / 32
    assert objective.resolve_options({"r1_gamma": 1.0}, image_size=64, batch_size=32)["r1_gamma"] == 1.0
    with pytest.raises(ValueError, match="use one of"):
        objective.resolve_options({"loss": "hinge", "r1_gamma": 1.0})


class LinearGenerator(torch.nn.Module):
    """synthesis(ws) = reshape(ws.flatten(1) @ A): its Jacobian is A everywhere."""

    def __init__(self, num_ws=3, w_dim=5, shape=(1, 4, 4)):
        super().__init__()
        self.num_ws, self.w_dim, self.shape = num_ws, w_dim, shape
        self.A = torch.nn.Parameter(torch.randn(num_ws * w_dim, math.prod(shape)))
        self.mapping_scale = torch.nn.Parameter(torch.ones(()))  # ws come out of a trainable mapping

    def mapping(self, z, labels=None):
        return z.view(-1, self.num_ws, self.w_dim) * self.mapping_scale

    def synthesis(self, ws):
        return (ws.flatten(1) @ self.A).view(-1, *self.shape)


def _expected_path_lengths(A, batch, num_ws, w_dim, shape, seed):
    torch.manual_seed(seed)
    noise = torch.randn(batch, *shape) / math.sqrt(shape[-1] * shape[-2])
    gradients = (noise.flatten(1) @ A.T).view(batch, num_ws, w_dim)  # J^T y
    return gradients.square().sum(2).mean(1).sqrt()


def test_path_length_penalty_of_a_linear_generator_matches_its_closed_form():
    G = LinearGenerator()
    ws = torch.randn(6, 3, 5, requires_grad=True)
    torch.manual_seed(1)
    penalty, new_mean, lengths = path_length_penalty(G.synthesis(ws), ws, torch.tensor(2.0), decay=0.01)
    expected = _expected_path_lengths(G.A.detach(), 6, 3, 5, G.shape, seed=1)
    torch.testing.assert_close(lengths.detach(), expected)
    expected_mean = 2.0 + 0.01 * (expected.mean() - 2.0)
    torch.testing.assert_close(new_mean, expected_mean)
    torch.testing.assert_close(penalty.detach(), (expected - expected_mean).square().mean())


def test_path_length_regularizer_uses_a_shrunk_batch_and_updates_the_running_mean():
    G, objective = LinearGenerator(), OBJECTIVES["stylegan2"]
    options = objective.resolve_options({"r1_gamma": 1.0})
    state = objective.initial_state()
    z = torch.randn(8, 15)
    torch.manual_seed(3)
    loss, stats = objective.g_reg.loss(G, z, None, state, **options)
    expected = _expected_path_lengths(G.A.detach(), 4, 3, 5, G.shape, seed=3)  # batch 8 // pl_batch_shrink 2
    torch.testing.assert_close(state["pl_mean"], 0.01 * expected.mean())
    torch.testing.assert_close(loss.detach(), 2.0 * (expected - 0.01 * expected.mean()).square().mean())
    loss.backward()
    assert G.A.grad.norm() > 0


def test_lazy_regularisation_adjusts_adam_lr_and_betas():
    lr, betas = lazy_adjusted(0.0025, (0.0, 0.99), 16)
    assert math.isclose(lr, 0.0025 * 16 / 17)
    assert betas == (0.0, 0.99 ** (16 / 17))
    assert lazy_adjusted(2e-4, (0.5, 0.999), 0) == (2e-4, (0.5, 0.999))
