"""The one training loop: ``fit()``.

Every GAN trains here, one step at a time (:func:`train_step`): (1) update D ``n_critic`` times, with its lazy
regulariser when the loss recipe has one (R1), (2) update G, with its lazy regulariser (path length), (3) move the
EMA copy of G. D sees every real and fake image through the run's augmentation (none, DiffAugment or ADA). The
named parts around that step:

- :class:`Recipe`: what is trained and how (model, config, loss recipe and its options, device, AMP).
- :class:`TrainState`: every module, optimizer, scaler, RNG, counter and the state a loss recipe or augmentation
  keeps (path-length mean, ADA p); it saves itself to and loads itself from one checkpoint, so resume is exact.
- :class:`Schedule`: the stage, resolution, fade-in alpha, batch size and learning-rate factor of each step. A
  fixed-size model is a one-stage schedule; ProGAN's growth plan has several, SinGAN-Seg's one per scale (with
  its x0.1 decay late in each). A network with ``begin_stage(stage, real)`` is told when a stage begins.
- :class:`RunLogger`: ``history.csv`` + ``log.jsonl``, the tqdm bar, fixed-noise sample grids, the NaN/inf check.

Run folder layout::

    run_dir/checkpoints/step-00000500.safetensors   (the newest ``keep_checkpoints`` are kept)
    run_dir/samples/step-00000500.png               (G_ema on fixed noise; stage-<k>.png at the end of each stage)
    run_dir/history.csv, run_dir/log.jsonl
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import build_augment
from .checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointError, checkpoint_name, load_checkpoint,
                         load_checkpoint_meta, load_newest_readable, optimizer_meta, optimizer_tensors, save_checkpoint)
from .config import DataConfig, TrainConfig, to_dict
from .data import BatchStream, ImageSet
from .distributed import (World, agree, average_gradients, barrier, broadcast_buffers, join_from_environment,
                          seed_process, shard)
from .loading import checkpoint_info
from .fileio import atomic_write_text
from .losses import OBJECTIVES, Objective
from .registry import ModelSpec, build_model, get_model_spec, make_config, stored_config
from .sampling import fixed_labels, save_grid


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the run folder keeps the last good checkpoint."""


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    run_dir: Path
    step: int  # generator updates done in total
    stopped: str  # "completed" or "time budget"
    generator: nn.Module  # G_ema (or G when EMA is off), eval mode
    discriminator: nn.Module
    checkpoint: Path  # the last checkpoint written
    history: pd.DataFrame


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``TrainConfig.amp`` on ``device`` (None: full precision).

    Raises:
        ValueError: for an unknown setting, or float16 asked for on a CPU.
    """
    if amp is False:
        return None
    if amp is True:
        return torch.float16 if device.type == "cuda" else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs CUDA; on a CPU use amp='bf16' or amp=False")
        return torch.float16
    raise ValueError(f"amp must be True, False, 'bf16' or 'fp16', got {amp!r}")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other torch device string is used as is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lazy_adjusted(lr: float, betas: tuple[float, float], reg_interval: int) -> tuple[float, tuple[float, float]]:
    """Adam settings for a network whose regulariser runs every ``reg_interval`` updates (Karras et al., 2020):
    ``lr * k / (k + 1)`` and ``betas ** (k / (k + 1))``, so the extra optimizer steps keep the same overall rate.

    Args:
        lr: the configured learning rate.
        betas: the configured Adam betas.
        reg_interval: k; 0 means no lazy regulariser (settings unchanged).
    Returns:
        ``(lr, betas)`` to give the optimizer.
    """
    if reg_interval <= 0:
        return lr, tuple(betas)
    ratio = reg_interval / (reg_interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def make_optimizer(name: str, params, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """Adam (fused kernel where supported) or RMSprop.

    Args:
        name: ``"adam"`` or ``"rmsprop"``.
        params: parameters to optimise.
        lr: learning rate.
        betas: Adam betas (ignored by RMSprop).
    Returns:
        The optimizer.
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; use 'adam' or 'rmsprop'")


