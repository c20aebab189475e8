"""Scores that use a classifier: class consistency, classification accuracy score (CAS) and augmentation gain.

- Class consistency (conditional GANs): the evaluator classifies samples generated for each requested class.
- CAS (Ravuri & Vinyals 2019): train a classifier on synthetic images only, test it on the real test split,
  next to the same recipe trained on the real training split.
- Augmentation gain: real training images plus synthetic ones at given ratios versus real only, same recipe and
  seeds, as paired runs; the CI is a paired bootstrap over the test images of the seed-averaged difference.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..data import ImageSet
from ..stats import percentile_interval
from ..evaluator import (ClassificationReport, Evaluator, EvaluatorConfig, EvaluatorTrainConfig, classification_report,
                         train_evaluator)


def class_consistency(evaluator: Evaluator, images: torch.Tensor, requested: torch.Tensor,
                      class_names: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> ClassificationReport:
    """How often the evaluator recognises the class a conditional generator was asked for.

    Args:
        evaluator: classifier trained on real images.
        images: (N, C, H, W) generated images (uint8, or float in [-1, 1]).
        requested: (N,) labels the images were generated for.
        class_names: the generator's class names, in label order; they must be the evaluator's classes.
        n_boot: bootstrap resamples for the CIs.
        seed: fixes the resamples.
    Returns:
        A :class:`ClassificationReport` whose accuracy is the class consistency and whose confusion matrix shows
        which classes are drawn as which.
    Raises:
        ValueError: when the generator's classes are not the evaluator's.
    """
    if list(class_names) != list(evaluator.class_names):
        raise ValueError(f"generator classes {list(class_names)} differ from the evaluator's {evaluator.class_names}: "
                         "use an evaluator trained on the dataset the generator was trained on")
    return classification_report(requested, evaluator.predict(images), list(class_names), n_boot=n_boot, seed=seed)


def merge_sets(real: ImageSet, synthetic: ImageSet) -> ImageSet:
    """Real and synthetic images in one training set (class names must agree)."""
    if list(real.class_names) != list(synthetic.class_names):
        raise ValueError(f"synthetic classes {synthetic.class_names} differ from the real {real.class_names}")
    return ImageSet(torch.cat([real.images, synthetic.images]), torch.cat([real.labels, synthetic.labels]),
                    list(real.class_names), real.source, "train+synthetic",
                    f"{real.cache_key}+{synthetic.cache_key}")


def _take_per_class(synthetic: ImageSet, per_class: dict[int, int], seed: int) -> ImageSet:
    """A seeded subset with ``per_class[k]`` images of class k."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for label, count in per_class.items():
        candidates = torch.nonzero(synthetic.labels == label).flatten()
        if count > len(candidates):
            raise ValueError(f"need {count} synthetic images of class {synthetic.class_names[label]!r}, have "
                             f"{len(candidates)}: generate more (n_per_class)")
        rows += candidates[torch.randperm(len(candidates), generator=generator)[:count]].tolist()
    return synthetic.subset(sorted(rows), split="synthetic")


@dataclass
class UtilityResult:
    """Per-run accuracies and the summary of a CAS or augmentation-gain experiment."""

    runs: pd.DataFrame  # one row per (setting, seed): setting, seed, n_train, accuracy, val_accuracy
    summary: pd.DataFrame  # one row per setting: mean accuracy, CI, difference to real-only and its CI
    notes: list[str] = field(default_factory=list)


