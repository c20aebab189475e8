"""Differentiable augmentation of every image the discriminator sees, chosen by name: none, DiffAugment, ADA.

With a few thousand MRI slices D memorises the training set and G's training collapses. Augmenting every image D
sees, real and generated alike, with differentiable ops stops that without the augmentations leaking into G's
output: G is trained through the ops (D(augment(G(z)))), so it keeps generating un-augmented images.

- ``"diffaugment"``: Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020
  (arXiv:2006.10738). Every op on every image, always (``p`` = 1).
- ``"ada"``: Karras et al., "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020
  (arXiv:2006.06676). Each op on each image with probability ``p``; ``p`` follows the overfitting heuristic
  r_t = E[sign(D(real))] towards a target.
- ``"none"``: the identity (``p`` = 0).

Choices for brain MRI (images (B, C, H, W) in [-1, 1], C = 1 or 3, background black = -1):

- Fill. Pixels uncovered by translation, scaling or rotation, and the cutout square, take the background value
  ``fill`` = -1. The original codes use 0 (mid-grey in [-1, 1]) or reflection padding, which would draw a grey
  frame or a mirrored skull around the brain.
- Ops offered. DiffAugment: brightness, contrast, integer translation (up to 1/8 of the size), cutout (a square
  of half the size). ADA: the same plus x-flip, isotropic scaling and small rotation (within +-10 degrees, the
  range the evaluator classifier is trained with).
- Ops not offered. Saturation, hue and luma flip: the slices are grayscale (colour ops have nothing to act on, and
  a luma flip inverts the MRI contrast). ADA's 90-degree rotations and anisotropic scaling: the anatomy has a fixed
  orientation and aspect. ADA's fractional translation, image filtering and additive noise: left out to keep the
  pipeline small (the paper's best pipeline, "bgc", has no filtering or noise either).
- Order. Colour ops, then geometric ops, then cutout, whatever order the caller lists them in, so the fill stays
  exactly -1 in the output.
- Scales. Both pipelines keep the numbers of the original codes, which also work on [-1, 1] images. DiffAugment
  brightness adds U(-0.5, 0.5) ([-1, 1] units, i.e. +-0.25 of the [0, 1] range); ADA brightness adds N(0, 0.2^2)
  (0.1 of the [0, 1] range). Contrast scales the deviations from the per-image mean by U(0.5, 1.5) (DiffAugment)
  or by 2^N(0, 0.5^2) (ADA; the original scales about mid-grey 0 instead of the mean). ADA scaling factors are
  2^N(0, 0.2^2).
- Geometric resampling is bilinear ``grid_sample`` (ADA resamples a 2x-upsampled, low-pass filtered copy to avoid
  aliasing; with factors this close to 1 we resample directly). On torch 2.14.1 ``grid_sample`` is twice
  differentiable with respect to its input (``grid_sampler_2d_double_backward``; ``tests/test_augment.py`` checks
  it with ``gradgradcheck``), so R1 can be taken through scaling and rotation. Its CUDA backward uses atomic adds:
  gradients through those two ops are not bitwise reproducible on CUDA.

Randomness: every draw uses the global torch RNG on the images' device, so saving the RNG states makes resume
exact. ``"none"`` and ADA at ``p`` = 0 draw nothing: a run with ADA at p = 0 is bit-identical to one without
augmentation. DiffAugment draws on every call.

Usage in the training loop (one step)::

    augment = build_augment("ada", target=0.6).to(device)
    real_logits = D(augment(real), labels)       # also D(augment(fake), labels) in the D and G losses
    augment.accumulate(real_logits.detach())     # after each D step
    augment.step(batch_images=real.shape[0])     # after each D step: ADA runs update() every `interval` steps
    history.update(augment.stats())              # {"aug_p": ..., "ada_rt": ...}
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

TRANSLATION_RATIO = 1 / 8  # largest integer shift, as a share of the height/width
CUTOUT_RATIO = 1 / 2  # side of the cutout square, as a share of the height/width
DIFFAUGMENT_BRIGHTNESS = 0.5  # brightness offset ~ U(-0.5, 0.5)
DIFFAUGMENT_CONTRAST = (0.5, 1.5)  # contrast factor ~ U(0.5, 1.5)
ADA_BRIGHTNESS_STD = 0.2  # brightness offset ~ N(0, 0.2^2)
ADA_CONTRAST_STD = 0.5  # contrast factor ~ 2^N(0, 0.5^2), i.e. lognormal with std 0.5 ln 2
ADA_SCALE_STD = 0.2  # scaling factor ~ 2^N(0, 0.2^2)
ADA_ROTATION_DEGREES = 10.0  # rotation angle ~ U(-10, 10) degrees

RandomOp = Callable[[torch.Tensor, float], torch.Tensor]  # (images, fill) -> images, drawing its own parameters


# ---------------------------------------------------------------------------------------------------------------
# Ops with explicit per-image parameters: deterministic, differentiable any number of times w.r.t. the images.

def adjust_brightness(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Add one offset to every pixel of each image.

    Args:
        images: (B, C, H, W).
        offsets: (B,) values added, in the images' units.
    Returns:
        (B, C, H, W) images.
    """
    return images + offsets.to(images.dtype).view(-1, 1, 1, 1)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviations from its own mean (over channels and pixels).

    Args:
        images: (B, C, H, W).
        factors: (B,) contrast factors (1 = unchanged).
    Returns:
        (B, C, H, W) images with the same per-image means.
    """
    mean = images.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (images - mean) * factors.to(images.dtype).view(-1, 1, 1, 1) + mean


def flip_x(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror the chosen images left-right.

    Args:
        images: (B, C, H, W).
        flips: (B,) bool, True for the images to mirror.
    Returns:
        (B, C, H, W) images.
    """
    return torch.where(flips.view(-1, 1, 1, 1), images.flip(3), images)