def ema_beta(step_images: int, images_so_far: int, ema_kimg: float, rampup: float | None) -> float:
    """Per-step EMA decay for a half-life of ``ema_kimg`` thousand images (stylegan2-ada).

    ``beta = 0.5 ** (step_images / ema_nimg)`` with ``ema_nimg = min(ema_kimg * 1000, images_so_far * rampup)``:
    the average forgets half of itself every ``ema_nimg`` images whatever the batch size, and the ramp-up keeps it
    short while G is young.

    Args:
        step_images: real images this step showed D (batch size x n_critic).
        images_so_far: images shown before this step (in the current growth stage for growing models).
        ema_kimg: the half-life in thousands of images; 0 copies G (no averaging).
        rampup: share of ``images_so_far`` that caps the half-life, or ``None``.
    Returns:
        beta in [0, 1).
    """
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, images_so_far * rampup)
    return 0.5 ** (step_images / ema_nimg) if ema_nimg > 0 else 0.0


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * model`` for parameters; buffers (BatchNorm stats, w_avg) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - beta)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def fit_model_config(model: str, data: ImageSet, model_config: dict[str, Any] | None) -> Any:
    """Model config with image size, channels and class count taken from the data unless given.

    Raises:
        ValueError: when an explicit setting contradicts the data.
    """
    spec = get_model_spec(model)
    values = dict(model_config or {})
    _, channels, height, _ = data.images.shape
    from_data = {"image_size": height, "channels": channels}
    if spec.conditional:
        from_data["num_classes"] = len(data.class_names)
    field_names = {f.name for f in dataclasses.fields(spec.config_cls)}
    check_data = getattr(spec.config_cls, "check_data", None)  # e.g. single-image models refuse a whole dataset
    if check_data is not None:
        check_data(data, values)
    if "with_mask" in field_names:  # image+mask models: masks whenever the data have them
        if values.get("with_mask") and data.masks is None:
            raise ValueError(f"model_config with_mask=True but the training data have no masks: load them with "
                             f"DataConfig(masks=True), or set with_mask=False to generate images only")
        values.setdefault("with_mask", data.masks is not None)
    for key, value in from_data.items():
        if key not in field_names:
            continue
        if key in values and values[key] != value:
            raise ValueError(f"model_config {key}={values[key]} but the training data has {key}={value}; "
                             f"drop {key!r} from model_config or change the DataConfig")
        values[key] = value
    return make_config(model, values)


@dataclass
class Recipe:
    """What is trained and how: fixed for the whole run (the same on resume)."""

    model: str
    spec: ModelSpec
    config: Any  # the model's config dataclass
    train: TrainConfig
    objective: Objective
    loss_options: dict[str, Any]  # the objective's options, automatic values filled in
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None: full precision
    world: World = World()  # the training processes (one unless launched by torchrun)

    @property
    def use_amp(self) -> bool:
        return self.amp_dtype is not None

    @classmethod
    def create(cls, model: str, data: ImageSet, train: TrainConfig, model_config: dict | None) -> "Recipe":
        """Resolve the model config from the data, the loss recipe's options and the device."""
        spec = get_model_spec(model)
        config = fit_model_config(model, data, model_config)
        objective = OBJECTIVES[spec.objective]
        options = objective.resolve_options(train.loss_options, data.image_size, train.batch_size)
        world = join_from_environment(train.device)
        device = resolve_device(train.device)
        if device.type == "cuda":
            device = torch.device("cuda", world.local_rank) if world.distributed else device
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True  # fixed shapes per stage: let cuDNN pick the fastest kernels
        if world.distributed and train.augment == "ada":
            raise ValueError("augment='ada' is not synchronised across processes yet (each would adapt its own p): "
                             "use augment='diffaugment' with several processes, or train ADA in one")
        return cls(model, spec, config, train, objective, options, device, amp_dtype(train.amp, device), world)

    @property
    def d_reg_every(self) -> int:
        return self.objective.reg_interval(self.objective.d_reg, self.loss_options)

    @property
    def g_reg_every(self) -> int:
        return self.objective.reg_interval(self.objective.g_reg, self.loss_options)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)


@dataclass(frozen=True)
class Stage:
    """Where a step stands in the schedule."""

    index: int  # 0 for fixed-size models; growth stage (0 = 4 px) for growing ones
    alpha: float  # fade-in of the newest block (1 when not fading)
    batch_size: int
    start: int  # first generator step of this stage
    resolution: int | None  # None = the data's own size
    lr_scale: float = 1.0  # factor on both learning rates (a growth plan's decay within a stage)
    fade_reals: bool = False  # during a fade-in (alpha < 1), reals become alpha * x + (1 - alpha) * up(avgpool(x))


