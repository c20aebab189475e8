"""GAN losses as pure tensor functions, and the objectives (D loss + G loss) that combine them.

The pure functions take logits or modules and return scalars, like rosinality's ``train.py``.
An :class:`Objective` bundles one discriminator loss and one generator loss; models name
their objective in the registry and the training loop looks it up in ``OBJECTIVES``.
"""
from __future__ import annotations

import math
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


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 penalty ``E[||grad_x D(x)||^2]`` on real images (Mescheder et al., 2018).

    Multiply by ``gamma / 2`` in the objective. ``real`` must have ``requires_grad`` set before ``D`` ran on it; the
    graph is kept so the penalty trains D.

    Args:
        real_scores: D outputs on ``real``, (B,).
        real: the real images the scores were computed from, (B, C, H, W).
    Returns:
        Scalar penalty (unweighted).
    """
    (gradients,) = torch.autograd.grad(real_scores.float().sum(), real, create_graph=True)
    return gradients.float().square().flatten(1).sum(1).mean()


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor,
                        decay: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """StyleGAN2 path-length penalty ``E[(||J_w^T y||_2 - a)^2]`` (Karras et al., 2020).

    ``y`` is Gaussian noise scaled by ``1/sqrt(H*W)`` (drawn from the global RNG); ``J_w`` is the Jacobian of the
    images w.r.t. the styles; ``a`` is the running mean of the path lengths, updated by ``decay`` before use.

    Args:
        images: generator output (B, C, H, W) computed from ``ws``.
        ws: styles (B, num_ws, w_dim) with ``requires_grad``.
        pl_mean: running mean of path lengths, 0-dim tensor (not modified).
        decay: weight of the new batch mean in the running mean (0.01 in the paper).
    Returns:
        ``(penalty, new_pl_mean, path_lengths (B,))``; multiply the penalty by the weight (2) in the objective.
    """
    height, width = images.shape[-2:]
    noise = torch.randn_like(images, dtype=torch.float32) / math.sqrt(height * width)
    (gradients,) = torch.autograd.grad((images.float() * noise).sum(), ws, create_graph=True)
    path_lengths = gradients.float().square().sum(2).mean(1).sqrt()  # (B,)
    new_mean = pl_mean.float() + decay * (path_lengths.detach().mean() - pl_mean.float())
    return (path_lengths - new_mean).square().mean(), new_mean, path_lengths


@dataclass(frozen=True)
class Regularizer:
    """A lazy penalty (Karras et al., 2020): evaluated every ``interval`` updates of its network, in float32,
    with its loss multiplied by the interval.

    ``loss`` is ``(net, batch, labels, state, **options) -> (loss, stats)``: for D ``batch`` is the real images,
    for G it is the latents ``z``. ``state`` is the objective's state dict (e.g. the path-length mean), which the
    function may update in place. The interval is read from ``options[interval_option]`` (0 turns it off).
    """

    loss: Callable
    interval_option: str


@dataclass(frozen=True)
class Objective:
    """A loss recipe: ``d_loss(D, real, fake, labels, **options) -> (loss, stats)`` and
    ``g_loss(D, fake, labels, **options) -> (loss, stats)``, plus optional lazy regularisers of D and G, and an
    optional ``g_real(G, real, labels, **options) -> (loss, stats)`` added to every G loss: a term that needs the
    generator and the real batch (SinGAN's reconstruction).

    ``options`` are the recipe's settings (e.g. ``gp_lambda``) with their defaults; ``TrainConfig.loss_options``
    overrides them; ``auto_options(options, image_size, batch_size)`` fills those left as ``None`` (StyleGAN2's
    R1 gamma). ``stats`` holds detached scalar tensors logged to history (no host sync per step); ``d_loss`` also
    returns the detached real scores (B,) under ``"real_scores"``, which adaptive augmentation reads and the logger
    skips. ``state`` gives the initial values of the tensors the recipe keeps across steps (saved in checkpoints).
    """

    name: str
    d_loss: Callable
    g_loss: Callable
    options: dict = field(default_factory=dict)
    d_reg: Regularizer | None = None
    g_reg: Regularizer | None = None
    state: dict[str, float] = field(default_factory=dict)
    auto_options: Callable | None = None
    g_real: Callable | None = None

    def resolve_options(self, overrides: dict, image_size: int | None = None, batch_size: int | None = None) -> dict:
        """The recipe's options with ``overrides`` applied and automatic values filled in.

        Raises:
            ValueError: naming options this recipe does not have.
        """
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            raise ValueError(f"loss {self.name!r} has no option(s) {unknown}; its options: {self.options}")
        options = {**self.options, **overrides}
        return self.auto_options(options, image_size, batch_size) if self.auto_options else options

    def reg_interval(self, regularizer: Regularizer | None, options: dict) -> int:
        """Updates between two evaluations of ``regularizer`` (0 when the recipe has none or it is switched off)."""
        return int(options[regularizer.interval_option]) if regularizer is not None else 0

    def initial_state(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Fresh float32 tensors for the recipe's state."""
        return {name: torch.tensor(float(value), device=device) for name, value in self.state.items()}


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
             "d_fake": torch.sigmoid(fake_logits).mean().detach(), "real_scores": real_logits.detach()}
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
    stats = {"wasserstein": (real_scores.mean() - fake_scores.mean()).detach().float(), "gp": penalty.detach(),
             "real_scores": real_scores.detach()}
    return loss, stats