def _box_mask(rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 1, H, W) mask: row offset (B, H) in [0, height) and column offset (B, W) in [0, width)."""
    inside_rows = (rows >= 0) & (rows < height)  # (B, H)
    inside_cols = (cols >= 0) & (cols < width)  # (B, W)
    return inside_rows[:, None, :, None] & inside_cols[:, None, None, :]


def translate(images: torch.Tensor, shifts: torch.Tensor, fill: float = -1.0) -> torch.Tensor:
    """Shift each image by whole pixels; the uncovered pixels take the value ``fill``.

    Args:
        images: (B, C, H, W).
        shifts: (B, 2) integer (down, right) shifts in pixels; output[y, x] = input[y - down, x - right].
        fill: value of the uncovered pixels (the MRI background, -1).
    Returns:
        (B, C, H, W) images.
    """
    batch, _, height, width = images.shape
    rows = torch.arange(height, device=images.device) - shifts[:, :1]  # (B, H) source row of each output row
    cols = torch.arange(width, device=images.device) - shifts[:, 1:]  # (B, W) source column of each output column
    index = torch.arange(batch, device=images.device).view(batch, 1, 1)
    source_rows, source_cols = rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]
    moved = images[index, :, source_rows, source_cols]  # (B, H, W, C): advanced indices first
    return torch.where(_box_mask(rows, cols, height, width), moved.permute(0, 3, 1, 2), fill)


def cut_out(images: torch.Tensor, corners: torch.Tensor, size: tuple[int, int], fill: float = -1.0) -> torch.Tensor:
    """Set a rectangle of each image to ``fill``; it may reach past the image border.

    Args:
        images: (B, C, H, W).
        corners: (B, 2) integer (row, column) of each rectangle's top-left pixel (may be negative).
        size: (height, width) of the rectangle in pixels.
        fill: value written (the MRI background, -1).
    Returns:
        (B, C, H, W) images.
    """
    _, _, height, width = images.shape
    rows = torch.arange(height, device=images.device) - corners[:, :1]  # (B, H) row inside the rectangle
    cols = torch.arange(width, device=images.device) - corners[:, 1:]  # (B, W)
    return torch.where(_box_mask(rows, cols, size[0], size[1]), fill, images)


def warp(images: torch.Tensor, matrices: torch.Tensor, fill: float = -1.0) -> torch.Tensor:
    """Resample each image (bilinear) under a linear map about its centre; uncovered pixels take ``fill``.

    Computed in float32 at least (float64 stays float64) and returned in the images' dtype.

    Args:
        images: (B, C, H, W).
        matrices: (B, 2, 2) maps an output pixel's (x, y) offset from the image centre, in pixels, to the offset it
            samples in the input (so ``I / s`` enlarges the content ``s`` times).
        fill: value of the uncovered pixels (the MRI background, -1).
    Returns:
        (B, C, H, W) images.
    """
    batch, channels, height, width = images.shape
    dtype = torch.promote_types(images.dtype, torch.float32)
    # grid_sample's coordinates are normalised by the half-size per axis: theta = diag(W, H)^-1 @ A @ diag(W, H)
    a = matrices.to(dtype)
    aspect = height / width
    theta = torch.stack([a[:, 0, 0], a[:, 0, 1] * aspect, a[:, 1, 0] / aspect, a[:, 1, 1]], dim=1).view(-1, 2, 2)
    grid = F.affine_grid(F.pad(theta, (0, 1)), [batch, channels, height, width], align_corners=False)  # (B, H, W, 2)
    # zero padding of (images - fill) is padding with fill
    warped = F.grid_sample(images.to(dtype) - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (warped + fill).to(images.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Random ops: draw per-image parameters from the global torch RNG on the images' device, then apply an op above.
# Each registry's insertion order is the order ops run in: colour, geometry, cutout.

DIFFAUGMENT_OPS: dict[str, RandomOp] = {}
ADA_OPS: dict[str, RandomOp] = {}


def _op(*registries: dict[str, RandomOp], name: str) -> Callable[[RandomOp], RandomOp]:
    """Decorator adding a random op to each of ``registries`` under ``name``."""
    def decorator(op: RandomOp) -> RandomOp:
        for registry in registries:
            registry[name] = op
        return op
    return decorator


def _uniform(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(B,) float32 draws from U(low, high)."""
    return torch.rand(images.shape[0], device=images.device) * (high - low) + low