class Schedule:
    """Stage, resolution, fade-in, batch size and learning-rate factor of every generator step, and the run's length.

    A fixed-size model is one stage of ``train.batch_size``; a model registered with a ``growth`` plan (ProGAN,
    SinGAN-Seg) follows it. The run lasts ``train.max_steps`` when set, else the growth plan or ``train.epochs``
    epochs.
    """

    def __init__(self, recipe: Recipe, data: ImageSet):
        self.growth, self.config, self.n_critic = recipe.spec.growth, recipe.config, recipe.train.n_critic
        self.batch_size = recipe.train.batch_size
        if self.growth:
            planned = self.growth(self.config, 0, self.n_critic).total_steps
        else:
            per_epoch = BatchStream(data, self.batch_size).steps_per_epoch() / self.n_critic
            planned = math.ceil(recipe.train.epochs * per_epoch)
        self.total_steps = recipe.train.max_steps if recipe.train.max_steps is not None else planned

    def stage(self, step: int) -> Stage:
        """The :class:`Stage` of generator step ``step`` (0-based)."""
        if not self.growth:
            return Stage(0, 1.0, self.batch_size, 0, None)
        plan = self.growth(self.config, step, self.n_critic)
        return Stage(plan.stage, plan.alpha, plan.batch_size, plan.stage_start, plan.resolution, plan.lr_scale,
                     plan.fade_reals)

    def apply(self, stage: Stage, *networks: nn.Module) -> None:
        """Set a growing model's networks to ``stage``'s resolution and fade-in (nothing for fixed-size models)."""
        if self.growth:
            for network in networks:
                network.set_growth(stage.index, stage.alpha)

    @staticmethod
    def begin(stage: Stage, batches: "StageBatches", *networks: nn.Module) -> None:
        """Tell the networks that prepare for a stage (``begin_stage(index, real)``: SinGAN-Seg initialises the new
        scale and measures its noise amplitude) that ``stage`` begins, with the stage's first real batch."""
        preparing = [network for network in networks if hasattr(network, "begin_stage")]
        if preparing:
            real = batches.first()
            for network in preparing:
                network.begin_stage(stage.index, real)

    def images_in_stage(self, stage: Stage, step: int) -> int:
        """Real images D has seen since ``stage`` began, before generator step ``step``."""
        return (step - stage.start) * stage.batch_size * self.n_critic


class StageBatches:
    """Endless, resumable real batches of the current stage's resolution and batch size, from one decoded cache."""

    def __init__(self, data: ImageSet, train: TrainConfig, device: torch.device, world: World = World(),
                 masks: bool = False):
        self.data, self.train, self.device, self.world, self.masks = data, train, device, world, masks
        self.stage: Stage | None = None
        self._batches: Iterator | None = None
        self._real_alpha = 1.0  # the current step's fade-in of the real images (1: none)

    def enter(self, stage: Stage, step: int) -> Stage | None:
        """Serve ``stage`` from generator step ``step`` on (called every step); returns the stage just finished, if
        this starts a new one.

        Raises:
            ValueError: when the stage's (global) batch does not split evenly over the training processes.
        """
        self._real_alpha = stage.alpha if stage.fade_reals and stage.index > 0 else 1.0
        if self.stage is not None and stage.index == self.stage.index:
            return None
        if stage.batch_size % self.world.size:
            raise ValueError(f"batch size {stage.batch_size} (stage {stage.index}) does not split over "
                             f"{self.world.size} processes: use a multiple of {self.world.size}")
        stream = BatchStream(self.data, stage.batch_size, seed=self.train.seed + 1009 * stage.index,
                             balanced=self.train.balanced, hflip=self.train.hflip, device=self.device,
                             channels_last=self.train.channels_last, resolution=stage.resolution, masks=self.masks)
        self._batches = _endless(stream, (step - stage.start) * self.train.n_critic)
        self._stream = stream
        finished, self.stage = self.stage, stage
        return finished

    def first(self) -> torch.Tensor:
        """The current stage's first real batch (B, C [+ 1], R, R), without moving the stream (resume stays exact)."""
        return next(self._stream.epoch(0))[0]

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        real, labels = next(self._batches)
        if self._real_alpha < 1:  # ProGAN's fade-in: the reals lose detail as the fakes do
            coarse = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
            real = torch.lerp(coarse, real, self._real_alpha)
        return real, labels


