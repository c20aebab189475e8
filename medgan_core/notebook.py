"""The steps every notebook shares, one call each: start a run, load and show the training data, export the
synthetic set, evaluate and show the scores, save (and push) the generator for the Hub.

What is particular to a model (its configs, its training call, its plots) stays in its notebook. Installing
``medgan_core`` itself cannot live here: the notebooks' setup cell does it before this module can be imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from IPython.display import display

from .config import DataConfig
from .data import ImageSet, load_images, to_float
from .evaluate import RunEvaluation, evaluate_run
from .hub import push_folder_to_hub, save_pretrained
from .plotting import show_images
from .runtime import describe_runtime, new_run_dir
from .sampling import export_dataset

PREVIEW_IMAGES = 32  # training images shown by load_training_data


def start_run(name: str, run_dir: str | Path | None = None) -> Path:
    """Print where the code runs (platform, versions, device, GPU) and create the run's output folder.

    Args:
        name: the notebook's name (``"01_dcgan"``), the folder's name under the output root.
        run_dir: an explicit folder (an earlier run's, to resume it); None: a new timestamped one.
    Returns:
        The run folder (created).
    """
    describe_runtime()
    run_dir = new_run_dir(name, run_dir)
    print("outputs ->", run_dir.resolve())
    return run_dir


def load_training_data(**settings: Any) -> tuple[DataConfig, ImageSet]:
    """Load the training split, print its size and class counts, and show the first images (with their masks in
    red when the settings ask for masks).

    Args:
        **settings: :class:`~medgan_core.config.DataConfig` fields (``dataset``, ``image_size``, ``masks``, ...).
    Returns:
        ``(data_config, train_set)``: the config (the evaluation and checkpoints record it) and the images.
    """
    data_config = DataConfig(**settings)
    train_set = load_images(data_config)
    kind = "pairs" if train_set.masks is not None else "images"
    print(f"{len(train_set)} training {kind} from {train_set.source}: {train_set.class_counts()}")
    shown = train_set.images[:PREVIEW_IMAGES]
    if train_set.masks is not None:
        print(f"{train_set.masks.flatten(1).any(1).float().mean().item():.0%} of them with a lesion")
        shown = torch.cat([shown, train_set.masks[:PREVIEW_IMAGES]], dim=1)  # a last channel: drawn in red
    display(show_images(to_float(shown), title=f"training {kind}"))
    return data_config, train_set


def export_synthetic(generator: nn.Module, run_dir: str | Path, per_class: int, *, seed: int = 0,
                     **options: Any) -> Path:
    """Export ``per_class`` generated images per class to ``run_dir/synthetic`` in the real data's folder layout
    (plus a zip and ``manifest.json``), replacing an earlier export of the run (a resumed run exports again).

    Args:
        generator: the trained generator; its model, classes and checkpoint go into the manifest.
        run_dir: the run folder.
        per_class: images per class.
        seed: latent seed base.
        **options: more :func:`~medgan_core.sampling.export_dataset` arguments (``truncation_psi``, ...).
    Returns:
        The export folder.
    """
    export_dir = export_dataset(generator, Path(run_dir) / "synthetic", per_class, seed=seed, replace=True, **options)
    print("synthetic dataset ->", export_dir, "and", export_dir.with_suffix(".zip"))
    return export_dir


def evaluate_and_show(generator: nn.Module, data_config: DataConfig, run_dir: str | Path,
                      **options: Any) -> RunEvaluation | None:
    """Score the generator against the real test split (:func:`~medgan_core.evaluate.evaluate_run`, which writes
    ``run_dir/metrics.json``), then show the metrics figure (also saved as ``evaluation.png``) and the closest
    generated/training pairs of the memorization check.

    Args:
        generator: the trained generator.
        data_config: the training data's config; its test split is the reference.
        run_dir: the run folder.
        **options: more ``evaluate_run`` arguments (``evaluator_path``, ``n_samples``, ``seed``, ...).
    Returns:
        The evaluation, or None when there is no evaluator for this data (the printed line says what to do).
    """
    evaluation = evaluate_run(generator, data_config, run_dir, **options)
    if evaluation is not None:
        display(evaluation.figure(save_to=Path(run_dir) / "evaluation.png"))
        display(evaluation.memorization_gallery(n=4))
    return evaluation


def share(generator: nn.Module, run_dir: str | Path, evaluation: RunEvaluation | None = None, *,
          push_to: str | None = None) -> Path:
    """Save the generator in the Hub layout in ``run_dir/hub`` (safetensors, ``config.json``, model card with the
    evaluation's metrics), checked by loading it back with ``strict=True``; with ``push_to``, also upload it.

    Args:
        generator: the trained generator; its model, classes, training data and step go into the card.
        run_dir: the run folder.
        evaluation: the Evaluate step's result (None: the card says no metrics were computed).
        push_to: a Hub repo id (``"owner/name"``) to push to; needs the network and a token.
    Returns:
        The local Hub folder.
    """
    hub_dir = save_pretrained(generator, Path(run_dir) / "hub", evaluation=evaluation, repo_id=push_to)
    print("hub files:", sorted(path.name for path in hub_dir.iterdir()))
    if push_to:
        print("pushed to", push_folder_to_hub(hub_dir, push_to))
    return hub_dir
