"""Dataset identity: runs, evaluators and Hub folders record what they were trained on, and comparisons refuse
models and evaluators of other data (the demo set shares the tumour set's class names, so names cannot tell)."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from medgan_core.checkpoint import load_checkpoint_meta
from medgan_core.compare import ModelEntry, check_evaluator, entries_for_dataset, find_evaluator, load_entry
from medgan_core.config import DataConfig, TrainConfig
from medgan_core.data import dataset_identity, describe_dataset, identify_dataset, load_images, same_dataset
from medgan_core.evaluator import Classifier, Evaluator, EvaluatorConfig, load_evaluator
from medgan_core.hub import load_config, save_pretrained
from medgan_core.registry import build_model
from medgan_core.sampling import export_dataset
from medgan_core.train import fit
from conftest import TINY_GAN

CLASSES = ("glioma", "notumor")


def write_dataset(root, n_per_class=4, seed=0, size=32):
    """``root/Training/<class>/`` and ``root/Testing/<class>/`` of random grayscale PNGs."""
    rng = np.random.default_rng(seed)
    for split, n in (("Training", n_per_class), ("Testing", 2)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(n):
                pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{index}.png")
    return root


def data_config(root, split="train"):
    return DataConfig(dataset=str(root), image_size=32, split=split, cache_dir=str(root.parent / "cache"))


@pytest.fixture
def two_datasets(tmp_path):
    """A real-like set and another set with the same class names (as the demo set has)."""
    return write_dataset(tmp_path / "tumour"), write_dataset(tmp_path / "demo", n_per_class=5, seed=1)


def test_identity_is_shared_by_every_split_and_a_copy_and_changes_with_the_files(two_datasets, tmp_path):
    tumour, demo = two_datasets
    identity = identify_dataset(str(tumour))
    assert identity["name"] == "tumour" and identity["num_files"] == 12 and identity["class_names"] == list(CLASSES)
    train, test = load_images(data_config(tumour)), load_images(data_config(tumour, "test"))
    assert train.dataset == test.dataset == identity
    rest, held_out = train.stratified_split(0.5)
    assert rest.dataset == held_out.dataset == identity  # subsets stay the same dataset
    copy = shutil.copytree(tumour, tmp_path / "elsewhere" / "tumour")
    assert same_dataset(identify_dataset(str(copy)), identity)  # another machine's copy: new paths and times
    assert not same_dataset(identify_dataset(str(demo)), identity)  # same class names, other files
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(copy / "Training" / "glioma" / "extra.png")
    assert not same_dataset(dataset_identity(copy, list(CLASSES)), identity)
    assert same_dataset({}, identity) is None and describe_dataset({}) == "an unrecorded dataset"
    assert "tumour (12 image files, fingerprint" in describe_dataset(identity)


def test_runs_hub_folders_and_exports_record_their_training_data(two_datasets, tmp_path):
    tumour, _ = two_datasets
    train = load_images(data_config(tumour))
    quick = TrainConfig(max_steps=1, batch_size=4, sample_every=100, checkpoint_every=100, progress=False)
    result = fit("dcgan", train, quick, tmp_path / "run", model_config=TINY_GAN)
    meta = load_checkpoint_meta(result.checkpoint)
    assert meta["data"]["dataset"] == train.dataset
    assert load_entry(tmp_path / "run").dataset == train.dataset
    hub = save_pretrained(result.generator, tmp_path / "hub", model_name="dcgan", dataset=train.dataset)
    config = load_config(hub)
    assert config["dataset"] == train.dataset and config["output_shape"] == [1, 32, 32]
    assert load_entry(hub).dataset == train.dataset
    assert train.dataset["fingerprint"] in (hub / "README.md").read_text()


def test_a_progan_stopped_early_reports_the_size_it_generates(tmp_path):
    G, _, _ = build_model("progan", image_size=64, base_features=16, z_dim=16)
    G.set_growth(2, 1.0)  # a time budget stopped it at 16 px
    hub = save_pretrained(G, tmp_path / "hub", model_name="progan")
    assert load_config(hub)["output_shape"] == [1, 16, 16]
    assert "16x16 grayscale" in (hub / "README.md").read_text()
    export = export_dataset(G, tmp_path / "export", 2, make_zip=False)
    manifest = (export / "manifest.json").read_text()
    assert '"image_size": 16' in manifest


def entry(name, dataset):
    generator = build_model("dcgan", **TINY_GAN)[0]
    return ModelEntry(name, "dcgan", generator, [], "memory", dataset=dataset)


def test_discovered_runs_of_other_data_are_left_out_and_named_ones_refused(two_datasets):
    tumour, demo = map(identify_dataset, map(str, two_datasets))
    entries = [entry("real-run", tumour), entry("demo-run", demo), entry("old-run", {})]
    kept, notes = entries_for_dataset(entries, tumour, explicit=False)
    assert [e.name for e in kept] == ["real-run"]
    assert notes[0].startswith("left out demo-run: trained on demo (14 image files")
    assert "not on tumour (12 image files" in notes[0]
    assert "left out old-run: it records no training-data identity" in notes[1] and "runs=[...]" in notes[1]
    with pytest.raises(ValueError, match=r"demo-run was trained on demo \(14 image files.*this comparison is on tumour"):
        entries_for_dataset(entries, tumour, explicit=True)
    kept, notes = entries_for_dataset([entries[0], entries[2]], tumour, explicit=True)
    assert [e.name for e in kept] == ["real-run", "old-run"] and "old-run records no training-data identity" in notes[0]


def save_evaluator(path, datasets, data_image_size=None):
    """An untrained evaluator file whose metadata says what it was trained/tested on (and at which image size)."""
    classifier = Classifier(EvaluatorConfig(image_size=32, width=4, num_classes=2, channels=1))
    meta = {"datasets": datasets} if datasets is not None else {}
    if data_image_size is not None:
        meta["data_image_size"] = data_image_size
    return Evaluator(classifier, list(CLASSES), meta).save(path)


def test_only_an_evaluator_of_the_compared_dataset_is_found_and_another_is_refused(two_datasets, tmp_path):
    tumour, demo = map(identify_dataset, map(str, two_datasets))
    runs = tmp_path / "runs"
    mine = save_evaluator(runs / "a" / "00_vit_evaluator" / "evaluator.safetensors", {"train": {}, "test": tumour})
    save_evaluator(runs / "b" / "00_vit_evaluator" / "evaluator.safetensors", {"train": demo})  # newer
    assert find_evaluator(runs, tumour) == mine  # though the demo one is newer
    with pytest.warns(UserWarning, match=r"no evaluator of demo .*skipped .*\(test: tumour"):
        assert find_evaluator(runs / "a", demo) is None
    assert check_evaluator(load_evaluator(mine), tumour) is None
    with pytest.raises(ValueError, match=r"trained/tested on other data \(test: tumour.*not on demo"):
        check_evaluator(load_evaluator(mine), demo)
    legacy = save_evaluator(tmp_path / "legacy.safetensors", None)
    assert "records no dataset identity" in check_evaluator(load_evaluator(legacy), tumour)


def test_an_evaluator_trained_at_another_image_size_is_skipped_and_refused(two_datasets, tmp_path):
    tumour = identify_dataset(str(two_datasets[0]))
    runs = tmp_path / "runs"
    at_64 = save_evaluator(runs / "a" / "evaluator.safetensors", {"test": tumour}, data_image_size=64)
    at_128 = save_evaluator(runs / "b" / "evaluator.safetensors", {"test": tumour}, data_image_size=128)  # newer
    assert find_evaluator(runs, tumour, 64) == at_64 and find_evaluator(runs, tumour, 128) == at_128
    with pytest.warns(UserWarning, match=r"trained on 128 px images, these are 32 px"):
        assert find_evaluator(runs / "b", tumour, 32) is None
    with pytest.raises(ValueError, match=r"trained on 128 px images, but these are 64 px.*image_size=64"):
        check_evaluator(load_evaluator(at_128), tumour, 64)
    assert check_evaluator(load_evaluator(at_128), tumour, 128) is None
    unknown = save_evaluator(tmp_path / "unknown.safetensors", {"test": tumour})  # older files: not refused
    assert check_evaluator(load_evaluator(unknown), tumour, 64) is None


def test_the_evaluator_records_its_training_and_test_data(two_datasets):
    from medgan_core.evaluator import EvaluatorTrainConfig, evaluate_classifier, train_evaluator

    tumour, _ = two_datasets
    train, test = load_images(data_config(tumour)), load_images(data_config(tumour, "test"))
    evaluator = train_evaluator(train, EvaluatorConfig(image_size=32, width=4),
                                EvaluatorTrainConfig(epochs=1, batch_size=4, progress=False, val_fraction=0.5))
    assert evaluator.datasets == {"train": train.dataset} and evaluator.data_image_size == train.image_size
    evaluator.record_test(evaluate_classifier(evaluator, test, n_boot=10), test, near_duplicates={"found": 0})
    assert evaluator.datasets == {"train": train.dataset, "test": test.dataset}
    assert evaluator.meta["near_duplicates"] == {"found": 0} and "accuracy" in evaluator.meta["test_report"]
    assert evaluator.serves(train.dataset) is True