def _normal(images: torch.Tensor, std: float) -> torch.Tensor:
    """(B,) float32 draws from N(0, std^2)."""
    return torch.randn(images.shape[0], device=images.device) * std


def _share(size: int, ratio: float) -> int:
    """``ratio`` of ``size`` pixels, rounded half up (as DiffAugment does)."""
    return int(size * ratio + 0.5)


@_op(ADA_OPS, name="xflip")
def _random_xflip(images: torch.Tensor, fill: float) -> torch.Tensor:
    # a chosen image is mirrored with probability 1/2, so even at p = 1 D sees both orientations
    return flip_x(images, torch.rand(images.shape[0], device=images.device) < 0.5)


@_op(DIFFAUGMENT_OPS, name="brightness")
def _diffaugment_brightness(images: torch.Tensor, fill: float) -> torch.Tensor:
    return adjust_brightness(images, _uniform(images, -DIFFAUGMENT_BRIGHTNESS, DIFFAUGMENT_BRIGHTNESS))


@_op(ADA_OPS, name="brightness")
def _ada_brightness(images: torch.Tensor, fill: float) -> torch.Tensor:
    return adjust_brightness(images, _normal(images, ADA_BRIGHTNESS_STD))


@_op(DIFFAUGMENT_OPS, name="contrast")
def _diffaugment_contrast(images: torch.Tensor, fill: float) -> torch.Tensor:
    return adjust_contrast(images, _uniform(images, *DIFFAUGMENT_CONTRAST))


@_op(ADA_OPS, name="contrast")
def _ada_contrast(images: torch.Tensor, fill: float) -> torch.Tensor:
    return adjust_contrast(images, torch.exp2(_normal(images, ADA_CONTRAST_STD)))


@_op(DIFFAUGMENT_OPS, ADA_OPS, name="translation")
def _random_translation(images: torch.Tensor, fill: float) -> torch.Tensor:
    batch, _, height, width = images.shape
    max_down, max_right = _share(height, TRANSLATION_RATIO), _share(width, TRANSLATION_RATIO)
    down = torch.randint(-max_down, max_down + 1, (batch,), device=images.device)
    right = torch.randint(-max_right, max_right + 1, (batch,), device=images.device)
    return translate(images, torch.stack([down, right], dim=1), fill)


@_op(ADA_OPS, name="scale")
def _random_scale(images: torch.Tensor, fill: float) -> torch.Tensor:
    scales = torch.exp2(_normal(images, ADA_SCALE_STD))  # (B,)
    return warp(images, torch.eye(2, device=images.device) / scales.view(-1, 1, 1), fill)


