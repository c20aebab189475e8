"""Sampling from a trained generator: seeded samples, grids, interpolation, synthetic-dataset export."""
from __future__ import annotations

import datetime as dt
import inspect
import io
import math
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image

from . import __version__
from .data import MASK_SUFFIX, ImageSet, to_uint8
from .fileio import atomic_write_bytes, atomic_write_json, staged_folder


def fixed_labels(n: int, num_classes: int) -> torch.Tensor:
    """Labels in equal contiguous blocks, so a grid shows each class on its own rows: (n,) int64."""
    return torch.arange(n) * num_classes // max(n, 1)


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """Standard normal latents (n, z_dim) from ``seed``; the same seed gives the same latents on any device."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def num_classes_of(generator: nn.Module) -> int:
    """Number of classes a generator is conditioned on (0 for unconditional models)."""
    return int(getattr(generator.config, "num_classes", 0))


def class_names_for(generator: nn.Module, class_names: Sequence[str] | None = None) -> list[str]:
    """Display names of a generator's classes: ``class_names`` checked against it, else the names it was loaded with
    (``generator.info``, see :func:`medgan_core.load_generator`), else ``class 0``, ``class 1``...

    Args:
        generator: a medgan generator.
        class_names: one name per class, in label order, or ``None``.
    Returns:
        The names; empty for unconditional generators.
    Raises:
        ValueError: when the number of names differs from the generator's number of classes.
    """
    num_classes = num_classes_of(generator)
    if class_names is None:
        stored = getattr(getattr(generator, "info", None), "class_names", ())
        return list(stored) if stored else [f"class {k}" for k in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a generator with {num_classes} classes")
    return names


def _model_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def class_index(generator: nn.Module, name: str) -> int:
    """The label of class ``name`` (see :func:`class_names_for`).

    Raises:
        ValueError: for an unconditional generator or an unknown name (the message lists the valid ones).
    """
    names = class_names_for(generator)
    if not names:
        raise ValueError(f"this generator is unconditional: it has no class {name!r}")
    if name not in names:
        raise ValueError(f"unknown class {name!r}; this generator's classes are {names}")
    return names.index(name)


def resolve_labels(generator: nn.Module, n: int,
                   labels: int | str | Sequence[int | str] | torch.Tensor | None) -> torch.Tensor | None:
    """Labels for ``n`` samples: ``None`` for unconditional models; for conditional ones an int or a class name
    (one class), a sequence of length n (ints or names), or ``None`` (classes in equal blocks).

    Raises:
        ValueError: for labels given to an unconditional model, unknown class names or out-of-range classes.
    """
    num_classes = num_classes_of(generator)
    if num_classes == 0:
        if labels is not None:
            raise ValueError("this generator is unconditional: call sample() without labels")
        return None
    if labels is None:
        return fixed_labels(n, num_classes)
    if isinstance(labels, str):
        labels = class_index(generator, labels)
    elif isinstance(labels, Sequence) and any(isinstance(label, str) for label in labels):
        labels = [class_index(generator, label) if isinstance(label, str) else label for label in labels]
    labels = torch.full((n,), labels) if isinstance(labels, int) else torch.as_tensor(labels).long()
    if labels.shape != (n,):
        raise ValueError(f"need one label per sample: got shape {tuple(labels.shape)} for n={n}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes - 1}]; got {labels.unique().tolist()}")
    return labels


def supports_truncation(generator: nn.Module) -> bool:
    """True for generators with a truncation trick (a mapping network and ``w_avg``: StyleGAN2)."""
    return "truncation_psi" in inspect.signature(generator.forward).parameters


def _truncation_kwargs(generator: nn.Module, truncation_psi: float) -> dict:
    if truncation_psi == 1.0:
        return {}
    if not supports_truncation(generator):
        raise ValueError(f"truncation_psi={truncation_psi} needs a generator with a mapping network (stylegan2, "
                         f"cstylegan2); {type(generator).__module__.rsplit('.', 1)[-1]} has none: leave it at 1.0")
    return {"truncation_psi": truncation_psi}


@torch.no_grad()
def sample(generator: nn.Module, n: int, labels: int | str | Sequence[int | str] | torch.Tensor | None = None, *,
           seed: int = 0, batch_size: int = 64, truncation_psi: float = 1.0,
           progress: Callable[[int], object] | None = None) -> torch.Tensor:
    """Generate ``n`` images, reproducibly from ``seed`` (independent of ``batch_size`` and device).

    Args:
        generator: a medgan generator (``G(z, labels)``, with ``.config.z_dim``).
        n: number of images.
        labels: see :func:`resolve_labels`.
        seed: latent seed.
        batch_size: images per forward pass.
        truncation_psi: < 1 trades variety for typicality (StyleGAN2 models only; per class for cstylegan2).
        progress: called with the number of images of each finished batch (e.g. a tqdm bar's ``update``).
    Returns:
        Float tensor (n, C, S, S) in [-1, 1] on CPU.
    Raises:
        ValueError: for ``truncation_psi != 1`` on a generator without a mapping network, or bad labels.
    """
    truncation = _truncation_kwargs(generator, truncation_psi)
    was_training = generator.training
    generator.eval()
    device = _model_device(generator)
    z = latents(n, generator.config.z_dim, seed)
    labels = resolve_labels(generator, n, labels)
    chunks = []
    for start in range(0, n, batch_size):
        batch_labels = None if labels is None else labels[start:start + batch_size].to(device)
        chunks.append(generator(z[start:start + batch_size].to(device), batch_labels, **truncation).float().cpu())
        if progress is not None:
            progress(len(chunks[-1]))
    generator.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def interpolate(generator: nn.Module, seed_a: int, seed_b: int, steps: int = 8, label: int | None = None) -> torch.Tensor:
    """Images along a spherical interpolation between the latents of two seeds.

    Args:
        generator: a medgan generator.
        seed_a: seed of the first latent.
        seed_b: seed of the last latent.
        steps: images in the strip (>= 2).
        label: class for conditional generators (default class 0); must be None for unconditional ones.
    Returns:
        Float tensor (steps, C, S, S) in [-1, 1] on CPU.
    """
    z_dim = generator.config.z_dim
    z_a, z_b = latents(1, z_dim, seed_a)[0], latents(1, z_dim, seed_b)[0]
    omega = torch.arccos(torch.clamp(torch.dot(z_a / z_a.norm(), z_b / z_b.norm()), -1.0, 1.0))
    t = torch.linspace(0, 1, steps)[:, None]  # (steps, 1)
    if omega.abs() < 1e-6:
        z = (1 - t) * z_a + t * z_b
    else:
        z = (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)
    if label is None and num_classes_of(generator):
        label = 0
    labels = resolve_labels(generator, steps, label)
    was_training = generator.training
    generator.eval()
    device = _model_device(generator)
    images = generator(z.to(device), None if labels is None else labels.to(device)).float().cpu()
    generator.train(was_training)
    return images


@torch.no_grad()
def style_mix(generator: nn.Module, row_seeds: Sequence[int], col_seeds: Sequence[int], cutoff: int,
              label: int | None = None, truncation_psi: float = 1.0) -> torch.Tensor:
    """Style mixing (StyleGAN2): each row's coarse styles (the first ``cutoff`` layers) with each column's fine ones.

    Args:
        generator: a StyleGAN2 generator (``mapping``, ``synthesis``, ``mix_styles``, ``num_ws``).
        row_seeds: seeds of the images whose coarse styles (layout, head shape) are kept.
        col_seeds: seeds of the images whose fine styles (contrast, texture) are used.
        cutoff: layers taken from the row image, 0..num_ws.
        label: class for conditional generators (default class 0).
        truncation_psi: truncation of both styles.
    Returns:
        Float tensor ((1 + R) * (1 + C), C, S, S) on CPU, a (1 + R) x (1 + C) grid in row order: the first row holds
        a black corner and the column images, the first column the row images, the rest their mixes.
    Raises:
        ValueError: for a generator without style layers or a cutoff outside 0..num_ws.
    """
    if not hasattr(generator, "mix_styles"):
        raise ValueError("style mixing needs a StyleGAN2 generator (stylegan2, cstylegan2)")
    if not 0 <= cutoff <= generator.num_ws:
        raise ValueError(f"cutoff must be in 0..{generator.num_ws} (the generator's style layers), got {cutoff}")
    was_training = generator.training
    generator.eval()
    device = _model_device(generator)
    z_dim = generator.config.z_dim

    def styles(seeds: Sequence[int]) -> torch.Tensor:
        z = torch.cat([latents(1, z_dim, seed) for seed in seeds]).to(device)
        labels = resolve_labels(generator, len(seeds), 0 if label is None and num_classes_of(generator) else label)
        return generator.mapping(z, None if labels is None else labels.to(device), truncation_psi=truncation_psi)

    rows, cols = styles(row_seeds), styles(col_seeds)  # (R, num_ws, w_dim), (C, num_ws, w_dim)
    mixed = generator.mix_styles(rows.repeat_interleave(len(col_seeds), 0), cols.repeat(len(row_seeds), 1, 1), cutoff)
    column_images = generator.synthesis(cols)
    images = [torch.full_like(column_images[:1], -1.0), column_images]  # first row: black corner, column images
    for r in range(len(row_seeds)):
        row_mixes = mixed[r * len(col_seeds):(r + 1) * len(col_seeds)]
        images += [generator.synthesis(rows[r:r + 1]), generator.synthesis(row_mixes)]
    generator.train(was_training)
    return torch.cat(images).float().cpu()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile images into one picture.

    Args:
        images: (N, C, H, W) float in [-1, 1] (C = 1 or 3; 2 or 4: with a mask channel, drawn as a red overlay).
        nrow: images per row; default ~sqrt(N).
        padding: black pixels between tiles.
    Returns:
        uint8 array (H', W') for 1 channel or (H', W', 3).
    """
    images = mask_overlay(to_uint8(images)).cpu()
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=padding, pad_value=0)  # (3, H', W'): gray repeated
    array = grid.permute(1, 2, 0).numpy()  # (H', W', 3)
    return array[..., 0] if images.shape[1] == 1 else array


