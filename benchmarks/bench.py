"""Speed of medgan_core next to plain PyTorch references, measured on the machine it runs on.

    .venv/bin/python benchmarks/bench.py                  # full run, about 3-7 min on 2 CPU cores
    .venv/bin/python benchmarks/bench.py --quick          # a few steps, to check that it runs
    .venv/bin/python benchmarks/bench.py --models wgan-gp # training rows of WGAN-GP only (dcgan, wgan-gp, progan, none)
    .venv/bin/python benchmarks/bench.py --device cuda --json bench.json

Three measurements, medgan next to a reference in the same process, repeated in rounds; medians are printed
with the spread of the rounds (the machine may be shared, so read the spread before the ratio):

1. Training img/s of DCGAN at 64 px, batch 64: ``medgan_core.train.fit`` (the real loop: EMA, history logging,
   channels-last, fused Adam, AMP on CUDA, all TrainConfig defaults; progress bar off, samples/checkpoints only
   at the end, outside the timed window) next to the pytorch/examples ``dcgan/main.py`` loop written out below
   (same layers, default memory format, default Adam, no EMA, no logging), interleaved step by step. Both see
   in-memory batches of the same random images: fit as an ImageSet, the reference as pre-made float batches.
   The same for WGAN-GP at 64 px (z 256, 32 features, layer-norm critic; ``n_critic=5``, Adam betas (0.0, 0.9),
   lr 1e-4, gradient penalty lambda 10): ``fit("wgan-gp")`` next to the classic WGAN-GP loop written out below
   (same layers, default memory format, default non-fused Adam, penalty via
   ``torch.autograd.grad(create_graph=True)``, G update on fresh noise, no EMA, no logging). One step is one
   generator update after ``n_critic`` critic updates in both; img/s count the real images the critic consumed
   (batch * n_critic per step). ``--steps`` counts D updates, so WGAN-GP times ``steps / n_critic`` generator
   steps (``--models`` picks the rows).
   ProGAN at 64 px, one row per stage (4, 8, 16, 32, 64 px at the original MedGAN recipe's batch sizes 32, 32, 32, 16, 16; lr 1e-3, betas
   (0.0, 0.99), n_critic 1, lambda 10, drift 1e-3): ``fit("progan")`` with ``stage_images``/``stage_batch_sizes``/
   ``fade_fraction=0`` set so that it takes one untimed step per earlier stage, then stays at that stage with alpha 1,
   next to the same classic WGAN-GP loop plus the drift term. Here the reference SHARES the networks (medgan's
   ``progan.py`` G and D, stage set, alpha 1): only the loop differs. Widths: the original MedGAN recipe's ``base_features=256`` on CUDA,
   64 on CPU (256 takes about 20 s a step at 64 px on 2 cores). At most 5 timed steps per stage.
2. Data pipeline img/s on the real ``brain_tumor_mri_small`` Training set at 64 px: one epoch of the cached
   ``load_images`` + ``BatchStream`` (batch 64, hflip) next to one epoch of torchvision ``ImageFolder`` +
   transforms + ``DataLoader(num_workers=2)``, which decodes every epoch; plus the first (cold) decode into a
   fresh cache folder. Rows are skipped with a message when ``<repo>/../shared/data`` lacks the set.
3. Generation img/s at 128 px: ``sampling.sample(G, n=256, batch_size=64)`` for DCGAN and cDCGAN next to a plain
   ``torch.no_grad()`` loop over the same generator.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from medgan_core.config import DataConfig, TrainConfig
from medgan_core.data import BatchStream, ImageSet, load_images
from medgan_core.registry import build_model
from medgan_core.sampling import sample
from medgan_core.train import fit, resolve_device

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_SET = "brain_tumor_mri_small"
NZ, NGF, NDF, NC = 100, 64, 64, 1  # the default DCGAN at 64 px, grayscale
WGAN_NZ, WGAN_NF, N_CRITIC, GP_LAMBDA = 256, 32, 5, 10.0  # the default WGAN-GP at 64 px (z 256, 32 features)
BATCH = 64
PROGAN_BATCHES = (32, 32, 32, 16, 16)  # the original MedGAN recipe's batch sizes at 4, 8, 16, 32, 64 px
PROGAN_MAX_TIMED = 5  # timed steps per ProGAN stage at most (five stages, each grown to first)
WARMUP = 3
NEVER = 10 ** 9  # sample/checkpoint interval that never fires inside the timed window


def sync(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(rounds: int, medgan: Callable[[], float], reference: Callable[[], float]) -> tuple[list, list]:
    """Run ``rounds`` rounds of both measurements, swapping which goes first each round.

    Returns:
        (medgan values, reference values), one per round.
    """
    ours, theirs = [], []
    for index in range(rounds):
        if index % 2:
            theirs.append(reference())
            ours.append(medgan())
        else:
            ours.append(medgan())
            theirs.append(reference())
    return ours, theirs


# ------------------------------------------------------------------------------------------------- 1. training

def weights_init(module: nn.Module) -> None:
    """DCGAN init from pytorch/examples: N(0, 0.02) convs, N(1, 0.02) norm scales (BatchNorm, GroupNorm)."""
    name = type(module).__name__
    if "Conv" in name:
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif "Norm" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def reference_models(device: torch.device, nz: int = NZ, ngf: int = NGF, ndf: int = NDF,
                     norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> tuple[nn.Module, nn.Module]:
    """netG and netD of pytorch/examples dcgan, same widths (and biases) as medgan's DCGAN at 64 px.

    With ``nz=256, ngf=ndf=32`` and ``norm=lambda c: nn.GroupNorm(1, c)`` (layer norm) they are the G and
    critic of medgan's WGAN-GP at 64 px (the critic's last conv gives an unbounded score, as netD's a logit).
    """
    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),  # 4x4
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),  # 8x8
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 16x16
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 32x32
        nn.ConvTranspose2d(ngf, NC, 4, 2, 1), nn.Tanh(),  # 64x64
    )
    netD = nn.Sequential(
        nn.Conv2d(NC, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),  # 32x32
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), norm(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), norm(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), norm(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0),  # 1x1 logit
    )
    return netG.to(device).apply(weights_init), netD.to(device).apply(weights_init)


class ReferenceLoop:
    """A plain training loop over pre-made batches (taken in turn), one generator update per :meth:`step`."""

    def __init__(self, batches: list[torch.Tensor], device: torch.device):
        torch.manual_seed(0)
        self.batches, self.device, self.index = batches, device, 0

    def next_batch(self) -> torch.Tensor:
        """The next real batch (the list repeats)."""
        real = self.batches[self.index % len(self.batches)]
        self.index += 1
        return real

    def step(self) -> None:
        raise NotImplementedError


class DCGANReference(ReferenceLoop):
    """The pytorch/examples DCGAN training loop: one D update and one G update per :meth:`step`."""

    def __init__(self, batches: list[torch.Tensor], device: torch.device):
        super().__init__(batches, device)
        self.netG, self.netD = reference_models(device)
        self.criterion = nn.BCEWithLogitsLoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(self) -> None:
        """One D update and one G update, as in ``dcgan/main.py`` (without its printing and image saving)."""
        netG, netD, criterion, device = self.netG, self.netD, self.criterion, self.device
        real_label, fake_label = 1.0, 0.0
        real = self.next_batch()
        ############################
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        ###########################
        # train with real
        netD.zero_grad()
        batch_size = real.size(0)
        label = torch.full((batch_size,), real_label, dtype=real.dtype, device=device)
        output = netD(real).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        # train with fake
        noise = torch.randn(batch_size, NZ, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        self.optimizerD.step()
        ############################
        # (2) Update G network: maximize log(D(G(z)))
        ###########################
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        self.optimizerG.step()


class WGANGPReference(ReferenceLoop):
    """The classic WGAN-GP loop (Gulrajani et al.'s Algorithm 1 as in the common PyTorch ports, e.g.
    caogang/wgan-gp): ``n_critic`` critic updates, then one G update on fresh noise, per :meth:`step`.

    Subclasses change the networks (:meth:`networks`, :meth:`noise`) and the class settings below.
    """

    n_critic, lr, betas, drift = N_CRITIC, 1e-4, (0.0, 0.9), 0.0  # drift: ProGAN's epsilon * E[D(real)^2]

    def __init__(self, batches: list[torch.Tensor], device: torch.device):
        super().__init__(batches, device)
        self.netG, self.netD = self.networks()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=self.lr, betas=self.betas)
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=self.lr, betas=self.betas)
        self.one = torch.tensor(1.0, device=device)
        self.mone = -self.one

    def networks(self) -> tuple[nn.Module, nn.Module]:
        """G and critic of medgan's WGAN-GP at 64 px, written out (see :func:`reference_models`)."""
        return reference_models(self.device, WGAN_NZ, WGAN_NF, WGAN_NF, lambda c: nn.GroupNorm(1, c))

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, WGAN_NZ, 1, 1, device=self.device)

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``GP_LAMBDA * E[(||grad D(x_hat)|| - 1)^2]`` on random interpolates of real and fake."""
        alpha = torch.rand(real.size(0), 1, 1, 1, device=self.device).expand_as(real)
        interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        disc_interpolates = self.netD(interpolates)
        gradients = torch.autograd.grad(outputs=disc_interpolates, inputs=interpolates,
                                        grad_outputs=torch.ones_like(disc_interpolates),
                                        create_graph=True, retain_graph=True, only_inputs=True)[0]
        gradients = gradients.view(gradients.size(0), -1)
        return ((gradients.norm(2, dim=1) - 1) ** 2).mean() * GP_LAMBDA

    def step(self) -> None:
        """``n_critic`` critic updates and one G update (without printing, plotting or sample saving)."""
        netG, netD, one, mone = self.netG, self.netD, self.one, self.mone
        ############################
        # (1) Update D network
        ###########################
        for p in netD.parameters():  # reset requires_grad
            p.requires_grad = True  # they are set to False below in netG update
        for _ in range(self.n_critic):
            real = self.next_batch()
            netD.zero_grad()
            # train with real
            if self.drift:
                D_real = netD(real)
                (self.drift * D_real.square().mean() - D_real.mean()).backward()
            else:
                D_real = netD(real).mean()
                D_real.backward(mone)
            # train with fake
            noise = self.noise(real.size(0))
            with torch.no_grad():
                fake = netG(noise)  # totally freeze netG
            D_fake = netD(fake).mean()
            D_fake.backward(one)
            # train with gradient penalty
            gradient_penalty = self.gradient_penalty(real, fake)
            gradient_penalty.backward()
            self.optimizerD.step()
        ############################
        # (2) Update G network
        ###########################
        for p in netD.parameters():
            p.requires_grad = False  # to avoid computation
        netG.zero_grad()
        noise = self.noise(real.size(0))
        fake = netG(noise)
        G = netD(fake).mean()
        G.backward(mone)
        self.optimizerG.step()


def progan_features(device: torch.device) -> int:
    """ProGAN width benchmarked: the original MedGAN recipe's 256 on CUDA; 64 on CPU, where 256 takes about 20 s a step at 64 px."""
    return 256 if device.type == "cuda" else 64