@_op(ADA_OPS, name="rotation")
def _random_rotation(images: torch.Tensor, fill: float) -> torch.Tensor:
    max_angle = math.radians(ADA_ROTATION_DEGREES)
    angles = _uniform(images, -max_angle, max_angle)  # (B,)
    cos, sin = angles.cos(), angles.sin()
    return warp(images, torch.stack([cos, sin, -sin, cos], dim=1).view(-1, 2, 2), fill)  # inverse rotation


@_op(DIFFAUGMENT_OPS, ADA_OPS, name="cutout")
def _random_cutout(images: torch.Tensor, fill: float) -> torch.Tensor:
    batch, _, height, width = images.shape
    size = (_share(height, CUTOUT_RATIO), _share(width, CUTOUT_RATIO))
    # centres uniform over the image, so a square can hang over any border by up to half its side
    rows = torch.randint(0, height + 1 - size[0] % 2, (batch,), device=images.device) - size[0] // 2
    cols = torch.randint(0, width + 1 - size[1] % 2, (batch,), device=images.device) - size[1] // 2
    return cut_out(images, torch.stack([rows, cols], dim=1), size, fill)


def _select_ops(ops: Iterable[str], available: dict[str, RandomOp], pipeline: str) -> tuple[str, ...]:
    """``ops`` validated against ``available`` and put in the order they run (colour, geometry, cutout)."""
    if isinstance(ops, str):
        raise ValueError(f"augment {pipeline!r}: give ops as a tuple of names such as {tuple(available)}, "
                         f"not the string {ops!r}")
    unknown = [name for name in ops if name not in available]
    if unknown:
        raise ValueError(f"augment {pipeline!r} has no op(s) {unknown}; its ops: {list(available)}")
    return tuple(name for name in available if name in ops)


def _memory_format(images: torch.Tensor) -> torch.memory_format:
    """channels_last when ``images`` is laid out that way (and not also plain contiguous), else contiguous."""
    channels_last = not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


# ---------------------------------------------------------------------------------------------------------------
# Pipelines, registered by name.

AUGMENTS: dict[str, type[Augment]] = {}


def register_augment(name: str) -> Callable[[type[Augment]], type[Augment]]:
    """Class decorator registering an :class:`Augment` subclass under ``name`` for :func:`build_augment`.

    Args:
        name: the string users pass (``"ada"``).
    Returns:
        The decorator (it returns the class unchanged).
    """
    def decorator(cls: type[Augment]) -> type[Augment]:
        if name in AUGMENTS:
            raise ValueError(f"augment {name!r} is registered twice")
        AUGMENTS[name] = cls
        return cls
    return decorator


def build_augment(name: str, **options: Any) -> Augment:
    """Build the augmentation pipeline registered as ``name``.

    Args:
        name: ``"none"``, ``"diffaugment"`` or ``"ada"`` (the keys of ``AUGMENTS``).
        **options: the pipeline's constructor options (e.g. ``target=0.6`` for ``"ada"``).
    Returns:
        The pipeline, on the CPU (move it with ``.to(device)``).
    Raises:
        ValueError: for an unknown name (listing the valid names) or option (listing the valid options and
            their defaults).
    """
    if name not in AUGMENTS:
        raise ValueError(f"unknown augment {name!r}; valid names: {sorted(AUGMENTS)}")
    cls = AUGMENTS[name]
    defaults = {option: parameter.default for option, parameter in inspect.signature(cls).parameters.items()}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"augment {name!r} has no option(s) {unknown}; its options: {defaults or 'none'}")
    return cls(**options)