def mask_overlay(images: torch.Tensor) -> torch.Tensor:
    """uint8 images with a mask channel (see :func:`split_masks`) as RGB with the mask tinted red; others unchanged.

    Args:
        images: (N, C, H, W) uint8.
    Returns:
        (N, C or 3, H, W) uint8.
    """
    pictures, masks = split_masks(images)
    if masks is None:
        return images
    rgb = pictures.expand(-1, 3, -1, -1) if pictures.shape[1] == 1 else pictures
    red = torch.tensor([255, 0, 0], dtype=torch.float32, device=images.device)[None, :, None, None]
    inside = (masks > 127).float()  # (N, 1, H, W)
    return (rgb.float() * (1 - 0.4 * inside) + 0.4 * inside * red).round().to(torch.uint8)


def picture_array(image: torch.Tensor) -> np.ndarray:
    """One (C, H, W) image, uint8 or float in [-1, 1], as an (H, W) or (H, W, 3) uint8 array (for PIL, matplotlib);
    an image with a mask channel shows its mask as a red overlay."""
    pixels = mask_overlay((image if image.dtype == torch.uint8 else to_uint8(image))[None])[0]
    array = pixels.cpu().permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save a grid of ``images`` (float in [-1, 1]) as a PNG, atomically.

    Args:
        images: (N, C, H, W).
        path: destination ``.png``.
        nrow: images per row.
    Returns:
        The path.
    """
    return atomic_write_bytes(path, png_bytes(make_grid(images, nrow)))


@torch.no_grad()
def synthetic_set(generator: nn.Module, n_per_class: int, *, class_names: Sequence[str] | None = None,
                  seed: int = 0, batch_size: int = 64, source: str = "synthetic",
                  truncation_psi: float = 1.0, progress: Callable[[int], object] | None = None,
                  classes: Sequence[str] | None = None) -> ImageSet:
    """Generated images as an :class:`ImageSet`, the same type as real data (for metrics, CAS, augmentation).

    Conditional generators give ``n_per_class`` images of every class (class ``k`` from seed ``seed + k``, so a
    class is reproducible on its own); unconditional ones give ``n_per_class`` images of one class ``synthetic``.

    Args:
        generator: trained generator.
        n_per_class: images per class.
        class_names: names of the generator's classes (default ``class 0``...).
        seed: base latent seed.
        batch_size: images per forward pass.
        source: recorded as the set's source (e.g. the run folder).
        truncation_psi: see :func:`sample` (StyleGAN2 models only).
        progress: see :func:`sample`.
        classes: generate only these classes, by name (conditional generators; default: every class). Each keeps
            its seed ``seed + k``, so it gets the same images as in a full set.
    Returns:
        uint8 images with labels, split ``"synthetic"``.
    Raises:
        ValueError: for ``n_per_class`` < 1, or unknown class names (the message lists the valid ones).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    num_classes = num_classes_of(generator)
    names = class_names_for(generator, class_names) if num_classes else ["synthetic"]
    if classes is not None and not num_classes:
        raise ValueError(f"this generator is unconditional: it has no classes {list(classes)}")
    unknown = [name for name in classes or () if name not in names]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; this generator's classes are {names}")
    images, labels = [], []
    for class_index in sorted({names.index(name) for name in classes}) if classes else range(len(names)):
        label = class_index if num_classes else None
        images.append(to_uint8(sample(generator, n_per_class, label, seed=seed + class_index, batch_size=batch_size,
                                      truncation_psi=truncation_psi, progress=progress)))
        labels.append(torch.full((n_per_class,), class_index, dtype=torch.long))
    pictures, masks = split_masks(torch.cat(images))
    return ImageSet(pictures, torch.cat(labels), names, source=source, split="synthetic",
                    cache_key=f"synthetic:{source}:{seed}:{n_per_class}:{truncation_psi:g}",
                    masks=None if masks is None else torch.where(masks > 127, 255, 0).to(torch.uint8))


