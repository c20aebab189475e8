"""``medgan sample``, ``medgan export`` and ``medgan info``: use a trained generator from the shell.

SOURCE is anything :func:`medgan_core.load_generator` reads: a run folder, a checkpoint file, a ``save_pretrained``
folder or a Hub id. Every mistake (a folder without a checkpoint, an unknown class, ``--per-class 0``, an output that
already exists) ends with one line saying what was wrong, and nothing is overwritten unless ``--replace`` is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    import torch.nn as nn

USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, ConnectionError)  # one line each, no traceback


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``sample``, ``export`` and ``info`` to the ``medgan`` parser's sub-commands."""
    sample = sub.add_parser("sample", help="generate images from a trained generator: a grid PNG or N PNG files")
    _source_arguments(sample)
    sample.add_argument("-n", "--num", type=int, default=16, help="number of images (default 16)")
    sample.add_argument("--class", dest="class_name", help="one class by name (default: every class in turn)")
    sample.add_argument("--out", type=Path, default=Path("samples.png"),
                        help="the grid PNG (default samples.png); with --separate, a folder of PNG files")
    sample.add_argument("--separate", action="store_true", help="write one PNG per image instead of a grid")
    sample.add_argument("--nrow", type=int, help="images per grid row (default: about square)")
    _generation_arguments(sample)
    sample.set_defaults(handler=run_sample)

    export = sub.add_parser("export", help="write a synthetic dataset (Training/<class>/*.png, manifest, zip)")
    _source_arguments(export)
    export.add_argument("--per-class", type=int, required=True, help="images per class")
    export.add_argument("--out", type=Path, required=True, help="the dataset folder (a .zip is written beside it)")
    export.add_argument("--class", dest="classes", action="append", help="only this class (repeatable)")
    export.add_argument("--no-zip", action="store_true", help="skip the zip archive")
    _generation_arguments(export)
    export.set_defaults(handler=run_export)

    info = sub.add_parser("info", help="what a trained generator is: model, config, step, data, classes, metrics")
    _source_arguments(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=run_info)

    train = sub.add_parser("train", help="train a registered model on a dataset (--nproc N: N processes/GPUs)")
    train.add_argument("model", help="a registered model name (medgan_core.registry.list_models())")
    train.add_argument("--dataset", required=True, help='"demo", "kaggle:..." or a folder')
    train.add_argument("--run-dir", type=Path, required=True, help="the run folder (an existing one is resumed)")
    train.add_argument("--image-size", type=int, default=64)
    train.add_argument("--channels", type=int, default=1)
    train.add_argument("-p", "--param", action="append", default=[], help="a TrainConfig field: key=value")
    train.add_argument("-m", "--model-param", action="append", default=[], help="a model config field: key=value")
    train.add_argument("-d", "--data-param", action="append", default=[], help="a DataConfig field: key=value")
    train.add_argument("--nproc", type=int, default=1,
                       help="processes (one per GPU) started with torchrun; under torchrun leave it at 1")
    train.set_defaults(handler=run_train)

    bundle = sub.add_parser("kaggle-bundle", help="a Kaggle dataset that installs medgan_core with Internet off")
    bundle.add_argument("--out", type=Path, required=True, help="the bundle folder")
    bundle.add_argument("--owner", required=True, help="your Kaggle user name")
    bundle.add_argument("--slug", default="medgan-core-bundle", help="the dataset's slug")
    bundle.add_argument("--no-download", action="store_true", help="only medgan_core's wheel (no PyPI access)")
    bundle.set_defaults(handler=run_kaggle_bundle)

    kernels = sub.add_parser("kaggle-kernels", help="one folder per notebook for `kaggle kernels push -p`")
    kernels.add_argument("--out", type=Path, required=True, help="where the kernel folders go")
    kernels.add_argument("--owner", required=True, help="your Kaggle user name")
    kernels.add_argument("--data", help="the Kaggle dataset to train on, owner/slug (default: the demo set)")
    kernels.add_argument("--bundle", help="the bundle dataset, owner/slug (default: <owner>/medgan-core-bundle)")
    kernels.add_argument("--notebook", action="append", help="only this notebook (repeatable; default: all)")
    kernels.add_argument("--no-gpu", action="store_true", help="enable_gpu false")
    kernels.add_argument("--internet", action="store_true", help="enable_internet true (not needed with the bundle)")
    kernels.set_defaults(handler=run_kaggle_kernels)


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a run folder, a checkpoint file, a save_pretrained folder or a Hub id")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'auto' (default cpu)")
    parser.add_argument("--no-ema", action="store_true", help="a checkpoint's raw G instead of its EMA weights")
    parser.add_argument("--revision", help="Hub branch, tag or commit (Hub ids only)")