class Augment(nn.Module):
    """Base class: a differentiable augmentation of the images D sees, real and fake.

    ``forward(images)`` returns images of the same shape, dtype and memory format (channels_last stays
    channels_last), differentiable twice w.r.t. the input (R1 is taken through it); it works under
    ``torch.autocast``. Every pipeline has a 0-d float32 buffer ``p``, the probability that an op is applied to an
    image. Adaptive pipelines (``adaptive = True``) change ``p`` in :meth:`update` and keep it, with their
    accumulators, in ``state_dict()``; the others keep nothing there.

    Attributes:
        adaptive: whether ``p`` changes during training (then :meth:`accumulate`, :meth:`update` and :meth:`step`
            do something; otherwise they are no-ops the loop may call all the same).
    """

    adaptive: bool = False

    def __init__(self, p: float):
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)), persistent=self.adaptive)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: (B, C, H, W) in [-1, 1].
        Returns:
            (B, C, H, W) augmented images, same dtype and memory format (the input itself when nothing applies).
        """
        augmented = self.augment(images)
        if augmented is images:
            return images
        return augmented.to(dtype=images.dtype, memory_format=_memory_format(images))

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """The pipeline's transform (B, C, H, W) -> (B, C, H, W); :meth:`forward` restores dtype and layout."""
        raise NotImplementedError

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record D's outputs on the (augmented) real images of one D step; no-op unless adaptive."""

    def update(self, batch_images: int) -> None:
        """Adjust ``p`` from the recorded outputs; no-op unless adaptive."""

    def step(self, batch_images: int) -> None:
        """Count one D step; adaptive pipelines run :meth:`update` every ``interval`` D steps. No-op otherwise."""

    def stats(self) -> dict[str, torch.Tensor]:
        """Values for the training history (detached copies, no host sync): ``{"aug_p": p}``."""
        return {"aug_p": self.p.clone()}


@register_augment("none")
class NoAugment(Augment):
    """The identity: D sees the images as they are; ``p`` = 0 and no random numbers are drawn."""

    def __init__(self):
        super().__init__(p=0.0)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        return images


@register_augment("diffaugment")
class DiffAugment(Augment):
    """DiffAugment (Zhao et al., 2020): every op of ``policy`` on every image, with its own random parameters.

    Ops: ``"brightness"`` (add U(-0.5, 0.5)), ``"contrast"`` (deviations from the image mean times U(0.5, 1.5)),
    ``"translation"`` (integer shifts up to 1/8 of the size, uncovered pixels = ``fill``), ``"cutout"`` (a square
    of half the size set to ``fill``). They run in that order whatever the order of ``policy``.

    Args:
        policy: names of the ops to apply (an empty tuple is the identity, ``p`` = 0).
        fill: value of uncovered and cut-out pixels (-1, the MRI background).
    """

    def __init__(self, *, policy: tuple[str, ...] = tuple(DIFFAUGMENT_OPS), fill: float = -1.0):
        policy = _select_ops(policy, DIFFAUGMENT_OPS, "diffaugment")
        super().__init__(p=1.0 if policy else 0.0)
        self.policy, self.fill = policy, float(fill)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        for name in self.policy:
            images = DIFFAUGMENT_OPS[name](images, self.fill)
        return images

    def extra_repr(self) -> str:
        return f"policy={self.policy}, fill={self.fill}"


