"""Figures for notebooks and reports (the only module that imports matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` and, given ``save_to``, also writes it as a PNG
atomically. Figures come from pyplot, so Jupyter's inline backend knows how to display them, and are closed
before being returned, so a notebook shows each one exactly once: as the cell's value, or with ``display(fig)``
(what the notebooks do; a trailing ``;`` would hide it). The module never
selects a backend: PNGs are always rendered by Agg, whatever backend is active (inline, a GUI, or the Agg
fallback matplotlib picks on a headless machine).
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from .fileio import atomic_write_bytes
from .sampling import (class_names_for, fixed_labels, interpolate, latents, make_grid, picture_array, sample,
                       style_mix)

PADDING = 2  # pixels between tiles in image grids
REQUIRED_COLUMNS = ("step", "d_loss", "g_loss")
GRID_KINDS = ("step", "stage")  # fit() writes samples/step-00000500.png and, for growing GANs, samples/stage-3.png


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes (tight bounding box).

    Args:
        fig: the figure.
        dpi: resolution.
    Returns:
        The PNG file contents.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically.

    Args:
        fig: the figure.
        path: destination ``.png`` (parent folders are created).
        dpi: resolution.
    Returns:
        The path.
    """
    return atomic_write_bytes(path, figure_png(fig, dpi))


def plot_losses(history: pd.DataFrame, smooth: int = 1, *, save_to: str | Path | None = None) -> Figure:
    """Training curves from ``fit``'s history: losses, D outputs and throughput against the step.

    Panels: ``d_loss``/``g_loss`` (and ``wasserstein`` when logged); ``d_real``/``d_fake``; the regularisers
    (``r1``, ``pl_penalty``, ``gp``; lazy ones are logged only on their steps); ADA's ``aug_p`` when it moved;
    ``img_per_s``: each when logged.

    Args:
        history: ``FitResult.history`` or ``pd.read_csv(run_dir / "history.csv")``.
        smooth: moving-average window in history rows (1 = raw values).
        save_to: also save the figure here as PNG.
    Returns:
        The figure (one axes per panel, sharing the step axis).
    Raises:
        ValueError: for an empty history, missing step/loss columns, or ``smooth < 1``.
    """
    if history is None or history.empty:
        raise ValueError("history is empty: it gets a row every log_every steps, so train for at least that long")
    missing = [column for column in REQUIRED_COLUMNS if column not in history.columns]
    if missing:
        raise ValueError(f"history lacks column(s) {missing}; expected fit()'s history.csv with "
                         f"{list(REQUIRED_COLUMNS)}, got {list(history.columns)}")
    if smooth < 1:
        raise ValueError(f"smooth must be a window of at least 1 row, got {smooth}")
    frame = history.sort_values("step")
    panels = [("loss", [c for c in ("d_loss", "g_loss", "wasserstein") if c in frame.columns])]
    if {"d_real", "d_fake"} & set(frame.columns):
        panels.append(("mean D output", [c for c in ("d_real", "d_fake") if c in frame.columns]))
    regularisers = [c for c in ("r1", "pl_penalty", "gp") if c in frame.columns]
    if regularisers:
        panels.append(("regulariser", regularisers))
    if "aug_p" in frame.columns and frame["aug_p"].nunique() > 1:  # ADA's p moves; DiffAugment's is always 1
        panels.append(("augment p", ["aug_p"]))
    if "img_per_s" in frame.columns:
        panels.append(("images / s", ["img_per_s"]))
    fig, axes = _new_figure(len(panels), 1, figsize=(8, 2.5 * len(panels)), sharex=True)
    for ax, (ylabel, columns) in zip(axes, panels):
        for column in columns:
            series = frame[["step", column]].dropna()  # lazy regularisers leave gaps between their steps
            ax.plot(series["step"], series[column].rolling(smooth, min_periods=1).mean(), label=column)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(columns) > 1:
            ax.legend(loc="best")
    axes[0].set_title("Training history" + (f" (moving average of {smooth} rows)" if smooth > 1 else ""))
    axes[-1].set_xlabel("generator step")
    return _finish(fig, save_to)


