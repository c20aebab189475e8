"""The comparison: same seeds, same real test split, one leaderboard with a real-data baseline row."""
import pandas as pd
import pytest
import torch.nn as nn

from medgan_core.compare import (REAL_BASELINE, compare_models, discover_runs, format_leaderboard, load_entry,
                                 utility_table)
from medgan_core.config import TrainConfig
from medgan_core.evaluator import EvaluatorConfig, train_evaluator
from medgan_core.hub import save_pretrained
from medgan_core.metrics.extractors import get_extractor
from medgan_core.train import fit
from conftest import TINY_GAN
from test_evaluator import FAST, shape_set


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    train, test = shape_set(12), shape_set(8, seed=9)
    quick = TrainConfig(max_steps=2, batch_size=8, sample_every=100, checkpoint_every=100, progress=False)
    fit("dcgan", train, quick, root / "runs" / "dcgan-run", model_config=TINY_GAN)
    conditional = fit("cdcgan", train, quick, root / "runs" / "cdcgan-run", model_config=TINY_GAN)
    hub_dir = save_pretrained(conditional.generator, root / "hub-cdcgan", model_name="cdcgan",
                              class_names=train.class_names)
    evaluator = train_evaluator(train, EvaluatorConfig(image_size=32, width=4), FAST)
    pixels = get_extractor(nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten()), name="pixels-8x8")
    return root, train, test, hub_dir, evaluator, pixels


def test_runs_are_discovered_and_loaded_with_their_history_and_classes(setup):
    root, train, _, hub_dir, _, _ = setup
    runs = discover_runs(root / "runs")
    assert [p.name for p in runs] == ["cdcgan-run", "dcgan-run"]
    entry = load_entry(runs[0])
    assert entry.model == "cdcgan" and entry.class_names == train.class_names and entry.step == 2
    assert entry.history is not None and "d_loss" in entry.history
    from_hub = load_entry(hub_dir)
    assert from_hub.model == "cdcgan" and from_hub.class_names == train.class_names and from_hub.history is None


def test_leaderboard_scores_every_model_and_the_real_baseline_beats_untrained_generators(setup, tmp_path):
    root, train, test, hub_dir, evaluator, pixels = setup
    entries = [load_entry(root / "runs" / "dcgan-run"), load_entry(hub_dir, name="cdcgan-hub")]
    evaluator_extractor = get_extractor("evaluator", evaluator=evaluator)
    with pytest.warns(UserWarning):
        result = compare_models(entries, train, test, [pixels, evaluator_extractor], evaluator=evaluator,
                                n_samples=24, n_boot=20, k=3, cache_dir=tmp_path / "cache", progress=None)
    board = result.leaderboard.set_index("model")
    assert set(board.index) == {"dcgan-run", "cdcgan-hub", REAL_BASELINE}
    fd = board["fd [pixels-8x8]"]
    assert fd[REAL_BASELINE] < fd["dcgan-run"] and fd[REAL_BASELINE] < fd["cdcgan-hub"]  # 2 steps of training
    assert result.leaderboard["model"].iloc[0] == REAL_BASELINE  # sorted by relative FD
    assert pd.isna(board.loc["dcgan-run", "class consistency"])
    drawn = result.synthetic["cdcgan-hub"]  # class consistency: how often the evaluator sees the requested class
    recognised = float((evaluator.predict(drawn.images) == drawn.labels).float().mean())
    assert board.loc["cdcgan-hub", "class consistency"] == pytest.approx(recognised)
    audit = result.memorization["dcgan-run"]
    assert board.loc["dcgan-run", "memorized share"] == pytest.approx(float(audit.table["flagged"].mean()))
    assert len(audit.table) == 24 and board.loc["dcgan-run", "img_per_s"] > 0
    per_class = result.scores.dropna(subset=["class"])
    assert set(per_class["model"]) == {"cdcgan-hub"} and set(per_class["class"]) == set(train.class_names)
    assert set(result.scores["extractor"]) == {"pixels-8x8", evaluator_extractor.name}
    assert all(images.shape[1:] == (1, 32, 32) for images in result.samples.values())
    small_n = [note for note in result.notes if "n_fake" in note]
    assert small_n and all(note.endswith("[every model and extractor]") for note in small_n)  # one note, not 6
    out = result.save(tmp_path / "comparison")
    for name in ("scores.csv", "leaderboard.csv", "leaderboard.html", "leaderboard.png", "samples.png", "losses.png"):
        assert (out / name).stat().st_size > 0, name
    shown = format_leaderboard(result.leaderboard)
    assert "[" in shown.set_index("model").loc["dcgan-run", "fd [pixels-8x8]"]  # value [CI]


