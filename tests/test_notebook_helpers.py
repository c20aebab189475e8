"""The steps the notebooks share (medgan_core.notebook), on the demo set and a 1-step tiny DCGAN."""
import json
from types import SimpleNamespace

import pytest
from matplotlib.figure import Figure

from medgan_core import notebook
from medgan_core.config import TrainConfig
from medgan_core.train import fit
from conftest import TINY_GAN


@pytest.fixture
def shown(monkeypatch):
    """What the helpers display, in order."""
    displayed = []
    monkeypatch.setattr(notebook, "display", displayed.append)
    return displayed


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-step DCGAN run on 2 demo images per class: (data_config, run_dir, generator)."""
    data_config, train_set = notebook.load_training_data(dataset="demo", image_size=32, max_per_class=2)
    run_dir = tmp_path_factory.mktemp("run")
    quick = TrainConfig(max_steps=1, batch_size=4, sample_every=100, checkpoint_every=100, progress=False)
    result = fit("dcgan", train_set, quick, run_dir, model_config=TINY_GAN, data_config=data_config)
    return data_config, run_dir, result.generator


def test_start_run_prints_the_runtime_and_makes_a_new_folder_or_takes_the_given_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDGAN_RUNS", str(tmp_path / "runs"))
    run_dir = notebook.start_run("01_dcgan")
    assert run_dir.is_dir() and run_dir.name == "01_dcgan" and run_dir.parent.parent == tmp_path / "runs"
    printed = capsys.readouterr().out
    assert "torch:" in printed and "device:" in printed and f"outputs -> {run_dir.resolve()}" in printed
    assert notebook.start_run("01_dcgan", tmp_path / "earlier") == tmp_path / "earlier"  # resuming: the given folder


def test_load_training_data_returns_the_config_and_images_and_shows_them(shown, capsys):
    data_config, train_set = notebook.load_training_data(dataset="demo", image_size=32, max_per_class=2, seed=1)
    assert (data_config.dataset, data_config.image_size, data_config.seed) == ("demo", 32, 1)
    assert len(train_set) == 8 and train_set.masks is None
    assert f"8 training images from {train_set.source}: {train_set.class_counts()}" in capsys.readouterr().out
    assert len(shown) == 1 and isinstance(shown[0], Figure)


def test_load_training_data_with_masks_reports_lesions_and_shows_the_pairs(shown, capsys):
    _, pairs = notebook.load_training_data(dataset="demo", image_size=32, max_per_class=2, masks=True)
    printed = capsys.readouterr().out
    assert pairs.masks is not None and "8 training pairs from" in printed and "of them with a lesion" in printed
    assert shown[0].axes[0].get_title() == "training pairs"


def test_export_synthetic_writes_run_dir_synthetic_and_replaces_an_earlier_export(trained, capsys):
    _, run_dir, generator = trained
    export_dir = notebook.export_synthetic(generator, run_dir, 2, seed=0)
    assert export_dir == run_dir / "synthetic" and export_dir.with_suffix(".zip").is_file()
    assert f"synthetic dataset -> {export_dir}" in capsys.readouterr().out
    notebook.export_synthetic(generator, run_dir, 1, seed=0)  # a resumed run exports again
    assert sum(json.loads((export_dir / "manifest.json").read_text())["counts"].values()) == 1


def test_evaluate_and_show_shows_nothing_without_an_evaluator(trained, tmp_path, shown, capsys):
    data_config, run_dir, generator = trained
    assert notebook.evaluate_and_show(generator, data_config, run_dir, runs_root=tmp_path) is None
    assert not shown and "no evaluator of demo" in capsys.readouterr().out


def test_evaluate_and_show_saves_the_figure_and_shows_it_with_the_closest_pairs(trained, shown, monkeypatch):
    data_config, run_dir, generator = trained
    figures = []
    evaluation = SimpleNamespace(figure=lambda save_to: figures.append(save_to) or "metrics figure",
                                 memorization_gallery=lambda n: f"{n} closest pairs")
    monkeypatch.setattr(notebook, "evaluate_run", lambda *args, **options: evaluation)
    assert notebook.evaluate_and_show(generator, data_config, run_dir, n_samples=8) is evaluation
    assert figures == [run_dir / "evaluation.png"] and shown == ["metrics figure", "4 closest pairs"]


def test_share_saves_the_hub_folder_and_pushes_only_when_asked(trained, monkeypatch, capsys):
    _, run_dir, generator = trained
    pushed = []
    monkeypatch.setattr(notebook, "push_folder_to_hub",
                        lambda folder, repo_id: pushed.append((folder, repo_id)) or "https://hf.co/x")
    hub_dir = notebook.share(generator, run_dir)
    assert hub_dir == run_dir / "hub" and (hub_dir / "model.safetensors").is_file() and not pushed
    assert "hub files: ['README.md', 'config.json', 'model.safetensors', 'samples.png']" in capsys.readouterr().out
    notebook.share(generator, run_dir, push_to="alice/medgan-dcgan")
    assert pushed == [(hub_dir, "alice/medgan-dcgan")]  # the folder it saved, not a second save
    assert "alice/medgan-dcgan" in (hub_dir / "README.md").read_text()
    assert "pushed to https://hf.co/x" in capsys.readouterr().out