def _wgan_gp_g(D, fake, labels, gp_lambda, drift):
    return wasserstein_g_loss(D(fake, labels)), {}


WGAN_GP = register_objective(Objective("wgan-gp", _wgan_gp_d, _wgan_gp_g, {"gp_lambda": 10.0, "drift": 0.0}))


STYLEGAN2_LOSSES = ("logistic", "wgan-gp")


def _stylegan2_d(D, real, fake, labels, **options):
    if options["loss"] == "wgan-gp":  # the WGAN-GP + R1 recipe of StyleGAN2 brain-slice projects
        return _wgan_gp_d(D, real, fake, labels, options["gp_lambda"], drift=0.0)
    return _nonsaturating_d(D, real, fake, labels)


def _stylegan2_g(D, fake, labels, **options):
    scores = D(fake, labels)
    return (wasserstein_g_loss(scores) if options["loss"] == "wgan-gp" else g_nonsaturating_loss(scores)), {}


def _r1_regularizer(D, real, labels, state, **options):
    real = real.detach().float().requires_grad_(True)
    penalty = r1_penalty(D(real, labels), real)
    return options["r1_gamma"] / 2 * penalty, {"r1": penalty.detach()}


def _path_length_regularizer(G, z, labels, state, **options):
    n = max(1, z.shape[0] // options["pl_batch_shrink"])  # a smaller batch: the penalty needs no big one
    ws = G.mapping(z[:n], None if labels is None else labels[:n])  # (n, num_ws, w_dim); unmixed, unlike ada
    penalty, state["pl_mean"], path_lengths = path_length_penalty(G.synthesis(ws), ws, state["pl_mean"],
                                                                  options["pl_decay"])
    return options["pl_weight"] * penalty, {"pl_penalty": penalty.detach(), "pl_mean": state["pl_mean"].detach()}


def _stylegan2_auto_options(options: dict, image_size: int | None, batch_size: int | None) -> dict:
    if options["loss"] not in STYLEGAN2_LOSSES:
        raise ValueError(f"stylegan2 loss {options['loss']!r} is unknown; use one of {STYLEGAN2_LOSSES}")
    if options["r1_gamma"] is None:
        if image_size is None or batch_size is None:
            raise ValueError("r1_gamma=None (automatic) needs the image size and batch size")
        options = {**options, "r1_gamma": 0.0002 * image_size ** 2 / batch_size}  # stylegan2-ada's `auto` rule
    return options


STYLEGAN2 = register_objective(Objective(
    "stylegan2", _stylegan2_d, _stylegan2_g,
    options={"loss": "logistic", "r1_gamma": None, "r1_interval": 16, "pl_weight": 2.0, "pl_decay": 0.01,
             "pl_interval": 4, "pl_batch_shrink": 2, "gp_lambda": 10.0},
    d_reg=Regularizer(_r1_regularizer, "r1_interval"), g_reg=Regularizer(_path_length_regularizer, "pl_interval"),
    state={"pl_mean": 0.0}, auto_options=_stylegan2_auto_options))


def _singan_d(D, real, fake, labels, gp_lambda, rec_weight):
    return _wgan_gp_d(D, real, fake, labels, gp_lambda, drift=0.0)


def _singan_g(D, fake, labels, gp_lambda, rec_weight):
    return wasserstein_g_loss(D(fake, labels)), {}


def _singan_reconstruction(G, real, labels, gp_lambda, rec_weight):
    """``rec_weight`` x MSE between G's reconstruction (its fixed noise) and the real image (Shaham et al., 2019)."""
    error = F.mse_loss(G.reconstruct().expand_as(real), real)
    return rec_weight * error, {"rec_mse": error.detach()}


# SinGAN (Shaham et al. 2019): WGAN-GP with lambda 0.1 plus the reconstruction term, weight 10
SINGAN = register_objective(Objective("singan", _singan_d, _singan_g, {"gp_lambda": 0.1, "rec_weight": 10.0},
                                      g_real=_singan_reconstruction))