def _generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--truncation", type=float, default=1.0,
                        help="truncation psi < 1 trades variety for typical images (StyleGAN2 models only)")
    parser.add_argument("--replace", action="store_true", help="replace an existing output (once the new one is done)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen command; a user error prints one line on stderr and returns 2."""
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        print(f"medgan {args.command}: error: {error}", file=sys.stderr)
        return 2


def _load(args: argparse.Namespace) -> "nn.Module":
    from .loading import load_generator
    from .train import resolve_device

    return load_generator(args.source, device=resolve_device(args.device), use_ema=not args.no_ema,
                          revision=args.revision)


def _bar(total: int, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit="img", disable=not sys.stderr.isatty())


def run_sample(args: argparse.Namespace) -> int:
    """``medgan sample``: a grid PNG, or ``--separate`` PNG files in a folder."""
    from PIL import Image

    from .sampling import class_index, picture_array, sample, save_grid

    if args.num < 1:
        raise ValueError(f"--num must be at least 1, got {args.num}")
    out: Path = args.out
    if out.exists() and (out.is_file() or any(out.iterdir())) and not args.replace:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --replace (nothing was written)")
    if args.separate and out.is_file() or not args.separate and out.is_dir():
        raise FileExistsError(f"{out} is a {'file' if out.is_file() else 'folder'}: --separate writes a folder, "
                              "a grid is one PNG file; choose another --out")
    generator = _load(args)
    label = class_index(generator, args.class_name) if args.class_name else None
    with _bar(args.num, "sample") as bar:
        images = sample(generator, args.num, label, seed=args.seed, batch_size=args.batch_size,
                        truncation_psi=args.truncation, progress=bar.update)
    if not args.separate:
        save_grid(images, out, nrow=args.nrow)
        print(f"{args.num} images of {generator.info.model} -> {out}")
        return 0
    staging = out.with_name(f".{out.name}.partial")  # complete before it replaces anything
    staging.mkdir(parents=True, exist_ok=True)
    prefix = args.class_name or "sample"
    for index, image in enumerate(images):
        Image.fromarray(picture_array(image)).save(staging / f"{prefix}_{index:05d}.png")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"{args.num} images of {generator.info.model} -> {out}/")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``medgan export``: :func:`medgan_core.sampling.export_dataset` of the loaded generator."""
    from .sampling import export_dataset, num_classes_of

    if args.per_class < 1:
        raise ValueError(f"--per-class must be at least 1, got {args.per_class}")
    generator = _load(args)
    n_classes = len(args.classes) if args.classes else max(1, num_classes_of(generator))
    with _bar(args.per_class * n_classes, "export") as bar:
        folder = export_dataset(generator, args.out, args.per_class, seed=args.seed, make_zip=not args.no_zip,
                                batch_size=args.batch_size, replace=args.replace, truncation_psi=args.truncation,
                                progress=bar.update, classes=args.classes)
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"{sum(manifest['counts'].values())} images {manifest['counts']} -> {folder}/"
          + ("" if args.no_zip else f" and {folder.with_suffix('.zip')}"))
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``medgan train``: :func:`medgan_core.train.fit` in this process, or in ``--nproc`` processes via torchrun."""
    from .batch import parse_parameters
    from .config import DataConfig, TrainConfig
    from .data import load_images
    from .train import fit

    train_values, model_values = parse_parameters(args.param, "-p"), parse_parameters(args.model_param, "-m")
    data_values = parse_parameters(args.data_param, "-d")
    if args.nproc > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--nproc is for starting processes; under torchrun leave it out")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                   "-m", "medgan_core.batch", "train", args.model, "--dataset", args.dataset, "--run-dir",
                   str(args.run_dir), "--image-size", str(args.image_size), "--channels", str(args.channels),
                   *[item for pair in args.param for item in ("-p", pair)],
                   *[item for pair in args.model_param for item in ("-m", pair)],
                   *[item for pair in args.data_param for item in ("-d", pair)]]
        return subprocess.run(command).returncode
    for cls, values in ((TrainConfig, train_values), (DataConfig, data_values)):
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; see medgan_core.config.{cls.__name__}")
    data_config = DataConfig(**{**data_values, "dataset": args.dataset, "image_size": args.image_size,
                                "channels": args.channels})
    result = fit(args.model, load_images(data_config), TrainConfig(**train_values), args.run_dir,
                 model_config=model_values or None, data_config=data_config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{args.model}: {result.stopped} after {result.step} steps -> {result.checkpoint}")
    return 0


def run_kaggle_bundle(args: argparse.Namespace) -> int:
    """``medgan kaggle-bundle``: see :func:`medgan_core.kaggle.write_bundle`."""
    from .kaggle import write_bundle

    folder = write_bundle(args.out, args.owner, download=not args.no_download, slug=args.slug)
    print(f"bundle -> {folder}/ ({', '.join(sorted(p.name for p in folder.glob('*.whl')))}); "
          f"upload it with: kaggle datasets create -p {folder}")
    return 0


def run_kaggle_kernels(args: argparse.Namespace) -> int:
    """``medgan kaggle-kernels``: see :func:`medgan_core.kaggle.write_kernels`."""
    from .kaggle import KERNEL_NOTEBOOKS, write_kernels

    folders = write_kernels(args.out, args.owner, data=args.data, bundle=args.bundle,
                            notebooks=tuple(args.notebook or KERNEL_NOTEBOOKS), gpu=not args.no_gpu,
                            internet=args.internet)
    print(f"{len(folders)} kernel folder(s) in {args.out}/; run one with: kaggle kernels push -p {folders[0]}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """``medgan info``: what the file is."""
    info = _load(args).info
    print(json.dumps(info.as_dict(), indent=2) if args.json else info.summary())
    return 0
