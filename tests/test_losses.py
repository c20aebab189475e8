"""Loss functions against closed forms."""
import math

import torch

from medgan_core.losses import OBJECTIVES, d_logistic_loss, g_nonsaturating_loss


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