def _endless(stream: BatchStream, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches across epochs, starting at global batch index ``start_batch``."""
    epoch, offset = divmod(start_batch, stream.steps_per_epoch())
    while True:
        yield from stream.epoch(epoch, start_step=offset)
        epoch, offset = epoch + 1, 0


@dataclass
class TrainState:
    """Everything that changes during training; :meth:`save` / :meth:`load` make resume exact."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler_g: torch.amp.GradScaler
    scaler_d: torch.amp.GradScaler
    noise: torch.Generator  # training latents only
    augment: nn.Module
    objective_state: dict[str, torch.Tensor]  # e.g. the path-length mean
    step: int = 0  # generator updates
    batches_seen: int = 0  # discriminator updates (one real batch each)
    images_seen: int = 0  # real images shown to D
    modules: ClassVar[tuple[str, ...]] = ("G", "D", "G_ema", "augment")  # saved under these prefixes

    @classmethod
    def create(cls, recipe: Recipe) -> "TrainState":
        """Fresh networks, optimizers and RNGs from ``train.seed`` (a resume then overwrites them)."""
        train, device = recipe.train, recipe.device
        memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        torch.manual_seed(train.seed)
        G, D, _ = build_model(recipe.model, recipe.config)
        if recipe.world.distributed and device.type == "cuda":  # BatchNorm statistics over the global batch
            G, D = nn.SyncBatchNorm.convert_sync_batchnorm(G), nn.SyncBatchNorm.convert_sync_batchnorm(D)
        G, D = G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        lr_g, betas_g = lazy_adjusted(train.lr_g, train.betas, recipe.g_reg_every)
        lr_d, betas_d = lazy_adjusted(train.lr_d, train.betas, recipe.d_reg_every)
        return cls(G, D, G_ema, make_optimizer(train.optimizer, G.parameters(), lr_g, betas_g),
                   make_optimizer(train.optimizer, D.parameters(), lr_d, betas_d),
                   torch.amp.GradScaler(device.type, enabled=recipe.use_amp),
                   torch.amp.GradScaler(device.type, enabled=recipe.use_amp),
                   torch.Generator().manual_seed(train.seed + 1),  # on the CPU: the same latents on any device
                   build_augment(train.augment, **train.augment_options).to(device),
                   recipe.objective.initial_state(device))

    def latents(self, n: int, z_dim: int) -> torch.Tensor:
        """``n`` training latents from the state's own (CPU) noise generator, moved to the networks' device."""
        device = next(self.G.parameters()).device
        return torch.randn(n, z_dim, generator=self.noise).to(device, non_blocking=True)

    def save(self, path: Path, description: dict[str, Any]) -> Path:
        """One checkpoint holding every tensor of the state plus ``description`` and the counters."""
        tensors = {f"{name}.{k}": v for name in self.modules for k, v in getattr(self, name).state_dict().items()}
        tensors.update({f"objective.{k}": v for k, v in self.objective_state.items()})
        tensors.update(optimizer_tensors("opt_g", self.opt_g))
        tensors.update(optimizer_tensors("opt_d", self.opt_d))
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.noise"] = self.noise.get_state()
        device = next(self.G.parameters()).device
        if device.type == "cuda":  # augmentation and dropout-like draws on the GPU
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        meta = {**description, "step": self.step, "batches_seen": self.batches_seen, "images_seen": self.images_seen,
                "optimizers": {"opt_g": optimizer_meta(self.opt_g), "opt_d": optimizer_meta(self.opt_d)},
                "scalers": {"g": self.scaler_g.state_dict(), "d": self.scaler_d.state_dict()},
                "objective_state": sorted(self.objective_state), "torch_version": torch.__version__}
        return save_checkpoint(path, tensors, meta)

    def load(self, checkpoint: Checkpoint, recipe: Recipe) -> None:
        """Restore the state saved in ``checkpoint``; settings changed since then apply from here on, with a warning.

        Raises:
            CheckpointError: for a checkpoint of another model or architecture, or without this state's parts.
        """
        meta = checkpoint.meta
        _check_same_model(checkpoint, recipe.model, recipe.config)
        saved_train = meta["train_config"]
        if saved_train.get("augment", "none") != recipe.train.augment:
            raise CheckpointError(f"{checkpoint.path} was trained with augment={saved_train.get('augment', 'none')!r}"
                                  f", not {recipe.train.augment!r}; resuming would reset the augmentation state "
                                  "(ADA p): resume with the same augment, or use a new run_dir")
        for name in self.modules:
            checkpoint.load_module(name, getattr(self, name))
        for name in self.objective_state:
            key = f"objective.{name}"
            if key not in checkpoint.tensors:
                raise CheckpointError(f"{checkpoint.path} has no {key!r}: it was not written by this loss recipe")
            self.objective_state[name].copy_(checkpoint.tensors[key])
        checkpoint.load_optimizer("opt_g", self.opt_g)
        checkpoint.load_optimizer("opt_d", self.opt_d)
        for scaler, saved in ((self.scaler_g, meta["scalers"]["g"]), (self.scaler_d, meta["scalers"]["d"])):
            if saved:  # empty when saved without AMP (e.g. on a CPU): a scaler resumed on CUDA starts fresh
                scaler.load_state_dict(saved)
        torch.set_rng_state(checkpoint.tensors["rng.torch"])
        self.noise.set_state(checkpoint.tensors["rng.noise"])
        device = next(self.G.parameters()).device
        if "rng.cuda" in checkpoint.tensors and device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint.tensors["rng.cuda"], device)
        self.step, self.batches_seen, self.images_seen = (meta[k] for k in ("step", "batches_seen", "images_seen"))
        self._apply_current_settings(checkpoint, recipe)

    def set_rates(self, recipe: Recipe, lr_scale: float = 1.0) -> None:
        """Both optimizers take the configured (lazy-adjusted) betas and learning rates, the rates times
        ``lr_scale`` (a growth plan's decay)."""
        for optimizer, lr, reg_every in ((self.opt_g, recipe.train.lr_g, recipe.g_reg_every),
                                         (self.opt_d, recipe.train.lr_d, recipe.d_reg_every)):
            lr, betas = lazy_adjusted(lr, recipe.train.betas, reg_every)
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_scale
                if "betas" in group:
                    group["betas"] = betas

    def _apply_current_settings(self, checkpoint: Checkpoint, recipe: Recipe) -> None:
        """The optimizers take the current config's learning rates and betas (a resumed run may change them);
        every changed training setting is named in one warning."""
        self.set_rates(recipe)
        saved, current = checkpoint.meta["train_config"], to_dict(recipe.train)
        changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in current.items()
                   if key not in RUN_LENGTH_SETTINGS and saved.get(key) != value]
        if changed:
            warnings.warn(f"resuming {checkpoint.path.name} with changed settings, applied from step {self.step}: "
                          + "; ".join(changed), stacklevel=3)


