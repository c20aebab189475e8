"""The one training loop: ``fit()``.

Every GAN trains here. Each step is (1) update D ``n_critic`` times, (2) update G once, with the
loss recipe ("objective") the model names in the registry. Around that core: AMP on CUDA,
an EMA copy of G for samples, fixed-noise sample grids, ``history.csv`` + ``log.jsonl``, a tqdm
bar with live losses and img/s, a wall-clock budget, atomic checkpoints and exact resume.

Run folder layout::

    run_dir/checkpoints/step-00000500.safetensors   (the newest ``keep_checkpoints`` are kept)
    run_dir/samples/step-00000500.png               (G_ema on fixed noise)
    run_dir/history.csv, run_dir/log.jsonl
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .checkpoint import (Checkpoint, CheckpointError, checkpoint_name, find_latest_checkpoint, load_checkpoint,
                         optimizer_meta, optimizer_tensors, save_checkpoint)
from .config import DataConfig, TrainConfig, to_dict
from .data import BatchStream, ImageSet
from .fileio import atomic_write_text
from .losses import OBJECTIVES
from .registry import build_model, get_model_spec, make_config
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


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other torch device string is used as is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers (BatchNorm stats) are copied."""
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)
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
    for key, value in from_data.items():
        if key not in field_names:
            continue
        if key in values and values[key] != value:
            raise ValueError(f"model_config {key}={values[key]} but the training data has {key}={value}; "
                             f"drop {key!r} from model_config or change the DataConfig")
        values[key] = value
    return make_config(model, values)


