"""GAN losses as pure tensor functions, and the objectives (D loss + G loss) that combine them.

The pure functions take logits or modules and return scalars, like rosinality's ``train.py``.
An :class:`Objective` bundles one discriminator loss and one generator loss; models name
their objective in the registry and the training loop looks it up in ``OBJECTIVES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator BCE-with-logits loss: real -> 1, fake -> 0 (``softplus`` form, numerically stable).

    Args:
        real_logits: D outputs on real images, (B,).
        fake_logits: D outputs on generated images, (B,).
    Returns:
        Scalar loss.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator non-saturating loss ``-log D(G(z))``.

    Args:
        fake_logits: D outputs on generated images, (B,).
    Returns:
        Scalar loss.
    """
    return F.softplus(-fake_logits).mean()


def wasserstein_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Critic loss ``E[D(fake)] - E[D(real)]`` (minimising it maximises the Wasserstein estimate).

    Args:
        real_scores: critic outputs on real images, (B,).
        fake_scores: critic outputs on generated images, (B,).
    Returns:
        Scalar loss.
    """
    return fake_scores.mean() - real_scores.mean()


def wasserstein_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator loss ``-E[D(G(z))]``."""
    return -fake_scores.mean()


def gradient_penalty(critic: Callable, real: torch.Tensor, fake: torch.Tensor,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` on random interpolates of real and fake images.

    Computed in float32 with autocast off, so it is exact under AMP; the graph is kept (``create_graph``)
    so the penalty trains the critic. Multiply by lambda (10 in Gulrajani et al.) in the objective.

    Args:
        critic: ``critic(images, labels) -> (B,)`` scores.
        real: real images (B, C, H, W).
        fake: generated images, same shape (detached).
        labels: class labels for conditional critics.
    Returns:
        Scalar penalty (unweighted).
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    interpolates = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        scores = critic(interpolates, labels).float()
    (gradients,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    return (gradients.flatten(1).norm(2, dim=1) - 1).square().mean()


def drift_penalty(real_scores: torch.Tensor) -> torch.Tensor:
    """ProGAN's epsilon-drift term ``E[D(real)^2]``: keeps critic outputs from drifting far from 0."""
    return real_scores.float().square().mean()


@dataclass(frozen=True)
class Objective:
    """A loss recipe: ``d_loss(D, real, fake, labels, **options) -> (loss, stats)`` and
    ``g_loss(D, fake, labels, **options) -> (loss, stats)``.

    ``options`` are the recipe's settings (e.g. ``gp_lambda``) with their defaults; ``TrainConfig.extra``
    overrides them. ``stats`` holds detached scalar tensors logged to history (no host sync per step).
    """

    name: str
    d_loss: Callable
    g_loss: Callable
    options: dict = field(default_factory=dict)

    def resolve_options(self, overrides: dict) -> dict:
        """The recipe's options with ``overrides`` applied.

        Raises:
            ValueError: naming options this recipe does not have.
        """
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            raise ValueError(f"loss {self.name!r} has no option(s) {unknown}; its options: {self.options}")
        return {**self.options, **overrides}


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` to ``OBJECTIVES`` under its name and return it."""
    OBJECTIVES[objective.name] = objective
    return objective


def _nonsaturating_d(D, real, fake, labels):  # no options
    real_logits = D(real, labels)
    fake_logits = D(fake, labels)
    loss = d_logistic_loss(real_logits, fake_logits)
    stats = {"d_real": torch.sigmoid(real_logits).mean().detach(),
             "d_fake": torch.sigmoid(fake_logits).mean().detach()}
    return loss, stats


def _nonsaturating_g(D, fake, labels):
    return g_nonsaturating_loss(D(fake, labels)), {}


NONSATURATING = register_objective(Objective("nonsaturating", _nonsaturating_d, _nonsaturating_g))


def _wgan_gp_d(D, real, fake, labels, gp_lambda, drift):
    real_scores = D(real, labels)
    fake_scores = D(fake, labels)
    penalty = gradient_penalty(D, real, fake, labels)
    loss = wasserstein_d_loss(real_scores, fake_scores) + gp_lambda * penalty
    if drift:
        loss = loss + drift * drift_penalty(real_scores)
    stats = {"wasserstein": (real_scores.mean() - fake_scores.mean()).detach().float(), "gp": penalty.detach()}
    return loss, stats


def _wgan_gp_g(D, fake, labels, gp_lambda, drift):
    return wasserstein_g_loss(D(fake, labels)), {}


WGAN_GP = register_objective(Objective("wgan-gp", _wgan_gp_d, _wgan_gp_g, {"gp_lambda": 10.0, "drift": 0.0}))
