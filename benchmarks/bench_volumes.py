"""Slicing volumes vs decoding the same slices as PNGs: per-slice cost of the first (uncached) load.

    .venv/bin/python benchmarks/bench_volumes.py                 # 300 volumes (the 6 BraTS FLAIRs, 50 links each)
    .venv/bin/python benchmarks/bench_volumes.py --copies 5      # quick check
    .venv/bin/python benchmarks/bench_volumes.py --sizes 64 128
    .venv/bin/python benchmarks/bench_volumes.py --uncompressed --band 0 1   # .nii copies too; every brain slice

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

import nibabel as nib
import numpy as np
from PIL import Image

from medgan_core import volumes
from medgan_core.config import DataConfig
from medgan_core.data import load_images

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats_volumes"


def link_subjects(work: Path, copies: int, uncompressed: bool = False) -> Path:
    """``work/vols/<subject>-<k>/{Flair,brainmask}.nii.gz`` as links to the BraTS files, ``copies`` per subject;
    with ``uncompressed``, links to ``.nii`` copies written once (nibabel, the same voxels and header)."""
    root = work / ("vols-nii" if uncompressed else "vols")
    suffix = ".nii" if uncompressed else ".nii.gz"
    for subject in sorted(p for p in BRATS.iterdir() if p.is_dir()):
        sources = {"Flair": next(subject.glob("Flair*.nii.gz")), "brainmask": subject / "brainmask.nii.gz"}
        if uncompressed:
            for name, source in sources.items():
                copy = work / "nii" / subject.name / f"{name}.nii"
                copy.parent.mkdir(parents=True, exist_ok=True)
                nib.save(nib.load(source), copy)
                sources[name] = copy
        for k in range(copies):
            folder = root / f"{subject.name}-{k:03d}"
            folder.mkdir(parents=True)
            for name, source in sources.items():
                (folder / f"{name}{suffix}").symlink_to(source)
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
    parser.add_argument("--band", type=float, nargs=2, default=[0.3, 0.7], help="slice band, share of the brain")
    parser.add_argument("--uncompressed", action="store_true", help="also time .nii copies of the volumes")
    args = parser.parse_args()
    if not BRATS.is_dir():
        print(f"skipped: {BRATS} not found (the shared BraTS volumes)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = {"volumes (.nii.gz)": link_subjects(work, args.copies)}
        if args.uncompressed:
            sources["volumes (.nii)"] = link_subjects(work, args.copies, uncompressed=True)
        base = DataConfig(dataset=str(sources["volumes (.nii.gz)"]), modality="flair", slice_band=tuple(args.band))
        sources["pngs"] = write_pngs(work, base)
        n_volumes = args.copies * sum(1 for p in BRATS.iterdir() if p.is_dir())
        print(f"band {args.band}, {n_volumes} volumes; first load (empty cache), then a warm-cache load\n")
        print("| source | slices | px | first load: ms/slice | warm cache: ms/slice | first load vs PNGs |")
        print("|---|---:|---:|---:|---:|---:|")
        for size in args.sizes:
            results = {}
            for name, dataset in sources.items():
                cache = work / f"cache-{size}"
                config = DataConfig(**{**vars(base), "dataset": str(dataset), "image_size": size,
                                       "cache_dir": str(cache)})
                first, count = timed_load(config)
                warm, _ = timed_load(config)
                results[name] = (first, warm, count)
                shutil.rmtree(cache)
            png_first, _, png_n = results["pngs"]
            for name, (first, warm, count) in results.items():
                assert count == png_n, f"{count} slices from {name} but {png_n} PNGs"
                print(f"| {name} | {count} | {size} | {1000 * first / count:.2f} | {1000 * warm / count:.2f} | "
                      f"{png_first / first:.2f}x |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