# settings a resumed run may change without comment (how long and how verbosely it runs)
RUN_LENGTH_SETTINGS = {"epochs", "max_steps", "max_minutes", "progress", "log_every", "sample_every",
                       "checkpoint_every", "keep_checkpoints"}


def _step_optimizer(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor,
                    world: World) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    average_gradients((p for group in optimizer.param_groups for p in group["params"]), world)  # no-op alone
    scaler.step(optimizer)
    scaler.update()


def train_step(s: TrainState, recipe: Recipe, batches: StageBatches, images_in_stage: int) -> dict[str, torch.Tensor]:
    """One generator step: (1) update D ``n_critic`` times (+ lazy R1), (2) update G (+ lazy path length), (3) EMA.

    Args:
        s: the training state, updated in place.
        recipe: model, loss recipe and its options, device.
        batches: real batches of the current stage.
        images_in_stage: real images shown before this step in the current stage (EMA ramp-up).
    Returns:
        Detached scalar tensors to log (no host sync): losses, the recipe's statistics, regulariser values.
    """
    objective, options, conditional, world = recipe.objective, recipe.loss_options, recipe.spec.conditional, recipe.world
    augmented_D = lambda images, labels: s.D(s.augment(images), labels)  # noqa: E731  (D sees images as augmented)
    broadcast_buffers((s.G, s.D), world)  # w_avg, BatchNorm statistics: rank 0's (no-op in one process)
    s.G.train()
    s.D.train()
    stats: dict[str, torch.Tensor] = {}
    step_images = 0

    # (1) update D: n_critic times, each on a fresh real batch and fresh fakes
    for critic_iter in range(recipe.train.n_critic):
        real, labels = next(batches)  # the global batch; with several processes each keeps its rows
        images = real.shape[0]
        z = shard(s.latents(images, recipe.config.z_dim), world)
        real, labels = shard(real, world), shard(labels, world) if conditional else None
        with recipe.autocast(), torch.set_grad_enabled(critic_iter == recipe.train.n_critic - 1):
            fake = s.G(z, labels)  # the last one keeps its graph and is reused by the G update
        with recipe.autocast():
            d_loss, d_stats = objective.d_loss(augmented_D, real, fake.detach(), labels, **options)
        s.augment.accumulate(d_stats.pop("real_scores"))
        _step_optimizer(s.opt_d, s.scaler_d, d_loss, recipe.world)
        s.batches_seen += 1
        s.images_seen += images
        step_images += images
        if recipe.d_reg_every and s.batches_seen % recipe.d_reg_every == 0:  # lazy R1, float32
            with torch.autocast(recipe.device.type, enabled=False):
                reg_loss, reg_stats = objective.d_reg.loss(augmented_D, real, labels, s.objective_state, **options)
            _step_optimizer(s.opt_d, s.scaler_d, reg_loss * recipe.d_reg_every, recipe.world)
            stats.update(reg_stats)
        s.augment.step(images)  # ADA adjusts p on its own interval
    stats.update(d_loss=d_loss.detach().float(), **d_stats)

    # (2) update G: fool the just-updated D with the last fakes
    s.D.requires_grad_(False)
    with recipe.autocast():
        g_loss, g_stats = objective.g_loss(augmented_D, fake, labels, **options)
        if objective.g_real is not None:  # a term that needs G and the real batch (SinGAN's reconstruction)
            real_loss, real_stats = objective.g_real(s.G, real, labels, **options)
            g_loss, g_stats = g_loss + real_loss, {**g_stats, **real_stats}
    _step_optimizer(s.opt_g, s.scaler_g, g_loss, recipe.world)
    s.D.requires_grad_(True)
    if recipe.g_reg_every and (s.step + 1) % recipe.g_reg_every == 0:  # lazy path length, float32
        z = shard(s.latents(images, recipe.config.z_dim), world)
        with torch.autocast(recipe.device.type, enabled=False):
            reg_loss, reg_stats = objective.g_reg.loss(s.G, z, labels, s.objective_state, **options)
        _step_optimizer(s.opt_g, s.scaler_g, reg_loss * recipe.g_reg_every, recipe.world)
        stats.update(reg_stats)
    stats.update(g_loss=g_loss.detach().float(), **g_stats)

    # (3) EMA of G with a half-life in images
    train = recipe.train
    update_ema(s.G_ema, s.G, ema_beta(step_images, images_in_stage, train.ema_kimg, train.ema_rampup))
    s.step += 1
    return stats