def test_a_model_of_another_size_is_refused_before_any_work(setup):
    root, train, _, _, _, pixels = setup
    big_test = shape_set(4, size=64)
    with pytest.raises(ValueError, match="generates 1x32 px images but the test data is 1x64 px"):
        compare_models([load_entry(root / "runs" / "dcgan-run")], train, big_test, [pixels], progress=None)


def test_utility_table_runs_cas_and_augmentation_for_conditional_models_only(setup):
    root, train, test, hub_dir, _, pixels = setup
    entries = [load_entry(root / "runs" / "dcgan-run"), load_entry(hub_dir, name="cdcgan-hub")]
    comparison = compare_models(entries, train, test, [pixels], n_samples=30, n_boot=10, k=3, real_baseline=False,
                                progress=None)
    with pytest.warns(UserWarning):
        table = utility_table(comparison, entries, train, test, config=EvaluatorConfig(image_size=32, width=4),
                              train_config=FAST, seeds=(0,), ratios=(0.5, 50.0), n_boot=50, progress=None)
    assert set(table["model"]) == {"cdcgan-hub"}
    assert set(zip(table["experiment"], table["setting"])) == {  # 50x needs more samples than were generated
        ("CAS", "real"), ("CAS", "synthetic"), ("augmentation", "real"), ("augmentation", "real+0.5x synthetic")}
    assert [note for note in comparison.notes if "[50.0] skipped" in note and note.startswith("cdcgan-hub")]
    assert table["accuracy"].between(0, 1).all()


def test_models_of_a_minority_size_are_left_out_with_a_note(setup):
    root, *_ = setup
    from medgan_core.compare import ModelEntry, comparable_entries
    from medgan_core.registry import build_model

    big = build_model("dcgan", **{**TINY_GAN, "image_size": 64})[0]
    entries = [load_entry(root / "runs" / "dcgan-run"), load_entry(root / "runs" / "cdcgan-run"),
               ModelEntry("big", "dcgan", big, [], "memory")]
    kept, notes = comparable_entries(entries)
    assert [e.name for e in kept] == ["dcgan-run", "cdcgan-run"]
    assert notes == ["left out big: it generates 1x64 px, this comparison is at 1x32 px"]
    assert [e.name for e in comparable_entries(entries, image_size=64)[0]] == ["big"]


def test_two_runs_with_one_folder_name_get_two_rows(setup, tmp_path):
    """Two notebooks' run folders are both called e.g. 05_stylegan2: neither row may silently replace the other."""
    import shutil

    from medgan_core.compare import unique_names

    root, train, test, _, _, pixels = setup
    for batch in ("batch-a", "batch-b"):
        shutil.copytree(root / "runs" / "dcgan-run", tmp_path / batch / "dcgan-run")
    entries = [load_entry(tmp_path / batch / "dcgan-run") for batch in ("batch-a", "batch-b")]
    assert [e.name for e in unique_names(entries)[0]] == ["batch-a/dcgan-run", "batch-b/dcgan-run"]
    result = compare_models(entries, train, test, [pixels], n_samples=8, n_boot=5, k=3, real_baseline=False,
                            progress=None)
    assert sorted(result.leaderboard["model"]) == ["batch-a/dcgan-run", "batch-b/dcgan-run"]
    assert any("named 'batch-a/dcgan-run'" in note for note in result.notes)