def has_mask(generator: nn.Module) -> bool:
    """True for image+mask generators (their last output channel is the mask)."""
    return bool(getattr(getattr(generator, "config", None), "with_mask", False))


def image_shape(generator: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of the images a generator makes, without its mask channel (what metrics and real data compare)."""
    channels, height, width = generator.output_shape
    return channels - int(has_mask(generator)), height, width


def split_masks(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image+mask output (B, C + 1, H, W) -> (images (B, C, H, W), masks (B, 1, H, W)); (images, None) otherwise.

    Images have 1 (gray) or 3 (RGB) channels, so 2 or 4 channels mean an image with its mask as the last channel
    (image+mask models such as ``alpha-gan-gp``; > 0 in [-1, 1], or > 127 in uint8, is inside the mask).
    """
    if images.shape[1] in (2, 4):
        return images[:, :-1], images[:, -1:]
    return images, None


def export_dataset(generator: nn.Module, out_dir: str | Path, n_per_class: int, *,
                   class_names: Sequence[str] | None = None, seed: int = 0, model_name: str | None = None,
                   checkpoint: str | Path | None = None, make_zip: bool = True, batch_size: int = 64,
                   replace: bool = False, truncation_psi: float = 1.0,
                   progress: Callable[[int], object] | None = None, classes: Sequence[str] | None = None) -> Path:
    """Write a synthetic dataset in the real sets' layout: ``out_dir/Training/<class>/<class>_00000.png``.

    Conditional generators get ``n_per_class`` images for each class; unconditional ones write
    ``n_per_class`` images into ``Training/synthetic``. A ``manifest.json`` records model, checkpoint,
    seed, date and counts; with ``make_zip`` a ``<out_dir>.zip`` sits next to the folder.

    Args:
        generator: trained generator.
        out_dir: destination folder; it must not exist or be empty unless ``replace`` is set.
        n_per_class: images per class.
        class_names: names for the class folders (default ``class_0``...).
        seed: base seed; class ``k`` uses ``seed + k`` so classes are reproducible on their own.
        model_name: recorded in the manifest (default: ``generator.info.model`` for a loaded generator).
        checkpoint: recorded in the manifest (default: ``generator.info.source`` for a loaded generator).
        make_zip: also write a zip archive.
        batch_size: images per forward pass.
        replace: swap out an earlier export in ``out_dir`` (a resumed run's notebook re-exports its newer
            generator); the old folder is removed only once the new one is complete.
        truncation_psi: see :func:`sample` (StyleGAN2 models only); recorded in the manifest.
        progress: see :func:`sample`.
        classes: export only these classes, by name (see :func:`synthetic_set`).
    Returns:
        The dataset folder.
    Raises:
        FileExistsError: when ``out_dir`` holds files and ``replace`` is not set.
        ValueError: for ``n_per_class`` < 1 or class names that do not fit the generator.
    """
    out_dir = Path(out_dir)
    info = getattr(generator, "info", None)
    with staged_folder(out_dir, replace) as staging:  # refuses a non-empty out_dir before any sampling
        synthetic = synthetic_set(generator, n_per_class, class_names=class_names, seed=seed, batch_size=batch_size,
                                  truncation_psi=truncation_psi, progress=progress, classes=classes)
        names = [name.replace("/", "_") for name in synthetic.class_names]
        counts = {}
        for class_index, name in enumerate(names):
            if not (synthetic.labels == class_index).any():
                continue  # a class left out by ``classes``
            folder = staging / "Training" / name
            folder.mkdir(parents=True)
            rows = torch.nonzero(synthetic.labels == class_index).flatten().tolist()
            for index, row in enumerate(rows):
                Image.fromarray(picture_array(synthetic.images[row])).save(folder / f"{name}_{index:05d}.png")
                if synthetic.masks is not None:  # the layout load_images(DataConfig(masks=True)) reads back
                    Image.fromarray(synthetic.masks[row, 0].numpy()).save(folder / f"{name}_{index:05d}{MASK_SUFFIX}.png")
            counts[name] = n_per_class
        atomic_write_json(staging / "manifest.json", {
            "kind": "synthetic MRI dataset generated by medgan_core (not patient data)",
            "model": model_name or (info.model if info else None),
            "checkpoint": str(checkpoint) if checkpoint else (info.source if info else None),
            "trained_on": info.dataset if info else None, "step": info.step if info else None, "seed": seed,
            "seeds": {name: seed + k for k, name in enumerate(names) if name in counts}, "counts": counts,
            "truncation_psi": truncation_psi,
            "image_size": generator.output_shape[-1], "channels": synthetic.channels,
            "masks": synthetic.masks is not None,  # <name>_mask.png beside each image (DataConfig(masks=True))
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "medgan_core": __version__,
        })
    if make_zip:
        archive = shutil.make_archive(str(out_dir.with_name(f".{out_dir.name}.zip-staging")), "zip", root_dir=out_dir)
        Path(archive).replace(out_dir.with_suffix(".zip"))
    return out_dir