class ProGANReference(WGANGPReference):
    """The same classic loop for ProGAN at one stage, alpha 1: a critic update (WGAN loss + lambda 10 penalty +
    drift 1e-3 * E[D(real)^2]) and a G update on fresh noise per :meth:`step`, lr 1e-3, betas (0.0, 0.99).

    The networks are medgan's own ProGAN G and D (64 px, :func:`progan_features` widths), as ``fit`` builds them:
    only the loop differs.
    """

    n_critic, lr, betas, drift = 1, 1e-3, (0.0, 0.99), 1e-3

    def __init__(self, batches: list[torch.Tensor], device: torch.device, stage: int):
        self.stage = stage
        super().__init__(batches, device)

    def networks(self) -> tuple[nn.Module, nn.Module]:
        G, D, self.config = build_model("progan", image_size=64, base_features=progan_features(self.device))
        for net in (G, D):
            net.set_growth(self.stage, 1.0)
        return G.to(self.device), D.to(self.device)

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.z_dim, device=self.device)


@dataclass(frozen=True)
class TrainingBench:
    """One training comparison: a registered model under ``fit`` next to a plain reference loop."""

    model: str  # registered name given to fit (its default config at 64 px)
    what: str  # the row's text
    end_of_run: str  # the end-of-run row's text
    reference: Callable[[list[torch.Tensor], torch.device], ReferenceLoop]
    train: dict = field(default_factory=dict)  # TrainConfig settings besides the benchmark's own
    batch: int = BATCH
    stage: int | None = None  # growing models (ProGAN): the stage timed, at alpha 1
    model_overrides: dict = field(default_factory=dict)  # fit's model_config for a fixed-size model (e.g. a preset)

    @property
    def n_critic(self) -> int:
        return self.train.get("n_critic", 1)

    @property
    def resolution(self) -> int:
        return 64 if self.stage is None else 4 * 2 ** self.stage

    def model_config(self, device: torch.device, stage_steps: int) -> dict | None:
        """fit's model_config: ``model_overrides`` (None when empty) for a fixed-size model; for a growing model,
        one step (batch ``stage_images``) at each earlier stage, then ``stage_steps`` steps of ``batch`` at
        ``stage``, alpha 1 from its first step (no fade)."""
        if self.stage is None:
            return self.model_overrides or None
        images = self.batch * stage_steps
        return {"base_features": progan_features(device), "stage_images": images, "fade_fraction": 0.0,
                "stage_batch_sizes": (images,) * self.stage + (self.batch,)}


