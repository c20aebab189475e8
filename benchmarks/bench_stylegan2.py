"""StyleGAN2 training speed of medgan_core next to a plain loop and next to NVlabs stylegan2-ada-pytorch.

    .venv/bin/python benchmarks/bench_stylegan2.py --quick --ada-repo /tmp/ada-peer  # a few steps, to check it runs
    .venv/bin/python benchmarks/bench_stylegan2.py                    # parts 1 and 2 ("cpu" preset), a long run on CPU
    .venv/bin/python benchmarks/bench_stylegan2.py --parts peer --ada-repo ~/src/stylegan2-ada-pytorch  # part 3 only
    .venv/bin/python benchmarks/bench_stylegan2.py --preset paper --device cuda --json stylegan2.json

Everything runs at 64 px, 1 channel, on random images, in float32 on CPU. Medians are printed with the spread
of the rounds, as in ``bench.py`` (whose ``paired_round``, ``alternate``, ``row`` and ``print_table`` this script
uses). The machine may be shared, so read the spread before the ratio; on a CPU shared with other jobs set
``OMP_NUM_THREADS=1`` (with as many threads as cores, torch's threads wait on each other whenever another job
holds a core, and steps get several times slower and erratic).

1. Training img/s. ``fit("stylegan2")`` (the real loop: EMA, history logging, channels-last, fused Adam, lazy R1 and
   path length, augmentation "none"; samples and checkpoints only at the end, outside the timed window) next to
   rosinality/stylegan2-pytorch's ``train.py`` loop written out below, interleaved step by step through fit's
   ``on_step`` callback. The same on both sides: medgan's own StyleGAN2 G and D (``build_model`` with the
   ``--preset`` network, default "cpu"), the same initial weights (both seed 0 before building them), batch 32
   (``--quick``: 8), the same losses (``medgan_core.losses``' pure functions: logistic loss, R1 with the ``auto``
   gamma ``0.0002 * 64^2 / batch``, path length with weight 2 on ``batch // 2`` latents), stylegan2-ada's
   ``auto`` settings (Adam lr 0.0025, betas (0, 0.99), both adjusted for the lazy intervals), style mixing 0.9,
   an EMA of G with a 10 kimg half-life. What differs is the loop: the reference keeps the default memory format
   and the default (non-fused) Adam, freezes and unfreezes parameters one by one, runs G twice per step (the D
   step's fakes, then the G step on fresh noise), does its own style mixing on ``G.mapping`` + ``G.synthesis``
   (also in the path-length batch, which fit's regulariser does not mix), and logs nothing. R1 runs every 16 D
   steps and path length every 4 G steps in both, and the timed window is a multiple of 16 steps, so both loops
   do the same number of each regulariser in it (``--quick`` shrinks both intervals to 2). The same window is
   timed once more with ``augment="diffaugment"`` (also interleaved with the plain loop, which never augments):
   the row "fit with DiffAugment vs fit without" is the cost of DiffAugment.
2. The modulated conv: forward + backward of the whole G (train mode, random noise, style mixing with the same
   draws on both sides) at 64 px, batch 32 (``--quick``: 8, one pass), built with ``fused_modconv=True`` (the
   batch folded into a grouped conv with per-sample weights; the default ``None`` uses it in eval mode) and ``False``
   (the default's form in training mode) (activations scaled
   before and after one shared conv), the same weights in both; rounds alternate. One row in channels-last (as
   ``fit`` trains) and one contiguous (as ``build_model`` and checkpoints give G).
3. The peer: NVlabs stylegan2-ada-pytorch's own ``training.networks.Generator``/``Discriminator`` and
   ``training.loss.StyleGAN2Loss``, run phase by phase (Gmain, Greg, Dmain, Dreg) as its ``training_loop.py``
   does, from a local checkout given with ``--ada-repo`` (its code is not part of this repository; the part is
   skipped with a message without it), next to ``fit("stylegan2")`` with the "paper" preset, interleaved step by
   step. The shared config is ada's ``auto`` at 64 px, 1 channel: mapping 2 layers, z and w 512, channel_base
   16384, channel_max 512 (both networks have 22.2 M and 23.4 M parameters on both sides), minibatch-stddev group
   4, lr 0.0025, betas (0, 0.99), R1 every 16 with the ``auto`` gamma, path length every 4 on half the batch,
   style mixing 0.9, EMA ``batch * 10 / 32`` kimg with ramp-up 0.05. On CPU both sides run in float32 (ada
   ``--fp32``: no fp16 layers, no conv clamping) and ada's ops take their pure-PyTorch reference paths; its
   custom CUDA plugins are never built, on any device. On CUDA ada keeps its ``auto`` fp16 layers (the 4 highest
   resolutions, clamp 256) and ``fit`` uses AMP. ada's synthesis network trains with unfused modulated convs
   (its ``fused_modconv`` is on only in eval mode), and so does ``fit`` (medgan's default ``fused_modconv=None`` is ada's rule); both as
   their authors ship them. One ada step at batch 32 takes about 90 s on 2 CPU cores, so ``--quick`` uses batch
   4 and 1 warm-up + 2 timed steps.
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib
import json
import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn as nn

import bench
from medgan_core.data import ImageSet
from medgan_core.losses import STYLEGAN2, d_logistic_loss, g_nonsaturating_loss, path_length_penalty, r1_penalty
from medgan_core.models.stylegan2 import recommended_train_settings, stylegan2_preset
from medgan_core.registry import build_model
from medgan_core.train import resolve_device

SIZE = 64  # image side in pixels, every part
BATCH = 32
QUICK_BATCH, QUICK_PEER_BATCH = 8, 4  # --quick: parts 1 and 2, part 3
R1_EVERY, PL_EVERY = STYLEGAN2.options["r1_interval"], STYLEGAN2.options["pl_interval"]  # 16, 4
QUICK_EVERY = 2  # both intervals under --quick
PL_BATCH_SHRINK = STYLEGAN2.options["pl_batch_shrink"]  # 2
PL_WEIGHT, PL_DECAY = STYLEGAN2.options["pl_weight"], STYLEGAN2.options["pl_decay"]  # 2, 0.01
PARTS = ("train", "modconv", "peer")


def train_settings(batch: int, r1_every: int, pl_every: int, augment: str = "none") -> dict:
    """fit's TrainConfig settings: stylegan2-ada's ``auto`` (lr, betas, EMA half-life; R1 gamma left to the
    objective's ``auto`` rule) with the given lazy intervals and augmentation."""
    auto = recommended_train_settings(SIZE, batch)
    return {"lr_g": auto["lr"], "lr_d": auto["lr"], "betas": auto["betas"], "ema_kimg": auto["ema_kimg"],
            "augment": augment, "loss_options": {"r1_interval": r1_every, "pl_interval": pl_every}}


def random_data(batch: int, device: torch.device) -> tuple[ImageSet, list[torch.Tensor]]:
    """Random 64 px grayscale images: an ImageSet for fit and the same images as float batches in [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * batch, bench.NC, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    data = ImageSet(images=images, labels=torch.zeros(len(images), dtype=torch.int64), class_names=["random"])
    return data, list((images.float() / 127.5 - 1).to(device).split(batch))


def interval_note(steps: int, r1_every: int, pl_every: int) -> str:
    """What the timed window holds of each lazy regulariser (the same in both loops)."""
    shrunk = f" (--quick: both intervals shrunk to {QUICK_EVERY} from {R1_EVERY} and {PL_EVERY})" \
        if (r1_every, pl_every) == (QUICK_EVERY, QUICK_EVERY) else ""
    return (f"R1 every {r1_every} D steps, path length every {pl_every} G steps{shrunk}: {steps // r1_every} R1 and "
            f"{steps // pl_every} path-length steps in each loop's window")


# ------------------------------------------------------------------------------------------------- 1. training

def requires_grad(model: nn.Module, flag: bool = True) -> None:
    """rosinality's ``requires_grad``: set the flag parameter by parameter."""
    for p in model.parameters():
        p.requires_grad = flag


@torch.no_grad()
def accumulate(model1: nn.Module, model2: nn.Module, decay: float = 0.999) -> None:
    """rosinality's EMA: ``model1 = decay * model1 + (1 - decay) * model2``, parameter by parameter."""
    par1 = dict(model1.named_parameters())
    par2 = dict(model2.named_parameters())
    for k in par1.keys():
        par1[k].mul_(decay).add_(par2[k], alpha=1 - decay)


class StyleGAN2Reference(bench.ReferenceLoop):
    """rosinality/stylegan2-pytorch's ``train.py`` loop on medgan's StyleGAN2 G and D: one D update (+ lazy R1) and
    one G update on fresh noise (+ lazy path length) and an EMA step per :meth:`step`.

    Args:
        batches: real batches in [-1, 1].
        device: where the networks live.
        preset: medgan StyleGAN2 preset ("cpu" or "paper") at 64 px.
        r1_every: D steps between R1 steps (``d_reg_every``).
        pl_every: G steps between path-length steps (``g_reg_every``).
    """

    def __init__(self, batches: list[torch.Tensor], device: torch.device, preset: str, r1_every: int,
                 pl_every: int):
        super().__init__(batches, device)  # seeds 0, as fit does before building its networks
        generator, discriminator, _ = build_model("stylegan2", **stylegan2_preset(preset, SIZE))
        self.generator, self.discriminator = generator.to(device), discriminator.to(device)
        self.g_ema = copy.deepcopy(self.generator).eval()
        self.batch = batches[0].shape[0]
        auto = recommended_train_settings(SIZE, self.batch)
        self.r1, self.d_reg_every, self.g_reg_every = auto["r1_gamma"], r1_every, pl_every
        g_reg_ratio = pl_every / (pl_every + 1)
        d_reg_ratio = r1_every / (r1_every + 1)
        (beta1, beta2), lr = auto["betas"], auto["lr"]
        self.g_optim = torch.optim.Adam(self.generator.parameters(), lr=lr * g_reg_ratio,
                                        betas=(beta1 ** g_reg_ratio, beta2 ** g_reg_ratio))
        self.d_optim = torch.optim.Adam(self.discriminator.parameters(), lr=lr * d_reg_ratio,
                                        betas=(beta1 ** d_reg_ratio, beta2 ** d_reg_ratio))
        self.accum = 0.5 ** (32 / (10 * 1000))  # a 10 kimg half-life at batch 32, as in train.py
        self.mean_path_length = torch.zeros((), device=device)
        self.mixing = random.Random(0)
        self.i = 0

    def mixed_styles(self, batch: int) -> torch.Tensor:
        """Styles (batch, num_ws, w_dim) of fresh latents: rosinality's ``mixing_noise`` and its Generator's
        ``inject_index`` (with probability ``style_mixing_prob`` the layers from a random 1..num_ws-1 on take a
        second latent), on medgan's ``G.mapping`` and ``G.mix_styles``."""
        G = self.generator
        z = torch.randn(batch, G.config.z_dim, device=self.device)
        ws = G.mapping(z)
        if self.mixing.random() < G.config.style_mixing_prob:
            inject_index = self.mixing.randint(1, G.num_ws - 1)
            ws = G.mix_styles(ws, G.mapping(torch.randn_like(z), update_w_avg=False), inject_index)
        return ws

    def step(self) -> None:
        """One iteration of ``train.py``'s ``train()`` (without its logging, sample grids and checkpoints)."""
        generator, discriminator, i, batch = self.generator, self.discriminator, self.i, self.batch
        self.i += 1
        real_img = self.next_batch().detach()  # a fresh tensor per step, as a DataLoader gives

        requires_grad(generator, False)
        requires_grad(discriminator, True)
        fake_img = generator.synthesis(self.mixed_styles(batch))
        fake_pred = discriminator(fake_img)
        real_pred = discriminator(real_img)
        d_loss = d_logistic_loss(real_pred, fake_pred)
        discriminator.zero_grad()
        d_loss.backward()
        self.d_optim.step()

        if i % self.d_reg_every == 0:
            real_img.requires_grad = True
            real_pred = discriminator(real_img)
            r1_loss = r1_penalty(real_pred, real_img)
            discriminator.zero_grad()
            (self.r1 / 2 * r1_loss * self.d_reg_every + 0 * real_pred[0]).backward()
            self.d_optim.step()

        requires_grad(generator, True)
        requires_grad(discriminator, False)
        fake_img = generator.synthesis(self.mixed_styles(batch))
        g_loss = g_nonsaturating_loss(discriminator(fake_img))
        generator.zero_grad()
        g_loss.backward()
        self.g_optim.step()

        if i % self.g_reg_every == 0:
            latents = self.mixed_styles(max(1, batch // PL_BATCH_SHRINK))
            fake_img = generator.synthesis(latents)
            path_loss, self.mean_path_length, _ = path_length_penalty(fake_img, latents, self.mean_path_length,
                                                                      PL_DECAY)
            generator.zero_grad()
            weighted_path_loss = PL_WEIGHT * self.g_reg_every * path_loss + 0 * fake_img[0, 0, 0, 0]
            weighted_path_loss.backward()
            self.g_optim.step()

        accumulate(self.g_ema, generator, self.accum)


def stylegan2_bench(preset: str, batch: int, r1_every: int, pl_every: int, augment: str,
                    reference: Callable[[list[torch.Tensor], torch.device], bench.ReferenceLoop]
                    ) -> bench.TrainingBench:
    """A ``bench.TrainingBench`` of ``fit("stylegan2")`` with ``preset`` next to ``reference``."""
    return bench.TrainingBench("stylegan2", what="", end_of_run="", reference=reference, batch=batch,
                               train=train_settings(batch, r1_every, pl_every, augment),
                               model_overrides=stylegan2_preset(preset, SIZE))


def bench_training(device: torch.device, preset: str, batch: int, steps: int, warmup: int, rounds: int,
                   r1_every: int, pl_every: int) -> list[dict]:
    """Rows for measurement 1: fit vs the rosinality loop, and fit with DiffAugment vs without.

    Each round times fit without and with DiffAugment (in alternating order), each run interleaved step by step
    with its own fresh reference loop.
    """
    data, batches = random_data(batch, device)
    reference = functools.partial(StyleGAN2Reference, preset=preset, r1_every=r1_every, pl_every=pl_every)
    benches = {augment: stylegan2_bench(preset, batch, r1_every, pl_every, augment, reference)
               for augment in ("none", "diffaugment")}
    results = {"none": [], "diffaugment": []}
    for index in range(rounds):
        for augment in (("none", "diffaugment") if index % 2 == 0 else ("diffaugment", "none")):
            results[augment].append(bench.paired_round(benches[augment], data, batches, warmup, steps, device))
    plain, augmented = results["none"], results["diffaugment"]
    window = f"steps interleaved; {warmup} warm-up + {steps} timed steps x {rounds} rounds"
    normalised = statistics.median((a["fit"] / a["reference"]) / (p["fit"] / p["reference"])
                                   for a, p in zip(augmented, plain))
    amp = " (AMP)" if device.type == "cuda" else ""
    return [
        bench.row(f"train StyleGAN2 64 px ({preset} preset), batch {batch}: fit{amp} vs rosinality-style loop",
                  [r["fit"] for r in plain], [r["reference"] for r in plain],
                  f"{window}; {interval_note(steps, r1_every, pl_every)}; SAME networks and initial weights "
                  "(medgan's stylegan2.py G and D), same losses and settings; the reference is rosinality's train.py "
                  "loop written out (default memory format, non-fused Adam with the lazy adjustment, G run twice per "
                  "step: D step, then G step on fresh noise, style mixing 0.9; EMA; no logging); goal >= 1.0x"),
        bench.row(f"train StyleGAN2 64 px ({preset} preset), batch {batch}: fit with DiffAugment vs fit without",
                  [r["fit"] for r in augmented], [r["fit"] for r in plain],
                  f"{window}, the two fit runs in alternating order, each interleaved with the plain loop; per "
                  f"round, (fit+DiffAugment / its plain loop) / (fit / its plain loop) = {normalised:.2f}x (median), "
                  "the same ratio with the machine's load drift divided out; cost of augmentation, no goal"),
    ]


# ---------------------------------------------------------------------------------------------- 2. modulated conv

def g_pass_seconds(G: nn.Module, z: torch.Tensor, device: torch.device) -> float:
    """Seconds of one forward + backward of ``G`` on ``z`` (train mode; style-mixing and noise draws seeded)."""
    G.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same mixing decision, cutoff and noise for the fused and the unfused G
    started = time.perf_counter()
    G(z).square().mean().backward()
    bench.sync(device)
    return time.perf_counter() - started


def g_images_per_second(G: nn.Module, z: torch.Tensor, passes: int, device: torch.device) -> float:
    """img/s of ``passes`` forward + backward passes of ``G`` on ``z``."""
    return len(z) * passes / sum(g_pass_seconds(G, z, device) for _ in range(passes))


def bench_modconv(device: torch.device, preset: str, batch: int, passes: int, rounds: int) -> list[dict]:
    """Rows for measurement 2: G fwd+bwd img/s with fused vs unfused modulated convs, channels-last and contiguous."""
    torch.manual_seed(0)
    fused, _, config = build_model("stylegan2", **stylegan2_preset(preset, SIZE), fused_modconv=True)
    unfused, _, _ = build_model("stylegan2", config, fused_modconv=False)
    unfused.load_state_dict(fused.state_dict())
    z = torch.randn(batch, config.z_dim, device=device)
    with torch.no_grad():  # the same function: eval mode, constant noise, no mixing
        difference = (fused.to(device).eval()(z) - unfused.to(device).eval()(z)).abs().max().item()
    rows = []
    for layout, memory_format in (("channels-last, as fit trains", torch.channels_last),
                                  ("contiguous, as build_model gives", torch.contiguous_format)):
        nets = [net.to(memory_format=memory_format).train() for net in (fused, unfused)]
        for net in nets:  # warm-up: the first passes allocate
            g_pass_seconds(net, z, device)
        fused_ips, unfused_ips = bench.alternate(
            rounds, *(functools.partial(g_images_per_second, net, z, passes, device) for net in nets))
        faster = ("fused is faster here: training with the default fused_modconv=None (unfused) does not pay" if
                  statistics.median(fused_ips) >= statistics.median(unfused_ips) else
                  "unfused is faster on this device, as the default fused_modconv=None trains")
        rows.append(bench.row(
            f"G fwd+bwd 64 px ({preset} preset), batch {batch}, {layout}: fused_modconv True vs False",
            fused_ips, unfused_ips, f"{passes} passes x {rounds} rounds, alternating; same weights and draws; "
                                    f"max |fused - unfused| = {difference:.1e} (eval); {faster}"))
    return rows


# ----------------------------------------------------------------------------------------------------- 3. peer

def import_ada(repo: Path) -> SimpleNamespace:
    """stylegan2-ada-pytorch's ``training.networks``, ``training.loss`` and ``torch_utils.misc`` from ``repo``.

    The one runtime patch: its custom-op plugins (``bias_act``, ``upfirdn2d``) are never built, so its ops take
    their pure-PyTorch reference paths on every device (on CPU they do anyway; on CUDA the build needs nvcc and
    ``upfirdn2d`` would retry a failed build on every call). Nothing in ``repo`` is changed.
    """
    sys.path.insert(0, str(repo))
    names = ("training.networks", "training.loss", "torch_utils.misc", "torch_utils.ops.bias_act",
             "torch_utils.ops.upfirdn2d")
    modules = {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in names}
    modules["bias_act"]._init = modules["upfirdn2d"]._init = lambda: False
    return SimpleNamespace(**modules)


class AdaPeer(bench.ReferenceLoop):
    """stylegan2-ada-pytorch's ``training_loop.py`` iteration on its own networks and ``StyleGAN2Loss``: the phases
    Gmain, Greg (every ``pl_every``), Dmain, Dreg (every ``r1_every``), each with its ``accumulate_gradients``,
    ``nan_to_num`` on the gradients and an Adam step, then the G_ema update, per :meth:`step`.

    The training loop's data loading (uint8 -> float), label sampling (no labels here), timing events, statistics
    ticks, snapshots and DDP are left out; real images come as pre-made float batches, as for every reference.

    Args:
        batches: real batches in [-1, 1].
        device: where the networks live.
        ada: the modules from :func:`import_ada`.
        r1_every: D_reg_interval.
        pl_every: G_reg_interval.
    """

    def __init__(self, batches: list[torch.Tensor], device: torch.device, ada: SimpleNamespace, r1_every: int,
                 pl_every: int):
        super().__init__(batches, device)
        self.batch = batch = batches[0].shape[0]
        auto = recommended_train_settings(SIZE, batch)  # the same rule as ada's train.py `auto` spec
        fp16 = dict(num_fp16_res=4, conv_clamp=256) if device.type == "cuda" else dict(num_fp16_res=0, conv_clamp=None)
        common = dict(c_dim=0, img_resolution=SIZE, img_channels=bench.NC)
        widths = dict(channel_base=16384, channel_max=512, **fp16)  # cbase 0.5 * 32768 below 512 px
        self.G = ada.networks.Generator(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=2),
                                        synthesis_kwargs=widths, **common).train().requires_grad_(False).to(device)
        self.D = ada.networks.Discriminator(epilogue_kwargs=dict(mbstd_group_size=min(batch, 4)), **widths,
                                            **common).train().requires_grad_(False).to(device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.loss = ada.loss.StyleGAN2Loss(device, self.G.mapping, self.G.synthesis, self.D, r1_gamma=auto["r1_gamma"])
        self.phases = []
        for name, module, reg_interval in (("G", self.G, pl_every), ("D", self.D, r1_every)):
            mb_ratio = reg_interval / (reg_interval + 1)
            opt = torch.optim.Adam(module.parameters(), lr=auto["lr"] * mb_ratio,
                                   betas=[beta ** mb_ratio for beta in auto["betas"]], eps=1e-8)
            self.phases += [SimpleNamespace(name=name + "main", module=module, opt=opt, interval=1),
                            SimpleNamespace(name=name + "reg", module=module, opt=opt, interval=reg_interval)]
        self.misc, self.ema_kimg, self.ema_rampup = ada.misc, auto["ema_kimg"], 0.05
        self.cur_nimg = self.batch_idx = 0

    def step(self) -> None:
        """One iteration of ``training_loop``'s ``while True`` loop, up to and including "Update state"."""
        batch, device = self.batch, self.device
        real_img, real_c = self.next_batch(), torch.zeros([batch, 0], device=device)
        all_gen_z = torch.randn([len(self.phases) * batch, self.G.z_dim], device=device).split(batch)
        gen_c = torch.zeros([batch, 0], device=device)
        for phase, gen_z in zip(self.phases, all_gen_z):
            if self.batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            self.loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                           gen_c=gen_c, sync=True, gain=phase.interval)
            phase.module.requires_grad_(False)
            for param in phase.module.parameters():
                if param.grad is not None:
                    self.misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            phase.opt.step()
        ema_nimg = min(self.ema_kimg * 1000, self.cur_nimg * self.ema_rampup)
        ema_beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, ema_beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)
        self.cur_nimg += batch
        self.batch_idx += 1


def bench_peer(device: torch.device, repo: Path | None, batch: int, steps: int, warmup: int, rounds: int,
               r1_every: int, pl_every: int) -> list[dict]:
    """Rows for measurement 3 (empty with a one-line message without a stylegan2-ada-pytorch checkout)."""
    if repo is None or not (repo / "training" / "networks.py").is_file():
        print("skipping part 3 (stylegan2-ada-pytorch peer): " + ("--ada-repo not given" if repo is None else
              f"{repo}/training/networks.py not found"))
        return []
    ada = import_ada(repo)
    data, batches = random_data(batch, device)
    peer = functools.partial(AdaPeer, ada=ada, r1_every=r1_every, pl_every=pl_every)
    paper = stylegan2_bench("paper", batch, r1_every, pl_every, "none", peer)
    results = [bench.paired_round(paper, data, batches, warmup, steps, device) for _ in range(rounds)]
    ours, theirs = [r["fit"] for r in results], [r["reference"] for r in results]
    per_image = "; ".join(f"{name} {statistics.median(values):.3f} img/s = {1 / statistics.median(values):.2f} s "
                          "per image" for name, values in (("fit", ours), ("ada", theirs)))
    precision = "AMP vs ada's fp16 layers" if device.type == "cuda" else "float32 both, ada's reference ops"
    return [bench.row(f"train StyleGAN2 64 px, ada `auto` network (paper preset), batch {batch}: fit vs "
                      "stylegan2-ada-pytorch", ours, theirs,
                      f"steps interleaved; {warmup} warm-up + {steps} timed steps x {rounds} rounds; "
                      f"{interval_note(steps, r1_every, pl_every)}; {per_image}; {precision}; ada's own networks, "
                      "StyleGAN2Loss and phase loop from --ada-repo; goal >= 1.5x")]


# ------------------------------------------------------------------------------------------------------- report

def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the chosen parts, print the table (and write the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a few steps, one round, lazy intervals {QUICK_EVERY}, "
                                                             "small batches: checks that it runs")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    parser.add_argument("--preset", default="cpu", choices=("cpu", "paper"), help="network of parts 1 and 2")
    parser.add_argument("--batch", type=int, help=f"batch of parts 1 and 2 (default {BATCH}; --quick {QUICK_BATCH})")
    parser.add_argument("--steps", type=int, help=f"timed steps per round in part 1 (default {2 * R1_EVERY}; --quick "
                                                  f"{QUICK_EVERY}); a multiple of the R1 interval")
    parser.add_argument("--rounds", type=int, help="rounds per measurement (default 3; --quick 1)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument("--ada-repo", type=Path, help="a local checkout of NVlabs/stylegan2-ada-pytorch (part 3)")
    parser.add_argument("--peer-batch", type=int, help=f"batch of part 3 (default {BATCH}; --quick {QUICK_PEER_BATCH})")
    parser.add_argument("--peer-steps", type=int, help=f"timed steps per round in part 3 (default {R1_EVERY}; "
                                                       f"--quick {QUICK_EVERY}); a multiple of the R1 interval")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    parts = [name.strip() for name in args.parts.split(",") if name.strip()]
    if set(parts) - set(PARTS):
        parser.error(f"--parts: unknown {sorted(set(parts) - set(PARTS))}; use a comma-separated list of "
                     f"{', '.join(PARTS)}")
    r1_every, pl_every = (QUICK_EVERY, QUICK_EVERY) if args.quick else (R1_EVERY, PL_EVERY)
    steps = args.steps or (QUICK_EVERY if args.quick else 2 * R1_EVERY)
    peer_steps = args.peer_steps or r1_every
    for flag, value in (("--steps", steps), ("--peer-steps", peer_steps)):
        if value % math.lcm(r1_every, pl_every):
            parser.error(f"{flag} {value}: use a multiple of {math.lcm(r1_every, pl_every)}, so both loops run the "
                         "same number of R1 and path-length steps in the timed window")
    rounds = args.rounds or (1 if args.quick else 3)
    batch = args.batch or (QUICK_BATCH if args.quick else BATCH)
    peer_batch = args.peer_batch or (QUICK_PEER_BATCH if args.quick else BATCH)
    warmup = 1 if args.quick else bench.WARMUP
    device = resolve_device(args.device)
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "command": shlex.join(sys.orig_argv),
    }
    print("  ".join(f"{key}: {value}" for key, value in env.items()), flush=True)

    runs = {
        "train": lambda: bench_training(device, args.preset, batch, steps, warmup, rounds, r1_every, pl_every),
        "modconv": lambda: bench_modconv(device, args.preset, batch, 1 if args.quick else 3, rounds),
        "peer": lambda: bench_peer(device, args.ada_repo, peer_batch, peer_steps, 1, rounds, r1_every, pl_every),
    }
    rows = []
    for name in parts:
        started = time.perf_counter()
        rows += runs[name]()
        print(f"{name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    bench.print_table(rows, env)
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