class RunLogger:
    """History rows (``history.csv`` + ``log.jsonl``, rewound to the checkpoint on resume), the tqdm bar, fixed-noise
    sample grids of G_ema and the NaN/inf check. Statistics stay on the device between rows (one host sync per row).
    """

    def __init__(self, run_dir: Path, recipe: Recipe, num_classes: int, start_step: int, total_steps: int,
                 active: bool = True):
        self.run_dir, self.train, self.device = run_dir, recipe.train, recipe.device
        self.active = active  # False on every process but rank 0: statistics kept, nothing written
        self.csv_path, self.jsonl_path = run_dir / "history.csv", run_dir / "log.jsonl"
        self.rows: list[dict[str, Any]] = []
        if start_step > 0 and self.jsonl_path.exists():
            lines = self.jsonl_path.read_text().splitlines()
            self.rows = [row for row in map(json.loads, filter(None, lines)) if row["step"] <= start_step]
        if self.active:
            self._rewrite()
        generator = torch.Generator().manual_seed(self.train.seed + 2)
        self.sample_z = torch.randn(self.train.n_samples, recipe.config.z_dim, generator=generator).to(self.device)
        self.sample_labels = fixed_labels(self.train.n_samples, num_classes).to(self.device) if num_classes else None
        self.progress = tqdm(total=total_steps, initial=start_step, desc=recipe.model,
                             disable=not (self.train.progress and active), dynamic_ncols=True)
        self.start_time = time.monotonic()
        self._new_window()
        self.first_bad_step = torch.tensor(-1, device=self.device)

    def _new_window(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.window_start, self.window_images = time.perf_counter(), 0

    def _rewrite(self) -> None:
        atomic_write_text(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in self.rows))
        table = pd.DataFrame(self.rows)
        self.csv_columns = list(table.columns)  # rows appended later follow this order, whatever their key order
        atomic_write_text(self.csv_path, table.to_csv(index=False) if self.rows else "")

    def out_of_time(self) -> bool:
        """True once the run has used its ``max_minutes``."""
        budget = self.train.max_minutes
        return budget is not None and (time.monotonic() - self.start_time) / 60 >= budget

    def record(self, step: int, stats: dict[str, torch.Tensor], images: int) -> None:
        """Add one step's statistics to the current window (each averaged over the steps that reported it)."""
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.float()
            self.counts[key] = self.counts.get(key, 0) + 1
        finite = torch.isfinite(stats["d_loss"]) & torch.isfinite(stats["g_loss"])
        self.first_bad_step = torch.where(~finite & (self.first_bad_step < 0), torch.tensor(step, device=self.device),
                                          self.first_bad_step)
        self.window_images += images
        self.progress.update(1)

    def write_row(self, state: TrainState, stage: Stage, num_images: int, growing: bool) -> None:
        """Append one history row: window means, counters, stage/alpha for growing models, the augmentation's p (and
        ADA's r_t once it has one), img/s, wall time."""
        elapsed = time.perf_counter() - self.window_start
        growth = {"stage": stage.index, "alpha": round(stage.alpha, 4)} if growing else {}
        augment = {k: float(v) for k, v in state.augment.stats().items() if math.isfinite(float(v))}
        row = {"step": state.step, "epoch": round(state.images_seen / num_images, 4), "images_seen": state.images_seen,
               **growth, **{k: float(v) / self.counts[k] for k, v in self.sums.items()}, **augment,
               "img_per_s": self.window_images / max(elapsed, 1e-9),
               "wall_s": round(time.monotonic() - self.start_time, 2)}
        new_columns = bool(self.rows) and set(row) != set(self.rows[-1])
        self.rows.append(row)
        if self.active and (new_columns or self.csv_path.stat().st_size == 0):
            self._rewrite()
        elif self.active:
            with self.jsonl_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            with self.csv_path.open("a") as handle:  # in the header's column order: a window's key order varies
                handle.write(pd.DataFrame([row], columns=self.csv_columns).to_csv(index=False, header=False))
        self.progress.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", ips=f"{row['img_per_s']:.0f}")
        self._new_window()

    def write_samples(self, G_ema: nn.Module, name: str, autocast: torch.autocast) -> None:
        """A grid of G_ema on the run's fixed latents (and labels) as ``samples/<name>.png``."""
        if not self.active:
            return
        with torch.no_grad(), autocast:
            images = G_ema(self.sample_z, self.sample_labels)
        save_grid(images.float(), self.run_dir / "samples" / f"{name}.png")

    def check_finite(self, model: str, last_checkpoint: Path | None) -> None:
        """Raise :class:`NonFiniteLossError` if a loss was NaN/inf since the start (one host sync)."""
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise NonFiniteLossError(
                f"{model}: a loss became NaN/inf at step {bad}; training stopped. The last good checkpoint is "
                f"{last_checkpoint or 'none (no checkpoint written yet)'}. Try a lower learning rate or disable AMP.")

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def fit(model: str, data: ImageSet, train: TrainConfig, run_dir: str | Path, *,
        model_config: dict[str, Any] | None = None, data_config: DataConfig | None = None,
        resume: bool = True, on_step: Callable[[int], None] | None = None) -> FitResult:
    """Train registered GAN ``model`` on ``data``; resumes from ``run_dir`` when it holds a checkpoint.

    Args:
        model: registered model name (``"dcgan"``, ``"stylegan2"``, ...).
        data: decoded training images from :func:`medgan_core.data.load_images`.
        train: loop settings (steps, batch size, learning rates, EMA, augmentation, intervals, budget, device).
        run_dir: folder for checkpoints, sample grids and logs.
        model_config: architecture overrides; image size/channels/classes default to the data's.
        data_config: recorded in checkpoints so a run describes its data.
        resume: continue from the newest readable checkpoint in ``run_dir`` (exactly: same weights, RNG, data order,
            augmentation and loss state); with ``False`` a folder that already holds checkpoints is refused.
        on_step: called with the step number after every generator update (progress widgets, tests).
    Returns:
        A :class:`FitResult`.
    Raises:
        NonFiniteLossError: when a loss becomes NaN/inf (names the step; no checkpoint of the bad state is written).
        CheckpointError: when ``run_dir`` holds a checkpoint of another model, architecture or augmentation.
    """
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    recipe = Recipe.create(model, data, train, model_config)
    state, schedule = TrainState.create(recipe), Schedule(recipe, data)
    last_checkpoint = _resume(state, recipe, run_dir, resume)
    seed_process(train.seed, state.step, recipe.world)
    description = _describe_run(recipe, data, data_config)
    num_classes = len(data.class_names) if recipe.spec.conditional else 0
    world = recipe.world
    logger = RunLogger(run_dir, recipe, num_classes, state.step, schedule.total_steps, active=world.is_main)
    masks = getattr(recipe.config, "with_mask", False)  # image+mask models see the mask as a last channel
    batches, stopped = StageBatches(data, train, recipe.device, world, masks), "completed"

    def save() -> Path:  # rank 0 writes; every process gets the path
        logger.check_finite(model, last_checkpoint)
        path = run_dir / "checkpoints" / checkpoint_name(state.step)
        if world.is_main:
            state.save(path, description)
            for old in sorted((run_dir / "checkpoints").glob("step-*.safetensors"))[:-max(1, train.keep_checkpoints)]:
                old.unlink()
        return path

    while state.step < schedule.total_steps:
        stage = schedule.stage(state.step)
        finished = batches.enter(stage, state.step)
        if finished is not None:
            logger.write_samples(state.G_ema, f"stage-{finished.index}", recipe.autocast())
        schedule.apply(stage, state.G, state.D, state.G_ema)
        if state.step == stage.start:  # true in one iteration per stage, also when a resume starts there
            schedule.begin(stage, batches, state.G, state.D)
        state.set_rates(recipe, stage.lr_scale)  # lr_scale is 1 except in a growth plan's decay
        stats = train_step(state, recipe, batches, schedule.images_in_stage(stage, state.step))
        logger.record(state.step, stats, stage.batch_size * train.n_critic)
        done, out_of_time = state.step == schedule.total_steps, agree(logger.out_of_time(), world)
        if state.step % train.log_every == 0 or done or out_of_time:
            logger.check_finite(model, last_checkpoint)
            logger.write_row(state, stage, len(data), bool(schedule.growth))
        if state.step % train.sample_every == 0 or done or out_of_time:
            logger.write_samples(state.G_ema, f"step-{state.step:08d}", recipe.autocast())
        if state.step % train.checkpoint_every == 0 or done or out_of_time:
            last_checkpoint = save()
        if on_step is not None:
            on_step(state.step)
        if out_of_time:
            stopped = "time budget"
            break
    logger.progress.close()
    if schedule.growth and batches.stage is not None:
        logger.write_samples(state.G_ema, f"stage-{batches.stage.index}", recipe.autocast())
    if last_checkpoint is None or Path(last_checkpoint).name != checkpoint_name(state.step):
        last_checkpoint = save()  # e.g. resumed a run that was already complete
    barrier(world)  # rank 0's checkpoint is on disk
    # what the generator is (model, classes, data identity, step): export, Hub and plots read it
    state.G_ema.info = checkpoint_info(load_checkpoint_meta(last_checkpoint), state.G_ema, source=last_checkpoint,
                                       format_version=FORMAT_VERSION, weights="G_ema")
    return FitResult(run_dir, state.step, stopped, state.G_ema, state.D, Path(last_checkpoint), logger.frame())


