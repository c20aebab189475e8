"""Loss functions against closed forms."""
import math

import pytest
import torch

from medgan_core.losses import (OBJECTIVES, d_logistic_loss, drift_penalty, g_nonsaturating_loss, gradient_penalty,
                                wasserstein_d_loss, wasserstein_g_loss)


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
    assert set(stats) == {"wasserstein", "gp"} and stats["gp"].item() < 1e-8
    with pytest.raises(ValueError, match="has no option"):
        objective.resolve_options({"gp_lamda": 5})