def _train_and_predict(train: ImageSet, val: ImageSet, test: ImageSet, config: EvaluatorConfig,
                       train_config: EvaluatorTrainConfig, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Predictions on ``test`` of the recipe trained on ``train`` with ``seed``."""
    evaluator = train_evaluator(train, config, replace(train_config, seed=seed, progress=False), val=val)
    return evaluator.predict(test.images).numpy(), {"val_accuracy": evaluator.meta["val_accuracy"],
                                                    "epochs": evaluator.meta["epochs_run"]}


def _paired_summary(correct: dict[str, np.ndarray], baseline: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean accuracy per setting and its difference to ``baseline``, with paired bootstrap CIs over test images.

    ``correct[setting]`` is a (seeds, N_test) 0/1 array; each bootstrap draw resamples test images once for all
    settings and seeds, so the differences are paired.
    """
    n_test = next(iter(correct.values())).shape[1]
    draws = np.random.default_rng(seed).integers(0, n_test, size=(n_boot, n_test))
    rows = []
    base_boot = correct[baseline][:, draws].mean(axis=(0, 2))  # (B,) seed-averaged accuracy per draw
    for setting, hits in correct.items():
        boot = hits[:, draws].mean(axis=(0, 2))
        (accuracy_low, accuracy_high), (diff_low, diff_high) = percentile_interval(boot), percentile_interval(boot - base_boot)
        rows.append({"setting": setting, "accuracy": hits.mean(), "accuracy_low": accuracy_low,
                     "accuracy_high": accuracy_high, "seed_std": hits.mean(axis=1).std(ddof=0),
                     f"minus_{baseline}": hits.mean() - correct[baseline].mean(), "diff_low": diff_low,
                     "diff_high": diff_high,
                     "seeds": hits.shape[0], "n_test": n_test})
    return pd.DataFrame(rows)


def _check_labelled(synthetic: ImageSet, real: ImageSet) -> None:
    if list(synthetic.class_names) != list(real.class_names):
        raise ValueError(f"CAS and augmentation need class-labelled synthetic images of the real classes "
                         f"{real.class_names}; got {synthetic.class_names} (an unconditional model has no labels)")


def classification_accuracy_score(synthetic: ImageSet, real_train: ImageSet, real_test: ImageSet, *,
                                  config: EvaluatorConfig | None = None,
                                  train_config: EvaluatorTrainConfig | None = None, seeds: Sequence[int] = (0, 1),
                                  n_boot: int = 1000, progress: Callable[[str], None] | None = None) -> UtilityResult:
    """Train on synthetic, test on real (CAS), next to train on real, test on real, with the same recipe and seeds.

    Validation splits are carved from each training set (synthetic from synthetic), never from the test split.

    Args:
        synthetic: labelled generated images (:func:`medgan_core.sampling.synthetic_set` of a conditional model).
        real_train: the real training split.
        real_test: the real test split.
        config: classifier architecture (default: the small CNN).
        train_config: recipe (the seed is replaced by each of ``seeds``).
        seeds: one paired run per seed.
        n_boot: bootstrap resamples of the test set.
        progress: called with a line per finished run.
    Returns:
        :class:`UtilityResult` with settings ``real`` and ``synthetic``; ``minus_real`` of ``synthetic`` is the
        accuracy lost by training on synthetic images only.
    """
    _check_labelled(synthetic, real_train)
    return _paired_runs({"real": real_train, "synthetic": synthetic}, real_test, config, train_config, seeds, n_boot,
                        progress)


def augmentation_gain(synthetic: ImageSet, real_train: ImageSet, real_test: ImageSet, *,
                      ratios: Sequence[float] = (0.5, 1.0), config: EvaluatorConfig | None = None,
                      train_config: EvaluatorTrainConfig | None = None, seeds: Sequence[int] = (0, 1),
                      n_boot: int = 1000, progress: Callable[[str], None] | None = None) -> UtilityResult:
    """Real training images plus ``ratio`` x as many synthetic ones (same class mix) versus real only.

    The validation split is carved from the real images only, so every setting stops on the same real data.

    Args:
        synthetic: labelled generated images, enough of each class for the largest ratio.
        real_train: the real training split.
        real_test: the real test split.
        ratios: synthetic images per real image added to the training set.
        config: classifier architecture.
        train_config: recipe (the seed is replaced by each of ``seeds``).
        seeds: one paired run per seed.
        n_boot: bootstrap resamples of the test set.
        progress: called with a line per finished run.
    Returns:
        :class:`UtilityResult` with settings ``real`` and ``real+<ratio>x synthetic``; ``minus_real`` is the gain.
    """
    _check_labelled(synthetic, real_train)
    train_config = train_config or EvaluatorTrainConfig()
    real_part, val = real_train.stratified_split(train_config.val_fraction, seed=0)
    counts = torch.bincount(real_part.labels, minlength=len(real_part.class_names)).tolist()
    settings = {"real": real_part}
    for ratio in ratios:
        extra = _take_per_class(synthetic, {k: round(ratio * c) for k, c in enumerate(counts)}, seed=int(ratio * 1000))
        settings[f"real+{ratio:g}x synthetic"] = merge_sets(real_part, extra)
    return _paired_runs(settings, real_test, config, train_config, seeds, n_boot, progress, val=val)


def _paired_runs(settings: dict[str, ImageSet], test: ImageSet, config: EvaluatorConfig | None,
                 train_config: EvaluatorTrainConfig | None, seeds: Sequence[int], n_boot: int,
                 progress: Callable[[str], None] | None, val: ImageSet | None = None) -> UtilityResult:
    config = config or EvaluatorConfig()
    train_config = train_config or EvaluatorTrainConfig()
    rows, correct = [], {}
    for setting, train in settings.items():
        hits = []
        for seed in seeds:
            if val is None:
                fit_set, fit_val = train.stratified_split(train_config.val_fraction, seed=seed)
            else:
                fit_set, fit_val = train, val
            predicted, info = _train_and_predict(fit_set, fit_val, test, config, train_config, seed)
            hit = predicted == test.labels.numpy()
            hits.append(hit)
            rows.append({"setting": setting, "seed": seed, "n_train": len(fit_set), "accuracy": hit.mean(), **info})
            if progress is not None:
                progress(f"{setting}, seed {seed}: test accuracy {hit.mean():.3f} ({len(fit_set)} training images)")
        correct[setting] = np.stack(hits).astype(float)
    notes = []
    if len(seeds) < 3:
        notes.append(f"{len(seeds)} seed(s): the CI covers test-set sampling; seed-to-seed spread is in seed_std")
    if len(test) < 200:
        notes.append(f"only {len(test)} test images: wide confidence intervals")
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return UtilityResult(pd.DataFrame(rows), _paired_summary(correct, "real", n_boot, seed=0), notes)
