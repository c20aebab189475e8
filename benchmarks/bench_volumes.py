"""Slicing volumes vs decoding the same slices as PNGs: per-slice cost of the first (uncached) load.

    .venv/bin/python benchmarks/bench_volumes.py                 # 300 volumes (the 6 BraTS FLAIRs, 50 links each)
    .venv/bin/python benchmarks/bench_volumes.py --copies 5      # quick check
    .venv/bin/python benchmarks/bench_volumes.py --sizes 64 128

Issue 11's bar: slicing a few hundred volumes at 64-128 px must not be slower per slice than decoding the same
slices as PNGs. The volume side is ``load_images`` on a folder of subject folders (``Flair`` + ``brainmask``;
symbolic links to the shared BraTS subjects, so every volume is inflated and sliced for real, with the files in the
page cache as PNGs would be), axial band 30-70 %, every slice. The PNG side is ``load_images`` on the very same
slices written once as 240x240 8-bit PNGs in one class folder. Both start from an empty decode cache; both use
their thread pools. Skipped with a message without ``<repo>/../shared/data/brats_volumes``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medgan_core import volumes
from medgan_core.config import DataConfig
from medgan_core.data import load_images

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats_volumes"


def link_subjects(work: Path, copies: int) -> Path:
    """``work/vols/<subject>-<k>/{Flair,brainmask}.nii.gz`` as links to the BraTS files, ``copies`` per subject."""
    root = work / "vols"
    for subject in sorted(p for p in BRATS.iterdir() if p.is_dir()):
        flair = next(subject.glob("Flair*.nii.gz"))
        for k in range(copies):
            folder = root / f"{subject.name}-{k:03d}"
            folder.mkdir(parents=True)
            (folder / "Flair.nii.gz").symlink_to(flair)
            (folder / "brainmask.nii.gz").symlink_to(subject / "brainmask.nii.gz")
    return root


def write_pngs(work: Path, config: DataConfig) -> Path:
    """The band's slices of every BraTS subject as native-size 8-bit PNGs, one file per slice (and per copy)."""
    root = work / "pngs" / "slices"
    root.mkdir(parents=True)
    native = DataConfig(**{**vars(config), "image_size": 256})
    for subject in volumes.scan_volumes(config.dataset, config):
        read = volumes.read_subject(subject, native)
        axis = volumes.SLICE_AXES[config.slice_axis]
        for k in volumes.chosen_slices(read.brain, read.label, axis, config):
            picture = np.round(read.picture(0, axis, k) * 255).astype(np.uint8)
            Image.fromarray(picture).save(root / f"{subject.subject}_{k}.png")
    return root.parent


def timed_load(config: DataConfig) -> tuple[float, int]:
    """Seconds of one uncached ``load_images`` (both splits) and the slices it returned."""
    started, count = time.perf_counter(), 0
    for split in ("train", "test"):
        count += len(load_images(DataConfig(**{**vars(config), "split": split})))
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=50, help="links per BraTS subject (6 subjects)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    if not BRATS.is_dir():
        print(f"skipped: {BRATS} not found (the shared BraTS volumes)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vols = link_subjects(work, args.copies)
        base = DataConfig(dataset=str(vols), modality="flair", slice_band=(0.3, 0.7))
        pngs = write_pngs(work, base)
        n_volumes = sum(1 for _ in vols.iterdir())
        print(f"| slices of {n_volumes} volumes | px | volumes: ms/slice | PNGs: ms/slice | PNG / volume time |")
        print("|---|---:|---:|---:|---:|")
        for size in args.sizes:
            results = {}
            for name, dataset in (("volumes", vols), ("pngs", pngs)):
                cache = work / f"cache-{name}-{size}"
                seconds, count = timed_load(DataConfig(**{**vars(base), "dataset": str(dataset), "image_size": size,
                                                          "cache_dir": str(cache)}))
                results[name] = (seconds, count)
                shutil.rmtree(cache)
            (vol_s, vol_n), (png_s, png_n) = results["volumes"], results["pngs"]
            assert vol_n == png_n, f"{vol_n} slices from volumes but {png_n} PNGs"
            print(f"| {vol_n} | {size} | {1000 * vol_s / vol_n:.2f} | {1000 * png_s / png_n:.2f} | "
                  f"{png_s / vol_s:.2f}x |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
