"""Using a trained model: one loading call for every source, and ``medgan sample | export | info``."""
import json

import pytest
import torch

from medgan_core import load_generator
from medgan_core.batch import main
from medgan_core.checkpoint import CheckpointError
from medgan_core.config import TrainConfig
from medgan_core.data import load_images
from medgan_core.hub import HubUnreachableError, save_pretrained
from medgan_core.plotting import plot_class_grid
from medgan_core.sampling import class_names_for, export_dataset, sample
from medgan_core.train import fit
from conftest import TINY_GAN
from test_dataset_identity import CLASSES, data_config, write_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cDCGAN run (2 steps) on a two-class folder, and its save_pretrained folder."""
    root = tmp_path_factory.mktemp("loading")
    data = load_images(data_config(write_dataset(root / "tumour")))
    quick = TrainConfig(max_steps=2, batch_size=4, sample_every=100, checkpoint_every=100, progress=False)
    result = fit("cdcgan", data, quick, root / "run", model_config=TINY_GAN)
    hub = save_pretrained(result.generator, root / "hub", model_name="cdcgan", class_names=data.class_names,
                          training_data="tumour", dataset=data.dataset, extra={"step": 2})
    return root / "run", result.checkpoint, hub, data


def test_every_source_gives_a_generator_that_knows_what_it_is(trained):
    run_dir, checkpoint, hub, data = trained
    for source, kind in ((run_dir, "checkpoint"), (checkpoint, "checkpoint"), (hub, "pretrained")):
        G = load_generator(source)
        info = G.info
        assert (info.model, info.kind, info.class_names, info.output_shape) == ("cdcgan", kind, CLASSES, (1, 32, 32))
        assert info.dataset == data.dataset and info.step == 2 and info.training_data == "tumour"
        assert G.config.num_classes == 2 and not G.training  # the generator itself, ready to sample
    info = load_generator(run_dir).info
    assert info.weights == "G_ema" and info.images_seen == 8 and info.meta["train_config"]["max_steps"] == 2
    assert load_generator(run_dir, use_ema=False).info.weights == "G"
    with pytest.raises(TypeError):  # the old (generator, checkpoint) tuple cannot be unpacked by mistake
        G, checkpoint_meta = load_generator(run_dir)
    summary = info.summary()
    assert "cdcgan" in summary and "0 = glioma, 1 = notumor" in summary and "1x32x32" in summary
    assert json.loads(json.dumps(info.as_dict()))["class_names"] == list(CLASSES)


def test_class_names_come_from_the_generator_everywhere(trained, tmp_path):
    run_dir, *_ = trained
    G = load_generator(run_dir)
    assert class_names_for(G) == list(CLASSES)
    assert torch.equal(sample(G, 4, "notumor", seed=3), sample(G, 4, 1, seed=3))
    assert torch.equal(sample(G, 2, ["notumor", 0], seed=3), sample(G, 2, [1, 0], seed=3))
    with pytest.raises(ValueError, match=r"unknown class 'meningioma'; this generator's classes are \['glioma', 'notumor'\]"):
        sample(G, 4, "meningioma")
    figure = plot_class_grid(G, n_per_class=2)
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == list(CLASSES)  # not "class 0"
    folder = export_dataset(G, tmp_path / "export", 2, make_zip=False, classes=["notumor"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"notumor": 2} and manifest["seeds"] == {"notumor": 1}
    assert manifest["model"] == "cdcgan" and manifest["checkpoint"] == G.info.source
    assert manifest["trained_on"] == G.info.dataset and manifest["step"] == 2
    assert sorted(p.name for p in (folder / "Training").iterdir()) == ["notumor"]
    with pytest.raises(ValueError, match="n_per_class must be at least 1"):
        export_dataset(G, tmp_path / "none", 0)


def test_bad_sources_fail_with_one_clear_message(trained, tmp_path):
    run_dir, *_ = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no step-.*checkpoint in"):
        load_generator(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="does not exist: pass a run folder"):
        load_generator(tmp_path / "missing" / "run")
    with pytest.raises(HubUnreachableError, match="the Hub is unreachable"):
        load_generator("someone/not-cached-medgan")
    with pytest.raises(CheckpointError, match="not 'dcgan'"):
        load_generator(run_dir, expected_model="dcgan")


def test_cli_sample_export_and_info(trained, tmp_path, capsys):
    run_dir, _, hub, _ = trained
    assert main(["info", str(run_dir)]) == 0
    assert "model:         cdcgan (checkpoint" in capsys.readouterr().out
    assert main(["info", str(hub), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "pretrained"

    grid = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "-n", "4", "--class", "glioma", "--out", str(grid)]) == 0
    written = grid.read_bytes()
    assert main(["sample", str(run_dir), "-n", "4", "--out", str(grid)]) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err and grid.read_bytes() == written
    assert main(["sample", str(run_dir), "--class", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown class 'nope'; this generator's classes are ['glioma', 'notumor']" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "-n", "3", "--separate", "--out", str(tmp_path / "many")]) == 0
    assert len(list((tmp_path / "many").glob("sample_*.png"))) == 3

    out = tmp_path / "synthetic"
    assert main(["export", str(run_dir), "--per-class", "0", "--out", str(out)]) == 2
    assert "--per-class must be at least 1" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(run_dir), "--per-class", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "Training").iterdir()) == list(CLASSES) and out.with_suffix(".zip").is_file()
    assert main(["export", str(run_dir), "--per-class", "3", "--out", str(out)]) == 2
    assert "pass replace=True (--replace" in capsys.readouterr().err
    assert len(list((out / "Training" / "glioma").iterdir())) == 2  # the earlier export is intact
    assert main(["export", str(run_dir), "--per-class", "3", "--out", str(out), "--replace"]) == 0
    assert len(list((out / "Training" / "glioma").iterdir())) == 3
    assert main(["info", str(tmp_path / "empty-nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_checkpoints_of_unknown_models_or_without_generator_weights_fail_clearly(tmp_path, capsys):
    from medgan_core.checkpoint import save_checkpoint
    from medgan_core.registry import build_model

    unknown = save_checkpoint(tmp_path / "vae" / "step-00000001.safetensors", {"G.w": torch.zeros(1)},
                              {"model": "vae", "model_config": {}, "data": {"class_names": []}})
    with pytest.raises(CheckpointError, match="cannot be rebuilt: .*unknown model 'vae'; registered models"):
        load_generator(unknown)
    _, D, config = build_model("dcgan", **TINY_GAN)
    critic_only = save_checkpoint(tmp_path / "d" / "step-00000001.safetensors",
                                  {f"D.{k}": v for k, v in D.state_dict().items()},
                                  {"model": "dcgan", "model_config": vars(config), "data": {"class_names": []}})
    with pytest.raises(CheckpointError, match="weights 'G' do not fit the model"):
        load_generator(critic_only)
    assert main(["info", str(critic_only)]) == 2 and "weights 'G' do not fit" in capsys.readouterr().err


def test_a_run_folders_metrics_show_only_for_the_weights_they_scored(trained, tmp_path):
    import shutil

    from medgan_core.checkpoint import state_dict_sha256

    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    assert load_generator(run_dir).info.metrics == {}
    scored = load_generator(run_dir)
    saved = {"key": {"generator_sha256": state_dict_sha256(scored)},
             "metrics": {"relative_fd [evaluator:cnn]": 3.5, "relative_fd low [evaluator:cnn]": 2.0, "model": "x"}}
    (run_dir / "metrics.json").write_text(json.dumps(saved))
    info = load_generator(run_dir).info
    assert info.metrics == {"relative_fd [evaluator:cnn]": 3.5} and "relative_fd [evaluator:cnn] 3.5" in info.summary()
    assert load_generator(run_dir, use_ema=False).info.metrics == {}, "other weights: the scores are not theirs"