TRAINING = {  # --models name -> its rows
    "dcgan": (TrainingBench(
        "dcgan", "train DCGAN 64 px, batch {batch}: fit{amp} vs pytorch/examples loop",
        "fit end-of-run log + sample grid + checkpoint (outside the window)", DCGANReference),),
    "wgan-gp": (TrainingBench(
        "wgan-gp", "train WGAN-GP 64 px, batch {batch}, n_critic {n_critic}: fit{amp} vs plain WGAN-GP loop",
        "fit WGAN-GP end-of-run log + sample grid + checkpoint (outside the window)", WGANGPReference,
        {"n_critic": N_CRITIC, "betas": (0.0, 0.9), "lr_g": 1e-4, "lr_d": 1e-4}),),  # as wgan_gp.py recommends
    "progan": tuple(TrainingBench(
        "progan", f"train ProGAN stage {stage} ({4 * 2 ** stage} px), batch {{batch}}: fit{{amp}} vs plain loop", "",
        functools.partial(ProGANReference, stage=stage),
        {"lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.0, 0.99), "loss_options": {"drift": 1e-3}},  # the original MedGAN recipe
        batch, stage) for stage, batch in enumerate(PROGAN_BATCHES)),
}


def paired_round(bench: TrainingBench, data: ImageSet, batches: list[torch.Tensor], warmup: int, steps: int,
                 device: torch.device) -> dict:
    """One round of ``fit`` and the reference loop, interleaved step by step.

    ``fit``'s ``on_step`` callback runs one reference step after every fit step (one generator update, after
    ``n_critic`` critic updates in both), so both loops see the same machine load at the same moments (this
    machine is shared and noisy). Each loop's step time is the time between the callback's boundaries; setup
    happens before step 1 and falls in the warm-up. ``fit`` runs one step past the window: its end-of-run log
    row, sample grid and checkpoint fire there. A growing model first takes one untimed step per earlier stage
    (no reference steps); the warm-up then starts at ``bench.stage``.

    Args:
        steps: timed steps; ``warmup`` steps come before them.

    Returns:
        fit and reference img/s (real images the critic consumed: ``batch * n_critic`` per step) over the
        ``steps`` steps after the warm-up, and the end-of-run cost in seconds (that last step minus a median
        step).
    """
    reference = bench.reference(batches, device)
    grow = bench.stage or 0  # fit steps before the timed stage
    fit_times, reference_times = [], []
    resumed = time.perf_counter()

    def on_step(step: int) -> None:
        nonlocal resumed
        sync(device)
        fit_times.append(time.perf_counter() - resumed)
        if grow < step <= grow + warmup + steps:
            started = time.perf_counter()
            reference.step()
            sync(device)
            reference_times.append(time.perf_counter() - started)
        resumed = time.perf_counter()

    config = TrainConfig(max_steps=grow + warmup + steps + 1, batch_size=bench.batch, sample_every=NEVER,
                         checkpoint_every=NEVER, progress=False, device=str(device), **bench.train)
    with tempfile.TemporaryDirectory(prefix="medgan-bench-") as run_dir:  # the model's default config at 64 px
        fit(bench.model, data, config, run_dir, model_config=bench.model_config(device, warmup + steps + 1),
            on_step=on_step)
    window = slice(warmup, warmup + steps)  # of the steps at the timed stage
    fit_times = fit_times[grow:]
    images = steps * bench.batch * bench.n_critic
    return {"fit": images / sum(fit_times[window]), "reference": images / sum(reference_times[window]),
            "end_of_run_s": fit_times[-1] - statistics.median(fit_times[window])}


def bench_training(device: torch.device, steps: int, rounds: int, models: list[str]) -> list[dict]:
    """Rows for measurement 1, for each model in ``models`` (keys of ``TRAINING``)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16 * BATCH, NC, 64, 64), dtype=torch.uint8, generator=generator)
    data = ImageSet(images=images, labels=torch.zeros(len(images), dtype=torch.int64), class_names=["random"])
    real = images.float() / 127.5 - 1
    amp = " (AMP)" if device.type == "cuda" else ""
    rows = []
    for bench in (bench for name in models for bench in TRAINING[name]):
        # the reference's batches at the row's resolution (area downsampling, as BatchStream does) and batch size
        size = bench.resolution
        batches = list((real if size == 64 else F.interpolate(real, size=(size, size), mode="area"))
                       .to(device).split(bench.batch))
        # the same number of D updates for every model: ``steps`` (and WARMUP) count D updates
        warmup, timed = max(1, WARMUP // bench.n_critic), max(1, round(steps / bench.n_critic))
        if bench.stage is not None:
            timed = min(timed, PROGAN_MAX_TIMED)
        results = [paired_round(bench, data, batches, warmup, timed, device) for _ in range(rounds)]
        updates = f" ({timed * bench.n_critic} critic updates)" if bench.n_critic > 1 else ""
        note = f"steps interleaved; {warmup} warm-up + {timed} timed steps{updates} x {rounds} rounds; goal >= 1.0x"
        if bench.stage is not None:
            note += (f"; SAME networks (medgan's progan.py G and D, 64 px, base_features {progan_features(device)}, "
                     "alpha 1), only the loop differs: the reference is the classic WGAN-GP + drift loop written "
                     "out (default memory format, non-fused Adam, no EMA, no logging, G update on fresh noise)"
                     + (f"; fit first takes {bench.stage} untimed step(s) through the earlier stages"
                        if bench.stage else ""))
        rows.append(row(bench.what.format(batch=bench.batch, n_critic=bench.n_critic, amp=amp),
                        [r["fit"] for r in results], [r["reference"] for r in results], note))
        if bench.end_of_run:
            rows.append({"what": bench.end_of_run, "medgan": [r["end_of_run_s"] for r in results], "unit": "s"})
    return rows


# ---------------------------------------------------------------------------------------------- 2. data pipeline

def medgan_epoch(data: ImageSet, device: torch.device) -> float:
    """img/s of one BatchStream epoch (batch 64, hflip, channels-last as in fit) from decoded images."""
    stream = BatchStream(data, BATCH, seed=0, hflip=True, device=device, channels_last=True)
    started = time.perf_counter()
    count = sum(x.shape[0] for x, _ in stream.epoch(0))
    sync(device)
    return count / (time.perf_counter() - started)


def torchvision_epoch(folder: Path, device: torch.device) -> float:
    """img/s of one epoch of the usual ImageFolder + transforms + DataLoader pipeline (decodes every epoch)."""
    from torchvision import datasets, transforms  # imported late: only this reference needs it

    transform = transforms.Compose([
        transforms.Grayscale(1), transforms.Resize(64), transforms.CenterCrop(64),
        transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,)),
    ])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2)
    started = time.perf_counter()  # includes starting the workers, as every non-persistent epoch does
    count = sum(x.to(device).shape[0] for x, _ in loader)
    sync(device)
    return count / (time.perf_counter() - started)


def bench_data(device: torch.device, rounds: int) -> list[dict]:
    """Rows for measurement 2 (empty with a message when the real data set is absent)."""
    folder = DATA_ROOT / DATA_SET
    if not (folder / "Training").is_dir():
        print(f"skipping the data pipeline rows: {folder}/Training not found (see /work/shared/data/README.md)")
        return []
    with tempfile.TemporaryDirectory(prefix="medgan-bench-cache-") as cache_dir:
        config = DataConfig(dataset=str(folder), image_size=64, split="train", cache_dir=cache_dir)
        started = time.perf_counter()
        data = load_images(config)  # fresh cache folder: decodes every file, writes the cache
        cold = len(data) / (time.perf_counter() - started)
        warm = []
        for _ in range(rounds):
            started = time.perf_counter()
            load_images(config)  # scans the folder, hashes the file list, reads the cache
            warm.append(len(data) / (time.perf_counter() - started))
        ours, theirs = alternate(rounds, lambda: medgan_epoch(data, device),
                                 lambda: torchvision_epoch(folder / "Training", device))
    return [
        row(f"data: 1 epoch of {DATA_SET} (64 px, batch {BATCH}): BatchStream vs ImageFolder+DataLoader(2 workers)",
            ours, theirs, f"{len(data)} images, {rounds} rounds; goal >= 20x"),
        row("data: first load_images (cold decode + cache write) vs one DataLoader epoch", [cold], theirs,
            "decoded once; later runs read the cache"),
        row("data: load_images with a warm cache (scan + hash + read)", warm, None, "once per run, not per epoch"),
    ]


# ------------------------------------------------------------------------------------------------- 3. generation

def plain_generate(G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> float:
    """img/s of a plain batched no-grad loop over ``G`` (batch 64, results copied to CPU like ``sample``)."""
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(z), BATCH):
            chunk = None if labels is None else labels[start:start + BATCH]
            G(z[start:start + BATCH], chunk).float().cpu()
    return len(z) / (time.perf_counter() - started)


def medgan_generate(G: nn.Module, n: int) -> float:
    """img/s of ``sampling.sample(G, n, batch_size=64)`` (it returns CPU tensors, so it waits for the device)."""
    started = time.perf_counter()
    sample(G, n, batch_size=BATCH)
    return n / (time.perf_counter() - started)


def bench_generation(device: torch.device, n: int, rounds: int) -> list[dict]:
    """Rows for measurement 3, plus ``sample`` on a channels-last copy of the DCGAN generator.

    ``build_model`` (and so checkpoint/hub loading) gives contiguous weights, while ``fit`` returns its G_ema in
    channels-last; the last row shows what that layout is worth for sampling.
    """
    rows = []
    for name in ("dcgan", "cdcgan"):
        torch.manual_seed(0)
        G, _, config = build_model(name, image_size=128)
        G = G.to(device).eval()
        z = torch.randn(n, config.z_dim, device=device)
        labels = torch.arange(n, device=device) % config.num_classes if name == "cdcgan" else None
        medgan_generate(G, BATCH)  # warm-up: the first passes allocate and pick kernels
        plain_generate(G, z[:BATCH], None if labels is None else labels[:BATCH])
        ours, theirs = alternate(rounds, lambda: medgan_generate(G, n), lambda: plain_generate(G, z, labels))
        rows.append(row(f"generate {name} 128 px: sample(n={n}, batch_size={BATCH}) vs plain no_grad loop",
                        ours, theirs, f"{rounds} rounds"))
        if name == "dcgan":
            G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last)
            medgan_generate(G_cl, BATCH)
            ours, theirs = alternate(rounds, lambda: medgan_generate(G_cl, n), lambda: medgan_generate(G, n))
            rows.append(row("generate dcgan 128 px: sample() with G in channels-last vs contiguous G",
                            ours, theirs, f"{rounds} rounds; same images"))
    return rows


# ------------------------------------------------------------------------------------------------------- report

def row(what: str, ours: list[float], theirs: list[float] | None, note: str) -> dict:
    """One result row: per-round values and their medians (img/s)."""
    result = {"what": what, "medgan": ours, "reference": theirs, "note": note, "unit": "img/s",
              "medgan_median": statistics.median(ours)}
    if theirs:
        result["reference_median"] = statistics.median(theirs)
        result["ratio"] = result["medgan_median"] / result["reference_median"]
    return result


def spread(values: list[float], digits: int = 0) -> str:
    """``min-max`` of the rounds, to show the noise."""
    return f"{min(values):,.{digits}f}-{max(values):,.{digits}f}" if len(values) > 1 else "1 round"


def print_table(rows: list[dict], env: dict) -> None:
    """The results as a markdown table, then the environment."""
    print("\n| what | medgan img/s | reference img/s | ratio | rounds min-max (medgan; reference; ratio) / note |")
    print("|---|---:|---:|---:|---|")
    for result in rows:
        if result["unit"] == "s":
            median = statistics.median(result["medgan"])
            print(f"| {result['what']} | {median:.2f} s | | | {len(result['medgan'])} runs |")
            continue
        theirs = result["reference"]
        reference = f"{result['reference_median']:,.0f}" if theirs else "-"
        ratio = f"{result['ratio']:.2f}x" if theirs else "-"
        rounds = spread(result["medgan"]) + (f"; {spread(theirs)}" if theirs else "")
        if theirs and len(theirs) == len(result["medgan"]) > 1:
            rounds += f"; ratio {spread([a / b for a, b in zip(result['medgan'], theirs)], 2)}"
        print(f"| {result['what']} | {result['medgan_median']:,.0f} | {reference} | {ratio} | "
              f"{rounds} / {result['note']} |")
    print("\n" + "  ".join(f"{key}: {value}" for key, value in env.items()))


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the three measurements, print the table (and write the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and one round, to check that it runs")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    parser.add_argument("--steps", type=int, help="timed D updates per training round (default 20; --quick 4): "
                                                  "steps for DCGAN, steps/n_critic generator steps for WGAN-GP, "
                                                  f"at most {PROGAN_MAX_TIMED} steps per ProGAN stage")
    parser.add_argument("--rounds", type=int, help="alternating rounds per measurement (default 3; --quick 1)")
    parser.add_argument("--models", default=",".join(TRAINING),
                        help=f"comma-separated training rows to run, of {', '.join(TRAINING)} (default: all); "
                             "'none' skips training")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    models = [] if args.models == "none" else [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(TRAINING))
    if unknown:
        parser.error(f"--models: unknown {unknown}; use a comma-separated list of {', '.join(TRAINING)}, or 'none'")
    steps = args.steps or (4 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 3)
    device = resolve_device(args.device)
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": shlex.join(sys.orig_argv),
    }
    print("  ".join(f"{key}: {value}" for key, value in env.items()), flush=True)

    rows = []
    for title, bench in (("training", lambda: bench_training(device, steps, rounds, models)),
                         ("data pipeline", lambda: bench_data(device, rounds)),
                         ("generation", lambda: bench_generation(device, 64 if args.quick else 256, rounds))):
        started = time.perf_counter()
        rows += bench()
        print(f"{title}: done in {time.perf_counter() - started:.0f} s", flush=True)
    print_table(rows, env)
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
