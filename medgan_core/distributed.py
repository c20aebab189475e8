"""Training on several processes (e.g. Kaggle's two T4s) with ``torch.distributed``, through the one loop.

Launched by ``torchrun`` (``medgan train ... --nproc N`` starts it), every process runs :func:`medgan_core.train.fit`
on its share of each global batch. The networks are not wrapped in ``DistributedDataParallel``: after each backward
pass the gradients are averaged by hand (as stylegan2-ada does), which works with the gradient penalty, R1 and the
path-length penalty (double backward) and with parameters a step does not use. So that N processes train like one
with the same global batch:

- every process draws the same global real batch (the data order depends on seed and step only) and the same global
  latents (a CPU generator), and keeps the rows ``rank, rank + N, ...``: strided shards keep each minibatch-stddev
  group together;
- buffers (``w_avg``, BatchNorm statistics) are broadcast from rank 0 at every step; BatchNorm becomes SyncBatchNorm
  on CUDA;
- checkpoints, sample grids and logs come from rank 0, and the stop at ``max_minutes`` is agreed by all.

A run saved with N processes resumes with M: the state is global.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn as nn

if TYPE_CHECKING:
    from .config import DataConfig, TrainConfig
    from .train import FitResult


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the GPU index on this machine

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, logs and samples."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def join_from_environment(device: str = "auto") -> World:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), once; a single process stays alone.

    Args:
        device: ``TrainConfig.device``: NCCL on CUDA, gloo on a CPU.
    Returns:
        The :class:`World`.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def shard(batch: torch.Tensor | None, world: World) -> torch.Tensor | None:
    """This process's rows of a global batch: ``rank, rank + size, ...`` (keeps minibatch-stddev groups whole)."""
    if batch is None or not world.distributed:
        return batch
    return batch[world.rank::world.size]


def average_gradients(parameters: Iterable[nn.Parameter], world: World) -> None:
    """Average the gradients of ``parameters`` over all processes (one flat all-reduce)."""
    if not world.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_buffers(modules: Iterable[nn.Module], world: World) -> None:
    """Copy rank 0's buffers (``w_avg``, BatchNorm statistics, growth stage) to every process."""
    if not world.distributed:
        return
    for module in modules:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def agree(flag: bool, world: World) -> bool:
    """True when any process says True (e.g. "out of time"), so all stop at the same step."""
    if not world.distributed:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def seed_process(seed: int, step: int, world: World) -> None:
    """Give each process its own global RNG stream from here on (gradient-penalty mixing, noise inputs), derived from
    the seed, the step and the rank, so a resumed run draws the same; a single process keeps the checkpoint's RNG."""
    if world.distributed:
        torch.manual_seed((seed * 1_000_003 + step) * 1_009 + world.rank)


def barrier(world: World) -> None:
    """Wait for every process (e.g. until rank 0 has written the final checkpoint)."""
    if world.distributed:
        dist.barrier()


def train_command(model: str, data_config: "DataConfig", train: "TrainConfig", run_dir: str | Path,
                  model_config: dict | None = None) -> list[str]:
    """The ``medgan train`` arguments that run :func:`medgan_core.train.fit` with these settings.

    Args:
        model: registered model name.
        data_config: the data (every field that differs from the default is passed on).
        train: the training settings (likewise).
        run_dir: the run folder.
        model_config: model config overrides.
    Returns:
        The arguments after ``medgan``.
    """
    from .config import DataConfig, TrainConfig

    def changed(config, cls) -> list[str]:
        defaults = cls()
        return [f"{f.name}={getattr(config, f.name)!r}" for f in dataclasses.fields(cls)
                if f.name not in ("dataset", "image_size", "channels")
                and getattr(config, f.name) != getattr(defaults, f.name)]

    command = ["train", model, "--dataset", data_config.dataset, "--run-dir", str(run_dir), "--image-size",
               str(data_config.image_size), "--channels", str(data_config.channels)]
    command += [item for pair in changed(data_config, DataConfig) for item in ("-d", pair)]
    command += [item for pair in changed(train, TrainConfig) for item in ("-p", pair)]
    command += [item for key, value in (model_config or {}).items() for item in ("-m", f"{key}={value!r}")]
    return command


def fit_in_processes(nproc: int, model: str, data_config: "DataConfig", train: "TrainConfig", run_dir: str | Path,
                     model_config: dict | None = None) -> "FitResult":
    """:func:`medgan_core.train.fit` in ``nproc`` processes started with torchrun, from a notebook or a script (e.g.
    ``nproc=torch.cuda.device_count()`` on Kaggle's two T4s).

    Args:
        nproc: processes (one per GPU).
        model: registered model name.
        data_config: the data.
        train: the training settings (``batch_size`` is the global batch: a multiple of ``nproc``).
        run_dir: the run folder (resumed when it holds a checkpoint).
        model_config: model config overrides.
    Returns:
        The :class:`~medgan_core.train.FitResult` (the generator loaded from the final checkpoint; no discriminator).
    Raises:
        subprocess.CalledProcessError: when training failed (its output was shown).
    """
    from .loading import load_generator
    from .train import FitResult

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
               "medgan_core.batch", *train_command(model, data_config, train, run_dir, model_config)]
    subprocess.run(command, check=True)
    generator = load_generator(run_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    history = pd.read_csv(Path(run_dir) / "history.csv")
    budget = train.max_minutes is not None and history["wall_s"].iloc[-1] >= train.max_minutes * 60
    return FitResult(Path(run_dir), generator.info.step, "time budget" if budget else "completed", generator, None,
                     Path(generator.info.source), history)