def show_images(images: torch.Tensor, nrow: int | None = None, title: str | None = None,
                labels: torch.Tensor | Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                *, save_to: str | Path | None = None) -> Figure:
    """A grid of generated (or real) images.

    Args:
        images: (N, C, H, W) float in [-1, 1], C = 1 or 3 (2 or 4: with a mask channel, drawn as a red overlay).
        nrow: images per row; default ~sqrt(N), or with ``labels`` the largest class count.
        title: figure title.
        labels: (N,) class indices; images are then grouped one class per row (wrapping after ``nrow``) and
            each class is named on the left.
        class_names: names for the label indices (default: the indices).
        save_to: also save the figure here as PNG.
    Returns:
        The figure (one axes, one image).
    Raises:
        ValueError: for a batch of the wrong shape, or labels/class names that do not match it.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 2, 3, 4) or images.shape[0] == 0:
        raise ValueError(f"need a non-empty (N, 1 or 3, H, W) batch (+ 1 mask channel), got {tuple(images.shape)}")
    row_names: list[str] = []
    if labels is not None:
        images, nrow, row_names = _rows_by_class(images, labels, nrow, class_names)
    grid = make_grid(images, nrow, padding=PADDING)  # uint8 (H', W') or (H', W', 3)
    height, width = grid.shape[:2]
    fig_width = float(np.clip(width / 60, 3, 12)) + (1.5 if row_names else 0)
    fig_height = float(np.clip(fig_width * height / width, 1.5, 14)) + (0.4 if title else 0)
    fig, (ax,) = _new_figure(1, 1, figsize=(fig_width, fig_height))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    if row_names:
        tile = images.shape[2] + PADDING
        named = [(PADDING + row * tile + images.shape[2] / 2, name) for row, name in enumerate(row_names) if name]
        ax.set_yticks([y for y, _ in named], [name for _, name in named])
        ax.set_xticks([])
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
    else:
        ax.axis("off")
    if title:
        ax.set_title(title)
    return _finish(fig, save_to)


def plot_class_grid(generator: nn.Module, class_names: Sequence[str] | None = None, n_per_class: int = 8,
                    seed: int = 0, *, save_to: str | Path | None = None) -> Figure:
    """One row of samples per class from a conditional generator, class names on the left.

    Args:
        generator: a conditional medgan generator.
        class_names: one name per class (default ``class 0``...).
        n_per_class: images per row.
        seed: latent seed (see :func:`medgan_core.sampling.sample`).
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    Raises:
        ValueError: for an unconditional generator or class names that do not match it.
    """
    names = class_names_for(generator, class_names)
    if not names:
        raise ValueError("plot_class_grid needs a conditional generator; for this one use "
                         "show_images(sample(generator, n))")
    labels = fixed_labels(n_per_class * len(names), len(names))  # n_per_class of class 0, then class 1, ...
    images = sample(generator, len(labels), labels, seed=seed)
    return show_images(images, nrow=n_per_class, title=f"seed {seed}", labels=labels, class_names=names,
                       save_to=save_to)


def plot_interpolation(generator: nn.Module, seed_a: int, seed_b: int, steps: int = 8, label: int | None = None,
                       class_names: Sequence[str] | None = None, *, save_to: str | Path | None = None) -> Figure:
    """A strip of images along the spherical path between the latents of two seeds.

    Args:
        generator: a medgan generator.
        seed_a: seed of the first image.
        seed_b: seed of the last image.
        steps: images in the strip.
        label: class for conditional generators (default class 0).
        class_names: names for the title (default ``class 0``...).
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    """
    names = class_names_for(generator, class_names)
    images = interpolate(generator, seed_a, seed_b, steps, label)
    title = f"seed {seed_a} \u2192 seed {seed_b}" + (f", {names[label or 0]}" if names else "")
    return show_images(images, nrow=steps, title=title, save_to=save_to)


def plot_style_mixing(generator: nn.Module, row_seeds: Sequence[int], col_seeds: Sequence[int], cutoff: int,
                      label: int | None = None, truncation_psi: float = 1.0, *,
                      save_to: str | Path | None = None) -> Figure:
    """StyleGAN2's style-mixing grid: rows keep their coarse styles (first ``cutoff`` layers), columns give the fine.

    Args:
        generator: a StyleGAN2 generator.
        row_seeds: seeds of the row images (left column).
        col_seeds: seeds of the column images (top row).
        cutoff: style layers taken from the row image.
        label: class for conditional generators (default class 0).
        truncation_psi: truncation of every style.
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    """
    images = style_mix(generator, row_seeds, col_seeds, cutoff, label, truncation_psi)
    title = f"rows: first {cutoff} of {generator.num_ws} style layers; columns: the rest"
    return show_images(images, nrow=len(col_seeds) + 1, title=title, save_to=save_to)


def plot_truncation(generator: nn.Module, seeds: Sequence[int], psis: Sequence[float] = (1.0, 0.7, 0.5, 0.0),
                    label: int | None = None, *, save_to: str | Path | None = None) -> Figure:
    """The same seeds at several truncation values: one column per seed, one row per psi (top to bottom).

    Args:
        generator: a StyleGAN2 generator.
        seeds: latent seeds.
        psis: truncation values; 0 gives the average image (of the class, for cstylegan2).
        label: class for conditional generators.
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    """
    rows = [torch.cat([sample(generator, 1, label, seed=seed, truncation_psi=psi) for seed in seeds]) for psi in psis]
    title = "truncation psi " + ", ".join(f"{psi:g}" for psi in psis) + " (top to bottom)"
    return show_images(torch.cat(rows), nrow=len(seeds), title=title, save_to=save_to)


def plot_sample_progression(run_dir: str | Path, max_grids: int = 6, *, kind: str = "step",
                            save_to: str | Path | None = None) -> Figure:
    """The fixed-noise sample grids a run wrote side by side, oldest first: the same seeds as training goes on.

    Args:
        run_dir: a training run folder.
        max_grids: at most this many grids, evenly spaced over training (first and last always shown).
        kind: ``"step"`` (``samples/step-*.png``, every ``sample_every`` steps) or ``"stage"``
            (``samples/stage-*.png``, the end of each resolution stage of a growing GAN such as ProGAN).
        save_to: also save the figure here as PNG.
    Returns:
        The figure (one axes per grid, titled with its step or stage).
    Raises:
        ValueError: for an unknown ``kind``.
        FileNotFoundError: when the run has no such grids yet.
    """
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    pattern = re.compile(rf"{kind}-(\d+)\.png")
    grids = sorted((p for p in Path(run_dir).glob(f"samples/{kind}-*.png") if pattern.fullmatch(p.name)),
                   key=lambda p: int(pattern.fullmatch(p.name).group(1)))
    if not grids:
        raise FileNotFoundError(f"no samples/{kind}-*.png in {run_dir}: fit() writes them every sample_every steps "
                                "(step) or at the end of each stage of a growing GAN (stage)")
    picks = np.linspace(0, len(grids) - 1, min(max_grids, len(grids))).round().astype(int)
    fig, axes = _new_figure(1, len(picks), figsize=(min(3 * len(picks), 18), 3.4))
    for ax, index in zip(axes, picks):
        with Image.open(grids[index]) as image:
            array = np.asarray(image)
        ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        number = int(pattern.fullmatch(grids[index].name).group(1))
        ax.set_title(f"stage {number}: {4 * 2 ** number} px" if kind == "stage" else f"step {number}")
        ax.axis("off")
    return _finish(fig, save_to)


def plot_classifier_history(history: pd.DataFrame | Sequence[dict], *, save_to: str | Path | None = None) -> Figure:
    """Evaluator training curves: train/validation loss and validation accuracy per epoch.

    Args:
        history: ``evaluator.meta["history"]`` or the run's ``history.csv`` (epoch, train_loss, val_loss,
            val_accuracy).
        save_to: also save the figure here as PNG.
    Returns:
        The figure (two panels sharing the epoch axis).
    Raises:
        ValueError: for an empty history.
    """
    frame = pd.DataFrame(history)
    if frame.empty:
        raise ValueError("the classifier history is empty: train for at least one epoch")
    fig, (loss_ax, accuracy_ax) = _new_figure(1, 2, figsize=(9, 3))
    loss_ax.plot(frame["epoch"], frame["train_loss"], label="train")
    loss_ax.plot(frame["epoch"], frame["val_loss"], label="validation")
    loss_ax.set_ylabel("cross-entropy (smoothed labels)")
    loss_ax.legend(loc="best")
    accuracy_ax.plot(frame["epoch"], frame["val_accuracy"], marker="o", color="tab:green")
    best = frame["val_accuracy"].idxmax()
    accuracy_ax.axvline(frame.loc[best, "epoch"], color="gray", linestyle=":", label="best epoch (kept)")
    accuracy_ax.set_ylabel("validation accuracy")
    accuracy_ax.legend(loc="lower right")
    for ax in (loss_ax, accuracy_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _finish(fig, save_to)


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], *, normalize: bool = True,
                          title: str | None = None, save_to: str | Path | None = None) -> Figure:
    """Confusion matrix heat map (rows = true class, columns = predicted), counts written in each cell.

    Args:
        confusion: (K, K) counts.
        class_names: the K class names.
        normalize: colour by the share of each true class (row), which makes rare classes readable.
        title: figure title.
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    Raises:
        ValueError: when the matrix is not K x K for the K names.
    """
    counts = np.asarray(confusion)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not fit {k} class names")
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0) if normalize else counts
    fig, (ax,) = _new_figure(1, 1, figsize=(1.2 * k + 2.5, 1.1 * k + 1.5))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, f"{count}" + (f"\n{shares[i, j]:.0%}" if normalize else ""), ha="center", va="center",
                color="white" if shares[i, j] > 0.5 * shares.max() else "black", fontsize=9)
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix" + (" (colour: share of the true class)" if normalize else ""))
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _finish(fig, save_to)


def plot_leaderboard(table: pd.DataFrame, title: str = "Leaderboard", *, transpose: bool | None = None,
                     save_to: str | Path | None = None) -> Figure:
    """A table of strings (e.g. :func:`medgan_core.compare.format_leaderboard`) rendered as a figure.

    Args:
        table: rows = models, columns = scores (already formatted), the first column naming the model.
        title: figure title.
        transpose: one column per model and one row per score; None: when there are more than 8 score columns
            (a wide table is unreadable once scaled to a page).
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    Raises:
        ValueError: for an empty table.
    """
    if table.empty:
        raise ValueError("the leaderboard is empty: compare at least one model")
    if transpose if transpose is not None else len(table.columns) > 9:
        table = table.set_index(table.columns[0]).T.rename_axis("score").reset_index()
    widths = [max(len(str(v)) for v in [column, *table[column]]) for column in table.columns]  # characters
    fig, (ax,) = _new_figure(1, 1, figsize=(max(6.0, 0.075 * sum(widths)), 0.3 * len(table) + 1.0))
    ax.axis("off")
    cells = ax.table(cellText=table.astype(str).values, colLabels=[str(c) for c in table.columns], loc="center",
                     cellLoc="center", colWidths=[w / sum(widths) for w in widths])
    cells.auto_set_font_size(False)
    cells.set_fontsize(7)
    cells.scale(1, 1.4)
    ax.set_title(title)
    return _finish(fig, save_to)


def plot_model_samples(samples: dict[str, torch.Tensor], nrow: int = 8, *,
                       save_to: str | Path | None = None) -> Figure:
    """Side-by-side sample grids, one panel per model (the same seeds for every model).

    Args:
        samples: model name -> (N, C, H, W) float images in [-1, 1].
        nrow: images per grid row.
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    Raises:
        ValueError: when there is nothing to show.
    """
    if not samples:
        raise ValueError("no samples to show")
    fig, axes = _new_figure(1, len(samples), figsize=(3.6 * len(samples), 3.9))
    for ax, (name, images) in zip(axes, samples.items()):
        grid = make_grid(images, nrow, padding=PADDING)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return _finish(fig, save_to)


def plot_loss_comparison(histories: dict[str, pd.DataFrame], smooth: int = 5, *,
                         save_to: str | Path | None = None) -> Figure:
    """Discriminator and generator losses of several runs, one column per run (their scales differ by objective).

    Args:
        histories: run name -> ``history.csv`` frame.
        smooth: moving-average window in rows.
        save_to: also save the figure here as PNG.
    Returns:
        The figure.
    Raises:
        ValueError: when there is no history.
    """
    if not histories:
        raise ValueError("no training histories to plot")
    fig, axes = _new_figure(1, len(histories), figsize=(3.6 * len(histories), 2.8))
    for ax, (name, history) in zip(axes, histories.items()):
        frame = history.sort_values("step")
        for column in ("d_loss", "g_loss", "wasserstein"):
            if column in frame.columns:
                ax.plot(frame["step"], frame[column].rolling(smooth, min_periods=1).mean(), label=column)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _finish(fig, save_to)


def plot_pyramid(generator: nn.Module, n: int = 4, seed: int = 0, label: int | None = None, *,
                 save_to: str | Path | None = None) -> Figure:
    """A multi-scale generator's scales side by side (coarse to fine, each shown at its own resolution), one row per
    sample; masks as a red overlay.

    Args:
        generator: a generator with ``scale_outputs`` (``alpha-gan-gp``).
        n: samples (rows).
        seed: latent seed.
        label: class for conditional generators.
        save_to: optional PNG path.
    Returns:
        The figure.
    """
    z = latents(n, generator.config.z_dim, seed).to(next(generator.parameters()).device)
    labels = None if label is None else torch.full((n,), label, dtype=torch.long, device=z.device)
    with torch.no_grad():
        scales = generator.eval().scale_outputs(z, labels)
    fig, axes = _new_figure(n, len(scales), (1.8 * len(scales), 1.8 * n))
    for column, output in enumerate(scales):
        for row in range(n):
            ax = axes[row * len(scales) + column]
            ax.imshow(picture_array(output[row]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.axis("off")
            if row == 0:
                ax.set_title(f"scale {column}: {output.shape[-1]} px", fontsize=9)
    return _finish(fig, save_to)


def plot_volume_planes(subject, config, *, save_to: str | Path | None = None) -> Figure:
    """One subject's axial, coronal and sagittal planes through the brain's centre, as the loader sees them.

    The chosen slices along ``config.slice_axis`` are drawn as lines on the two other planes, and the label (when
    there is one) as a red contour, so a user checks orientation, slice band and masks before training.

    Args:
        subject: a ``volumes.VolumeSubject`` (e.g. from ``volumes.scan_volumes``).
        config: the ``DataConfig`` used to load the slices.
        save_to: optional PNG path.
    Returns:
        The figure.
    """
    from .volumes import SLICE_AXES, chosen_slices, pixel_aspect, read_subject, view_slice

    volumes = read_subject(subject, config)
    centre = [int(np.mean(np.flatnonzero(volumes.brain.any(axis=tuple(a for a in range(3) if a != axis)))))
              for axis in range(3)]  # brain centre along x, y, z
    cut_axis = SLICE_AXES[config.slice_axis]
    chosen = chosen_slices(volumes.brain, volumes.label, cut_axis, config)
    fig, axes = _new_figure(1, 3, (12, 4.2))
    for ax, (view, axis) in zip(axes, SLICE_AXES.items()):
        ax.imshow(volumes.picture(0, axis, centre[axis]), cmap="gray", vmin=0, vmax=1,
                  aspect=1 / pixel_aspect(volumes.zooms, axis))
        if volumes.label is not None:
            ax.contour(view_slice(volumes.label, axis, centre[axis]), levels=[0.5], colors="red", linewidths=0.8)
        if axis != cut_axis and chosen:  # where the chosen slices cut this plane
            others = [a for a in range(3) if a != axis]
            size = volumes.brain.shape[cut_axis]
            for k in (chosen[0], chosen[-1]):
                position = size - 1 - k  # view_slice flips both in-plane axes
                draw = ax.axvline if others[0] == cut_axis else ax.axhline
                draw(position, color="yellow", linewidth=1)
        ax.set_title(f"{view} {centre[axis]}" + (f" ({len(chosen)} slices)" if axis == cut_axis else ""))
        ax.axis("off")
    fig.suptitle(f"{subject.subject} ({subject.class_name}): {config.slice_axis} slices {chosen[0] if chosen else '-'}"
                 f"..{chosen[-1] if chosen else '-'} between the yellow lines")
    return _finish(fig, save_to)


def _rows_by_class(images: torch.Tensor, labels: torch.Tensor | Sequence[int], nrow: int | None,
                   class_names: Sequence[str] | None) -> tuple[torch.Tensor, int, list[str]]:
    """Reorder a batch so each class fills its own rows (blank tiles pad a class's last row).

    Returns:
        ``(tiles, images per row, name of each row)``; a class's continuation rows get an empty name.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (images.shape[0],):
        raise ValueError(f"need one label per image: got shape {tuple(labels.shape)} for {images.shape[0]} images")
    classes = labels.unique(sorted=True).tolist()
    if class_names is not None and (classes[0] < 0 or classes[-1] >= len(class_names)):
        raise ValueError(f"labels {classes} do not index the {len(class_names)} class names")
    images = images.detach().cpu()
    width = nrow or int(torch.bincount(labels - labels.min()).max())
    blank = torch.full_like(images[0], -1.0)  # renders black, like the padding
    tiles: list[torch.Tensor] = []
    row_names: list[str] = []
    for label in classes:
        members = list(images[labels == label])
        rows = math.ceil(len(members) / width)
        tiles += members + [blank] * (rows * width - len(members))
        row_names += [class_names[label] if class_names is not None else str(label)] + [""] * (rows - 1)
    return torch.stack(tiles), width, row_names


def _new_figure(nrows: int, ncols: int, figsize: tuple[float, float], **kwargs) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **kwargs)
    plt.close(fig)  # keeps it drawable and returnable, but out of pyplot's "show at cell end" list
    return fig, list(axes.ravel())


def _finish(fig: Figure, save_to: str | Path | None) -> Figure:
    fig.tight_layout()
    if save_to is not None:
        save_figure(fig, save_to)
    return fig
