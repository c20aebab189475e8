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

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
import torch.nn as nn


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
