"""The Evaluate section of every model notebook: evaluate_run and metrics.json."""
import dataclasses
import json

import pytest

from medgan_core.config import TrainConfig
from medgan_core.data import identify_dataset, load_images
from medgan_core.evaluate import METRICS_NAME, evaluate_run
from medgan_core.hub import save_pretrained
from medgan_core.train import fit
from conftest import TINY_GAN
from test_dataset_identity import CLASSES, data_config, save_evaluator, write_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step cDCGAN run on a two-class folder (with a Testing split), and a set of other data."""
    root = tmp_path_factory.mktemp("evaluate")
    config = data_config(write_dataset(root / "tumour", n_per_class=8))
    quick = TrainConfig(max_steps=2, batch_size=4, sample_every=100, checkpoint_every=100, progress=False)
    result = fit("cdcgan", load_images(config), quick, root / "runs" / "cdcgan", model_config=TINY_GAN)
    return root, config, result


def test_without_an_evaluator_the_section_says_how_to_get_one(run, tmp_path, capsys):
    root, config, result = run
    assert evaluate_run(result.generator, config, tmp_path / "run", runs_root=tmp_path) is None
    line = capsys.readouterr().out
    assert "no evaluator of tumour" in line and "notebooks/00_vit_evaluator.ipynb" in line
    assert "train_evaluator_minutes" in line and not (tmp_path / "run" / METRICS_NAME).exists()


def test_an_evaluator_of_another_dataset_is_refused(run, tmp_path):
    root, config, result = run
    other = identify_dataset(str(write_dataset(tmp_path / "demo", n_per_class=5, seed=1)))
    path = save_evaluator(tmp_path / "demo-evaluator.safetensors", {"train": other})
    with pytest.raises(ValueError, match="trained/tested on other data .*not on tumour"):
        evaluate_run(result.generator, config, tmp_path / "run", evaluator_path=path)


def test_metrics_json_names_the_evaluator_the_test_split_and_the_seeds(run, capsys):
    root, config, result = run
    run_dir = root / "runs" / "cdcgan"
    evaluation = evaluate_run(result.generator, config, run_dir, runs_root=root / "none", train_evaluator_minutes=0.05,
                              n_samples=16, n_boot=10, k=3)
    assert "a small CNN trained here" in capsys.readouterr().out
    saved = json.loads((run_dir / METRICS_NAME).read_text())
    metrics = saved["metrics"]
    for key in ("fd [evaluator:cnn]", "kd [evaluator:cnn]", "precision [evaluator:cnn]", "coverage [evaluator:cnn]",
                "relative_fd [evaluator:cnn]", "fd low [evaluator:cnn]", "class consistency", "memorized share"):
        assert key in metrics, key
    assert set(saved["class_distribution"]) == set(CLASSES)
    assert sum(saved["class_distribution"].values()) == pytest.approx(1.0)
    assert saved["class_consistency"]["confusion"] and len(saved["class_consistency"]["confusion"]) == 2
    assert saved["evaluator"]["sha256"] == evaluation.evaluator["sha256"] and saved["evaluator"]["datasets"]["train"]
    assert saved["evaluator"]["path"].endswith("cdcgan/evaluator/evaluator.safetensors")
    assert saved["test_split"]["dataset"]["name"] == "tumour" and saved["test_split"]["split"] == "test"
    assert saved["settings"]["n_samples"] == 16 and saved["settings"]["latent_seeds"] == {"glioma": 0, "notumor": 1}
    assert evaluation.figure() is not None and evaluation.memorization_gallery(n=2) is not None
    # the evaluator trained here is found by the next evaluation of this dataset
    again = evaluate_run(result.generator, config, run_dir, runs_root=root / "runs", n_samples=16, n_boot=10, k=3)
    assert again.evaluator["sha256"] == evaluation.evaluator["sha256"]
    assert again.row["fd [evaluator:cnn]"] == pytest.approx(evaluation.row["fd [evaluator:cnn]"])  # same seeds
    hub = save_pretrained(result.generator, root / "hub", model_name="cdcgan", class_names=list(CLASSES),
                          metrics=evaluation.card_metrics(), metrics_measured_on=evaluation.measured_on())
    card = (hub / "README.md").read_text()
    assert "| relative_fd [evaluator:cnn] |" in card and "Measured on 16 generated images (seed 0)" in card


def test_99_compare_reuses_a_run_evaluation_with_the_same_settings_and_says_so(run):
    from medgan_core.compare import compare_models, load_entry
    from medgan_core.evaluator import load_evaluator
    from medgan_core.metrics.extractors import get_extractor

    root, config, result = run
    run_dir = root / "runs" / "cdcgan"
    evaluation = evaluate_run(result.generator, config, run_dir, runs_root=root / "runs", n_samples=16, n_boot=10, k=3)
    evaluator = load_evaluator(evaluation.evaluator["path"])
    train, test = load_images(config), load_images(dataclasses.replace(config, split="test"))
    extractors = [get_extractor("evaluator", evaluator=evaluator)]
    settings = dict(evaluator=evaluator, seed=0, n_boot=10, k=3, real_baseline=False, progress=None)
    reused = compare_models([load_entry(run_dir)], train, test, extractors, n_samples=16, **settings)
    assert any("scores reused from" in note and str(run_dir) in note for note in reused.notes)
    row = reused.leaderboard.iloc[0]
    assert row["fd [evaluator:cnn]"] == evaluation.row["fd [evaluator:cnn]"]
    assert row["class consistency"] == evaluation.row["class consistency"] and "cdcgan" in reused.memorization
    computed = compare_models([load_entry(run_dir)], train, test, extractors, n_samples=18, **settings)
    assert not any("reused" in note for note in computed.notes)  # other sample settings: scored afresh


def test_a_progan_stopped_early_is_scored_at_the_size_it_reached(run, capsys):
    from medgan_core.registry import build_model

    root, config, _ = run
    G, _, _ = build_model("progan", image_size=32, base_features=8, z_dim=8)
    G.set_growth(2, 1.0)  # 16 px of 32
    evaluation = evaluate_run(G, config, root / "progan", runs_root=root / "runs", train_evaluator_minutes=0.05,
                              n_samples=16, n_boot=10, k=3)
    assert "the generator makes 1x16 px images" in capsys.readouterr().out
    assert evaluation.comparison.samples["progan"].shape[-1] == 16
    G.set_growth(1, 1.0)  # 8 px: too small for the data pipeline
    assert evaluate_run(G, config, root / "progan", runs_root=root / "runs", n_samples=16) is None
    assert "only makes 8 px images" in capsys.readouterr().out
