"""GAN losses as pure tensor functions, and the objectives (D loss + G loss) that combine them.

The pure functions take logits or modules and return scalars, like rosinality's ``train.py``.
An :class:`Objective` bundles one discriminator loss and one generator loss; models name
their objective in the registry and the training loop looks it up in ``OBJECTIVES``.
"""
from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Objective:
    """A loss recipe: ``d_loss(D, real, fake, labels) -> (loss, stats)`` and ``g_loss(D, fake, labels) -> (loss, stats)``.

    ``stats`` holds detached scalar tensors logged to history (no host sync per step).
    """

    name: str
    d_loss: Callable
    g_loss: Callable


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` to ``OBJECTIVES`` under its name and return it."""
    OBJECTIVES[objective.name] = objective
    return objective


def _nonsaturating_d(D, real, fake, labels):
    real_logits = D(real, labels)
    fake_logits = D(fake, labels)
    loss = d_logistic_loss(real_logits, fake_logits)
    stats = {"d_real": torch.sigmoid(real_logits).mean().detach(),
             "d_fake": torch.sigmoid(fake_logits).mean().detach()}
    return loss, stats


def _nonsaturating_g(D, fake, labels):
    return g_nonsaturating_loss(D(fake, labels)), {}


NONSATURATING = register_objective(Objective("nonsaturating", _nonsaturating_d, _nonsaturating_g))