def _resume(state: TrainState, recipe: Recipe, run_dir: Path, resume: bool) -> Path | None:
    """Load the newest readable checkpoint of ``run_dir`` into ``state``; returns its path (None: fresh run)."""
    checkpoint = load_newest_readable(run_dir / "checkpoints")
    if checkpoint is not None and not resume:
        raise FileExistsError(f"{run_dir} already holds a run ({checkpoint.path.name}); resume=False would mix two "
                              "runs in one folder: choose a new run_dir, delete the folder, or resume=True")
    if checkpoint is None:
        return None
    state.load(checkpoint, recipe)
    return checkpoint.path


def _describe_run(recipe: Recipe, data: ImageSet, data_config: DataConfig | None) -> dict[str, Any]:
    """The JSON part of every checkpoint that does not change during the run."""
    return {"model": recipe.model, "model_config": to_dict(recipe.config), "train_config": to_dict(recipe.train),
            "loss_options": recipe.loss_options, "data_config": to_dict(data_config) if data_config else None,
            "data": {"source": data.source, "split": data.split, "cache_key": data.cache_key,
                     "class_names": list(data.class_names), "num_images": len(data), "dataset": data.dataset}}


def _check_same_model(checkpoint: Checkpoint, model: str, config: Any) -> None:
    """Refuse to resume a run folder that holds another model or architecture."""
    saved_model, saved_config = checkpoint.meta["model"], checkpoint.meta["model_config"]
    if saved_model == model:  # fields added since the file was written take the value it meant
        try:
            saved_config = to_dict(stored_config(model, saved_config))
        except ValueError:  # fields this version does not know: refused below with both configs named
            pass
    if saved_model != model or saved_config != to_dict(config):
        raise CheckpointError(
            f"{checkpoint.path.parent.parent} holds a checkpoint of {saved_model!r} {saved_config}, not of "
            f"{model!r} {to_dict(config)}; use a new run_dir, or resume=False to start over in this one")
