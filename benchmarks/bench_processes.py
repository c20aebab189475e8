"""Training in 2 processes vs 1 on the machine it runs on: what data-parallel training costs or gains here.

    .venv/bin/python benchmarks/bench_processes.py                     # DCGAN 64 px, global batch 64, 120 steps
    .venv/bin/python benchmarks/bench_processes.py --model stylegan2 --steps 60

Both runs train the same model on the demo set through ``medgan train`` with the same global batch: 1 process with
as many torch threads as cores, or ``--nproc 2`` (torchrun, gloo on a CPU) with the threads split between the two.
Throughput is the median ``img_per_s`` of ``history.csv`` after the first 20 steps (warm-up). On a 2-core CPU this
shows the overhead of the process group (gradient all-reduce, broadcast of buffers), not a speed-up; on 2 GPUs each
process has its own device and the same code scales the batch across them.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd


def run(model: str, nproc: int, steps: int, batch: int, threads: int, folder: Path) -> float:
    """Median img/s after warm-up of one ``medgan train`` run."""
    run_dir = folder / f"{model}-{nproc}"
    command = [sys.executable, "-m", "medgan_core.batch", "train", model, "--dataset", "demo", "--run-dir",
               str(run_dir), "--nproc", str(nproc), "-p", f"max_steps={steps}", "-p", f"batch_size={batch}",
               "-p", "log_every=5", "-p", "sample_every=100000", "-p", "checkpoint_every=100000", "-p", "progress=False"]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)
    history = pd.read_csv(run_dir / "history.csv")
    return float(history.loc[history.step > 20, "img_per_s"].median())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=64, help="global batch (split between the processes)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        one = run(args.model, 1, args.steps, args.batch, cores, Path(tmp))
        two = run(args.model, 2, args.steps, args.batch, max(cores // 2, 1), Path(tmp))
    print(f"| {args.model} 64 px, global batch {args.batch}: 2 processes ({max(cores // 2, 1)} thread each) vs 1 "
          f"({cores} threads), {cores} cores | {two:.0f} | {one:.0f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
