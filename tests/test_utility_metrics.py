"""Class consistency, CAS and augmentation gain on a task a small CNN learns in seconds."""
import pytest
import torch

from medgan_core.evaluator import EvaluatorConfig, EvaluatorTrainConfig
from medgan_core.metrics.utility import augmentation_gain, class_consistency, classification_accuracy_score
from test_evaluator import shape_set

CONFIG = EvaluatorConfig(arch="cnn", image_size=32, width=8)
RECIPE = EvaluatorTrainConfig(epochs=6, batch_size=8, lr=3e-3, patience=3, progress=False, warmup_epochs=0.5)


class OracleEvaluator:
    """Knows the true class of every image it was shown (looked up by content)."""

    class_names = ["disc", "ring", "pair"]

    def __init__(self, data):
        self.truth = {image.numpy().tobytes(): int(label) for image, label in zip(data.images, data.labels)}

    def predict(self, images):
        return torch.tensor([self.truth[image.numpy().tobytes()] for image in images])


def test_class_consistency_is_perfect_for_real_images_of_the_requested_class():
    real = shape_set(10, seed=5)
    report = class_consistency(OracleEvaluator(real), real.images, real.labels, real.class_names, n_boot=100)
    assert report.accuracy == 1.0
    shuffled = real.labels.roll(10)  # every image "requested" as another class
    assert class_consistency(OracleEvaluator(real), real.images, shuffled, real.class_names).accuracy == 0.0
    with pytest.raises(ValueError, match="differ from the evaluator"):
        class_consistency(OracleEvaluator(real), real.images, real.labels, ["a", "b", "c"])


def test_cas_is_near_chance_for_wrongly_labelled_synthetic_images_and_high_for_real_ones():
    real_train, real_test = shape_set(30, seed=1), shape_set(20, seed=2)
    mislabelled = shape_set(30, seed=3)
    mislabelled.labels = (mislabelled.labels + 1) % 3  # a "generator" that draws the wrong class every time
    with pytest.warns(UserWarning, match="seed"):
        result = classification_accuracy_score(mislabelled, real_train, real_test, config=CONFIG, train_config=RECIPE,
                                               seeds=(0,), n_boot=200)
    summary = result.summary.set_index("setting")
    assert summary.loc["real", "accuracy"] >= 0.9
    assert summary.loc["synthetic", "accuracy"] <= 0.4
    assert summary.loc["synthetic", "diff_high"] < 0  # the loss is significant
    assert len(result.runs) == 2


def test_augmentation_gain_runs_paired_settings_with_the_requested_ratios():
    real_train, real_test, synthetic = shape_set(20, seed=1), shape_set(10, seed=2), shape_set(20, seed=4)
    with pytest.warns(UserWarning):
        result = augmentation_gain(synthetic, real_train, real_test, ratios=(0.5, 1.0), config=CONFIG,
                                   train_config=RECIPE, seeds=(0,), n_boot=100)
    runs = result.runs.set_index("setting")
    n_real = runs.loc["real", "n_train"]
    assert abs(runs.loc["real+0.5x synthetic", "n_train"] - 1.5 * n_real) <= 3  # rounded per class
    assert runs.loc["real+1x synthetic", "n_train"] == 2 * n_real
    row = result.summary.set_index("setting").loc["real+1x synthetic"]
    assert row["diff_low"] <= row["minus_real"] <= row["diff_high"]
    with pytest.raises(ValueError, match="need 68 synthetic images of class .disc., have 2"):
        augmentation_gain(shape_set(2, seed=4), real_train, real_test, ratios=(4.0,), config=CONFIG,
                          train_config=RECIPE, seeds=(0,))


def test_unlabelled_synthetic_images_are_refused():
    real = shape_set(5)
    unconditional = shape_set(5)
    unconditional.class_names = ["synthetic", "x", "y"]
    with pytest.raises(ValueError, match="unconditional model has no labels"):
        classification_accuracy_score(unconditional, real, real, config=CONFIG, train_config=RECIPE)