def _refresh_host_copies(module: AdaptiveAugment, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: copy the loaded ``p`` and step count to the host copies the forward pass reads."""
    module._p = float(module.p)
    module._steps = int(module.steps)


@register_augment("ada")
class AdaptiveAugment(Augment):
    """ADA (Karras et al., 2020): each op on each image with probability ``p``, and ``p`` adapts to overfitting.

    Ops, run in this order whatever the order of ``ops``: ``"xflip"`` (a chosen image is mirrored with
    probability 1/2), ``"brightness"`` (add N(0, 0.2^2)), ``"contrast"`` (deviations from the image mean times
    2^N(0, 0.5^2)), ``"translation"`` (integer shifts up to 1/8 of the size), ``"scale"`` (isotropic, factor
    2^N(0, 0.2^2)), ``"rotation"`` (U(-10, 10) degrees), ``"cutout"`` (a square of half the size). Uncovered and
    cut-out pixels take ``fill``.

    The heuristic: :meth:`accumulate` sums sign(D(real)) over the D steps; every ``interval`` D steps
    :meth:`update` sets r_t = E[sign(D(real))] and moves ``p`` by ``sign(r_t - target) * batch_images * interval /
    (ada_kimg * 1000)``, clamped to [0, 1], so ``p`` can go from 0 to 1 in ``ada_kimg`` thousand real images.

    State (``state_dict()``, all tensors): ``p``, ``sign_sum`` and ``count`` (sums since the last update),
    ``steps`` (D steps since the last update, for :meth:`step`) and ``rt`` (the last r_t, NaN before the first
    update). Loading it resumes exactly. Change ``p`` only through :meth:`update` or ``load_state_dict``: the
    forward pass reads a host copy, so that it needs no device sync.

    Args:
        target: the r_t that ``p`` steers to (0.6 in the paper).
        ada_kimg: thousands of real images for ``p`` to move by 1 (the paper uses 500; 100 suits short runs).
        interval: D steps between two updates of ``p`` (4 in the paper).
        p_init: ``p`` at the start.
        ops: names of the ops to apply.
        fill: value of uncovered and cut-out pixels (-1, the MRI background).
    """

    adaptive = True

    def __init__(self, *, target: float = 0.6, ada_kimg: float = 100.0, interval: int = 4, p_init: float = 0.0,
                 ops: tuple[str, ...] = tuple(ADA_OPS), fill: float = -1.0):
        if not -1 < target < 1:
            raise ValueError(f"ada target must lie in (-1, 1) (r_t = E[sign(D(real))]), got {target}")
        if ada_kimg <= 0:
            raise ValueError(f"ada_kimg must be positive, got {ada_kimg}")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"interval must be a whole number of D steps >= 1, got {interval}")
        if not 0 <= p_init <= 1:
            raise ValueError(f"p_init must lie in [0, 1], got {p_init}")
        ops = _select_ops(ops, ADA_OPS, "ada")
        super().__init__(p=p_init)
        self.ops, self.target, self.ada_kimg, self.fill = ops, float(target), float(ada_kimg), float(fill)
        self.interval = int(interval)
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.int64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("rt", torch.tensor(math.nan))
        self._p = float(self.p)  # host copies of p and steps: the forward pass and step() branch on them
        self._steps = 0
        self.register_load_state_dict_post_hook(_refresh_host_copies)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        if self._p == 0:
            return images  # draws nothing: bit-identical to training without augmentation
        for name in self.ops:
            chosen = torch.rand(images.shape[0], device=images.device) < self._p  # (B,)
            images = torch.where(chosen.view(-1, 1, 1, 1), ADA_OPS[name](images, self.fill), images)
        return images

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's outputs on the augmented real images of one D step (on the device, no host sync).

        Args:
            real_logits: D(augment(real)), any shape (one value per image); NaNs count as 0.
        """
        logits = real_logits.detach()
        self.sign_sum += (logits > 0).sum() - (logits < 0).sum()
        self.count += logits.numel()

    def update(self, batch_images: int) -> None:
        """Set r_t from the signs accumulated since the last update, move ``p``, reset the sums (one host sync).

        Call it every ``interval`` D steps (or call :meth:`step` after every D step). Nothing changes when no
        logits were accumulated.

        Args:
            batch_images: real images shown to D in one D step (the D batch size); ``batch_images * interval`` is
                taken as the number of real images seen since the last update.
        """
        count = int(self.count)
        if count == 0:
            return
        rt = int(self.sign_sum) / count
        direction = (rt > self.target) - (rt < self.target)
        # float32 arithmetic on the buffer (as the original): a rise and an equal fall bring p back to exactly 0
        self.p.add_(direction * batch_images * self.interval / (self.ada_kimg * 1000)).clamp_(0.0, 1.0)
        self._p = float(self.p)
        self.rt.fill_(rt)
        self.sign_sum.zero_()
        self.count.zero_()

    def step(self, batch_images: int) -> None:
        """Count one D step and run :meth:`update` on every ``interval``-th.

        Args:
            batch_images: real images shown to D in this D step.
        """
        self._steps = (self._steps + 1) % self.interval
        self.steps.fill_(self._steps)
        if self._steps == 0:
            self.update(batch_images)

    def stats(self) -> dict[str, torch.Tensor]:
        """``{"aug_p": p, "ada_rt": last r_t}`` as detached copies (NaN r_t before the first update)."""
        return {"aug_p": self.p.clone(), "ada_rt": self.rt.clone()}

    def extra_repr(self) -> str:
        return (f"ops={self.ops}, target={self.target}, ada_kimg={self.ada_kimg}, interval={self.interval}, "
                f"fill={self.fill}, p={self._p:.4f}")