def _batches(stream: BatchStream, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches across epochs, starting at global batch index ``start_batch``."""
    per_epoch = stream.steps_per_epoch()
    epoch, offset = divmod(start_batch, per_epoch)
    while True:
        yield from stream.epoch(epoch, start_step=offset)
        epoch, offset = epoch + 1, 0


class _History:
    """Appends rows to ``history.csv`` and ``log.jsonl``; on resume drops rows past the checkpoint."""

    def __init__(self, run_dir: Path, resume_step: int):
        self.csv_path = run_dir / "history.csv"
        self.jsonl_path = run_dir / "log.jsonl"
        self.rows: list[dict[str, Any]] = []
        if resume_step > 0 and self.jsonl_path.exists():
            lines = self.jsonl_path.read_text().splitlines()
            self.rows = [row for row in map(json.loads, filter(None, lines)) if row["step"] <= resume_step]
        self._rewrite()

    def _rewrite(self) -> None:
        atomic_write_text(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in self.rows))
        atomic_write_text(self.csv_path, pd.DataFrame(self.rows).to_csv(index=False) if self.rows else "")

    def append(self, row: dict[str, Any]) -> None:
        new_columns = bool(self.rows) and set(row) != set(self.rows[-1])
        self.rows.append(row)
        if new_columns or self.csv_path.stat().st_size == 0:
            self._rewrite()
            return
        with self.jsonl_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        with self.csv_path.open("a") as handle:
            handle.write(pd.DataFrame([row]).to_csv(index=False, header=False))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def fit(model: str, data: ImageSet, train: TrainConfig, run_dir: str | Path, *,
        model_config: dict[str, Any] | None = None, data_config: DataConfig | None = None,
        resume: bool = True, on_step: Callable[[int], None] | None = None) -> FitResult:
    """Train registered GAN ``model`` on ``data``; resumes from ``run_dir`` when it holds a checkpoint.

    Args:
        model: registered model name (``"dcgan"``, ``"cdcgan"``, ...).
        data: decoded training images from :func:`medgan_core.data.load_images`.
        train: loop settings (steps, batch size, learning rates, intervals, budget, device).
        run_dir: folder for checkpoints, sample grids and logs.
        model_config: architecture overrides; image size/channels/classes default to the data's.
        data_config: recorded in checkpoints so a run describes its data.
        resume: continue from the newest checkpoint in ``run_dir`` (exactly: same weights, RNG and data order);
            with ``False`` a folder that already holds checkpoints is refused rather than mixed.
        on_step: called with the step number after every generator update (progress widgets, tests).
    Returns:
        A :class:`FitResult`.
    Raises:
        NonFiniteLossError: when a loss becomes NaN/inf (names the step; no checkpoint of the bad state is written).
        CheckpointError: when ``run_dir`` holds a checkpoint of another model or architecture.
    """
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    device = resolve_device(train.device)
    use_amp = train.amp and device.type == "cuda"
    memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
    spec = get_model_spec(model)
    objective = OBJECTIVES[spec.objective]
    loss_options = objective.resolve_options(train.extra)

    # ---- build everything from the seed (a resume then overwrites it from the checkpoint)
    torch.manual_seed(train.seed)
    config = fit_model_config(model, data, model_config)
    G, D, _ = build_model(model, config)
    G, D = G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = make_optimizer(train.optimizer, G.parameters(), train.lr_g, train.betas)
    opt_d = make_optimizer(train.optimizer, D.parameters(), train.lr_d, train.betas)
    scaler_g = torch.amp.GradScaler(device.type, enabled=use_amp)
    scaler_d = torch.amp.GradScaler(device.type, enabled=use_amp)
    noise = torch.Generator(device).manual_seed(train.seed + 1)  # training latents only
    z_dim = config.z_dim
    conditional = spec.conditional
    sample_z = torch.randn(train.n_samples, z_dim, generator=torch.Generator().manual_seed(train.seed + 2)).to(device)
    sample_labels = fixed_labels(train.n_samples, len(data.class_names)).to(device) if conditional else None

    def make_stream(batch_size: int, seed: int, resolution: int | None = None) -> BatchStream:
        return BatchStream(data, batch_size, seed=seed, balanced=train.balanced, hflip=train.hflip, device=device,
                           channels_last=train.channels_last, resolution=resolution)

    growth = spec.growth  # growing models (ProGAN): stage, alpha and batch size follow the step
    stream = None if growth else make_stream(train.batch_size, train.seed)
    if growth:
        schedule_steps = growth(config, 0, train.n_critic).total_steps
        total_steps = train.max_steps if train.max_steps is not None else schedule_steps
    else:
        steps_per_epoch = stream.steps_per_epoch() / train.n_critic
        total_steps = train.max_steps if train.max_steps is not None else math.ceil(train.epochs * steps_per_epoch)

    step, batches_seen, images_seen = 0, 0, 0
    latest = find_latest_checkpoint(run_dir / "checkpoints")
    if latest is not None and not resume:
        raise FileExistsError(f"{run_dir} already holds a run ({latest.name}); resume=False would mix two runs in "
                              "one folder: choose a new run_dir, delete the folder, or resume=True")
    if latest is not None:
        checkpoint = load_checkpoint(latest)
        _check_same_model(checkpoint, model, config)
        step, batches_seen, images_seen = (checkpoint.meta[k] for k in ("step", "batches_seen", "images_seen"))
        for prefix, module in (("G", G), ("D", D), ("G_ema", G_ema)):
            checkpoint.load_module(prefix, module)
        checkpoint.load_optimizer("opt_g", opt_g)
        checkpoint.load_optimizer("opt_d", opt_d)
        scaler_g.load_state_dict(checkpoint.meta["scalers"]["g"])
        scaler_d.load_state_dict(checkpoint.meta["scalers"]["d"])
        torch.set_rng_state(checkpoint.tensors["rng.torch"])
        noise.set_state(checkpoint.tensors["rng.noise"])
    history = _History(run_dir, step)

    def write_checkpoint() -> Path:
        tensors = {f"{prefix}.{k}": v for prefix, module in (("G", G), ("D", D), ("G_ema", G_ema))
                   for k, v in module.state_dict().items()}
        tensors.update(optimizer_tensors("opt_g", opt_g))
        tensors.update(optimizer_tensors("opt_d", opt_d))
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.noise"] = noise.get_state()
        meta = {
            "model": model, "model_config": to_dict(config), "train_config": to_dict(train),
            "data_config": to_dict(data_config) if data_config else None,
            "data": {"source": data.source, "split": data.split, "cache_key": data.cache_key,
                     "class_names": list(data.class_names), "num_images": len(data)},
            "step": step, "batches_seen": batches_seen, "images_seen": images_seen, "epoch": images_seen / len(data),
            "optimizers": {"opt_g": optimizer_meta(opt_g), "opt_d": optimizer_meta(opt_d)},
            "scalers": {"g": scaler_g.state_dict(), "d": scaler_d.state_dict()},
            "torch_version": torch.__version__,
        }
        path = save_checkpoint(run_dir / "checkpoints" / checkpoint_name(step), tensors, meta)
        for old in sorted((run_dir / "checkpoints").glob("step-*.safetensors"))[:-max(1, train.keep_checkpoints)]:
            old.unlink()
        return path

    def write_samples(name: str | None = None) -> None:
        with torch.no_grad(), torch.autocast(device.type, enabled=use_amp):
            images = G_ema(sample_z, sample_labels)
        save_grid(images.float(), run_dir / "samples" / f"{name or f'step-{step:08d}'}.png")

    # running sums on the device: read (one host sync) only every log_every steps
    sums: dict[str, torch.Tensor] = {}
    window_steps, window_start, window_images = 0, time.perf_counter(), 0
    first_bad_step = torch.tensor(-1, device=device)
    start_time = time.monotonic()
    stopped = "completed"
    last_checkpoint = latest
    batches = None if growth else _batches(stream, batches_seen)
    stream_stage = None  # stage whose resolution and batch size the current stream serves
    progress = tqdm(total=total_steps, initial=step, desc=model, disable=not train.progress, dynamic_ncols=True)

    def check_finite() -> None:
        bad = int(first_bad_step)
        if bad >= 0:
            raise NonFiniteLossError(
                f"{model}: a loss became NaN/inf at step {bad}; training stopped. The last good checkpoint is "
                f"{last_checkpoint or 'none (no checkpoint written yet)'}. Try a lower learning rate or disable AMP.")

    while step < total_steps:
        if growth:
            plan = growth(config, step, train.n_critic)
            if plan.stage != stream_stage:  # a new resolution: new stream from the same decoded cache
                if stream_stage is not None:
                    write_samples(f"stage-{stream_stage}")
                stream = make_stream(plan.batch_size, train.seed + 1009 * plan.stage, plan.resolution)
                batches = _batches(stream, (step - plan.stage_start) * train.n_critic)
                stream_stage = plan.stage
            for module in (G, D, G_ema):
                module.set_growth(plan.stage, plan.alpha)
        G.train()
        D.train()
        # (1) update D: n_critic times, each on a fresh real batch and fresh fakes
        for critic_iter in range(train.n_critic):
            real, labels = next(batches)
            batches_seen += 1
            images_seen += real.shape[0]
            labels = labels if conditional else None
            z = torch.randn(real.shape[0], z_dim, device=device, generator=noise)
            last_iter = critic_iter == train.n_critic - 1
            with torch.autocast(device.type, enabled=use_amp), torch.set_grad_enabled(last_iter):
                fake = G(z, labels)  # the last one keeps its graph and is reused by the G update
            with torch.autocast(device.type, enabled=use_amp):
                d_loss, d_stats = objective.d_loss(D, real, fake.detach(), labels, **loss_options)
            opt_d.zero_grad(set_to_none=True)
            scaler_d.scale(d_loss).backward()
            scaler_d.step(opt_d)
            scaler_d.update()

        # (2) update G: fool the just-updated D with the last fakes
        D.requires_grad_(False)
        with torch.autocast(device.type, enabled=use_amp):
            g_loss, g_stats = objective.g_loss(D, fake, labels, **loss_options)
        opt_g.zero_grad(set_to_none=True)
        scaler_g.scale(g_loss).backward()
        scaler_g.step(opt_g)
        scaler_g.update()
        D.requires_grad_(True)

        if train.ema_decay > 0:
            # the warm-up restarts with each growth stage: the new block's EMA weights would otherwise lag ~1/(1-decay)
            # steps behind G (ProGAN's EMA samples came out washed-out for most of a 1,000-step stage)
            ema_age = step - plan.stage_start if growth else step
            update_ema(G_ema, G, min(train.ema_decay, (1 + ema_age) / (10 + ema_age)))
        else:
            G_ema.load_state_dict(G.state_dict())
        step += 1

        stats = {"d_loss": d_loss.detach().float(), "g_loss": g_loss.detach().float(), **d_stats, **g_stats}
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value.float()
        finite = torch.isfinite(stats["d_loss"]) & torch.isfinite(stats["g_loss"])
        first_bad_step = torch.where(~finite & (first_bad_step < 0), torch.tensor(step, device=device), first_bad_step)
        window_steps += 1
        window_images += real.shape[0] * train.n_critic
        progress.update(1)

        out_of_time = train.max_minutes is not None and (time.monotonic() - start_time) / 60 >= train.max_minutes
        if step % train.log_every == 0 or step == total_steps or out_of_time:
            check_finite()
            elapsed = time.perf_counter() - window_start
            growth_columns = {"stage": plan.stage, "alpha": round(plan.alpha, 4)} if growth else {}
            row = {"step": step, "epoch": round(images_seen / len(data), 4), "images_seen": images_seen, **growth_columns,
                   **{k: float(v) / window_steps for k, v in sums.items()},
                   "img_per_s": window_images / max(elapsed, 1e-9), "wall_s": round(time.monotonic() - start_time, 2)}
            history.append(row)
            progress.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", ips=f"{row['img_per_s']:.0f}")
            sums, window_steps, window_start, window_images = {}, 0, time.perf_counter(), 0
        if step % train.sample_every == 0 or step == total_steps or out_of_time:
            write_samples()
        if step % train.checkpoint_every == 0 or step == total_steps or out_of_time:
            check_finite()
            last_checkpoint = write_checkpoint()
        if on_step is not None:
            on_step(step)
        if out_of_time:
            stopped = "time budget"
            break
    progress.close()
    if growth and stream_stage is not None:
        write_samples(f"stage-{stream_stage}")
    if last_checkpoint is None or Path(last_checkpoint).name != checkpoint_name(step):
        last_checkpoint = write_checkpoint()  # e.g. resumed a run that was already complete
    return FitResult(run_dir, step, stopped, G_ema, D, Path(last_checkpoint), history.frame())


def _check_same_model(checkpoint: Checkpoint, model: str, config: Any) -> None:
    """Refuse to resume a run folder that holds another model or architecture."""
    saved_model, saved_config = checkpoint.meta["model"], checkpoint.meta["model_config"]
    if saved_model != model or saved_config != to_dict(config):
        raise CheckpointError(
            f"{checkpoint.path.parent.parent} holds a checkpoint of {saved_model!r} {saved_config}, not of "
            f"{model!r} {to_dict(config)}; use a new run_dir, or resume=False to start over in this one")
