"""Tests for medgan_core.data: decoding awkward files, folder layouts, the tensor cache, batches and Kaggle specs."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from medgan_core import data
from medgan_core.config import DataConfig
from medgan_core.data import (BatchStream, DatasetLayoutError, DatasetUnavailableError, ImageSet,
                              UnreadableImageWarning, decode_image, load_images, resolve_dataset, to_uint8)

YES_NO_HANDLE = "navoneel/brain-mri-images-for-brain-tumor-detection"


def write_class_folders(root: Path, counts: dict[str, int], size: tuple[int, int] = (24, 20)) -> Path:
    """Write gray PNGs ``root/<class>/<class>_<i>.png``, ``counts[class]`` of them, each one distinct.

    Args:
        root: folder to create.
        counts: images per class name.
        size: (width, height) of each image.
    Returns:
        ``root``.
    """
    width, height = size
    ramp = np.tile(np.linspace(0, 150, width), (height, 1))  # (H, W)
    for class_index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            offset = (class_index * 37 + i * 3) % 100
            Image.fromarray((ramp + offset).astype(np.uint8)).save(root / name / f"{name}_{i:03d}.png")
    return root


def small_config(root: Path, cache_dir: Path, **overrides) -> DataConfig:
    """A 16-px DataConfig for a local folder with its own cache."""
    overrides.setdefault("image_size", 16)
    return DataConfig(dataset=str(root), cache_dir=str(cache_dir), **overrides)


def tree_fingerprint(root: Path) -> str:
    """Hash of every path, mode, mtime and file content under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_mode}|{stat.st_mtime_ns}".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def save(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path)
    return path


# ------------------------------------------------------------------------------------------------ decode_image

def test_decode_keeps_aspect_ratio_and_centres_on_black(tmp_path):
    wide = save(np.full((16, 32), 255, np.uint8), tmp_path / "wide.png")  # width 32, height 16
    out = decode_image(wide, 16)
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8
    assert (out[0, 4:12] == 255).all()  # 16x8 content in the middle rows
    assert (out[0, :4] == 0).all() and (out[0, 12:] == 0).all()


def test_sixteen_bit_is_stretched_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 4000, 16), (16, 1)).astype(np.uint16)  # 12-bit range, as MRI exports often are
    path = save(ramp, tmp_path / "ramp16.png")
    assert Image.open(path).mode.startswith("I")
    row = decode_image(path, 16)[0, 8].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) > 0).all()  # clipping at 255 would flatten most of the ramp


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_on_black(tmp_path, mode):
    alpha = np.zeros((16, 16), np.uint8)
    alpha[:, 8:] = 255  # left half fully transparent, right half opaque
    white = Image.new(mode[:-1], (16, 16), 255 if mode == "LA" else (255, 255, 255))
    white.putalpha(Image.fromarray(alpha))
    white.save(tmp_path / "alpha.png")
    out = decode_image(tmp_path / "alpha.png", 16)
    assert (out[0, :, :8] == 0).all() and (out[0, :, 8:] == 255).all()


def test_three_channels_replicate_gray_and_keep_colour(tmp_path):
    gray = save(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1)), tmp_path / "gray.png")
    colour = save(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8), tmp_path / "rgb.png")
    gray3, colour3 = decode_image(gray, 16, channels=3), decode_image(colour, 16, channels=3)
    assert gray3.shape == (3, 16, 16) and (gray3 == gray3[:1]).all()
    assert not (colour3 == colour3[:1]).all()


@pytest.mark.parametrize("image_size", [0, 8, 48, 100, 64.0])
def test_invalid_image_size_lists_valid_sizes(tmp_path, image_size):
    with pytest.raises(ValueError, match="power of two"):
        load_images(small_config(tmp_path, tmp_path / "cache", image_size=image_size))


# ------------------------------------------------------------------------------------------ awkward file sets

def test_messy_folder_converts_readable_files_and_warns_once(messy_dataset, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_images(small_config(messy_dataset.root, tmp_path / "cache"))
    assert [w.category for w in caught] == [UnreadableImageWarning]
    message = str(caught[0].message)
    assert "3 unreadable" in message and all(name in message for name in messy_dataset.unreadable)
    assert set(result.skipped) == messy_dataset.unreadable
    assert set(result.files) == messy_dataset.readable  # hidden and non-image files never reach the decoder
    assert result.images.shape == (len(messy_dataset.readable), 1, 16, 16)
    assert result.images.dtype == torch.uint8 and result.labels.dtype == torch.int64
    assert result.class_counts() == {"odd": len(messy_dataset.readable) - 2, "plain": 2}
    assert all(image.max() > 0 for image in result.images)  # every mode decoded to something visible


def test_messy_folder_in_rgb(messy_dataset, tmp_path):
    with pytest.warns(UnreadableImageWarning):
        result = load_images(small_config(messy_dataset.root, tmp_path / "cache", channels=3))
    assert result.images.shape == (len(messy_dataset.readable), 3, 16, 16)


def test_source_folder_is_never_modified(messy_dataset, tmp_path):
    before = tree_fingerprint(messy_dataset.root)
    for channels in (1, 3, 1):  # the last one reads the cache
        with pytest.warns(UnreadableImageWarning):
            load_images(small_config(messy_dataset.root, tmp_path / "cache", channels=channels))
    assert tree_fingerprint(messy_dataset.root) == before


def test_folder_of_only_unreadable_files_raises(tmp_path):
    (tmp_path / "data" / "broken").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "c.png"):
        (tmp_path / "data" / "broken" / name).write_text("not an image")
    with pytest.raises(DatasetLayoutError, match="None of the 2 image files"):  # the third is held out for test
        load_images(small_config(tmp_path / "data", tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------ layout errors

def _empty_class(root: Path) -> Path:
    write_class_folders(root, {"tumour": 3})
    (root / "healthy").mkdir()
    return root


def _no_images(root: Path) -> Path:
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "readme.txt").write_text("no images here")
    (root / "index.csv").write_text("a,b\n")
    return root


def _images_in_root(root: Path) -> Path:
    root.mkdir()
    for i in range(2):
        save(np.zeros((8, 8), np.uint8), root / f"scan_{i}.png")
    return root


def _file_not_folder(root: Path) -> Path:
    return save(np.zeros((8, 8), np.uint8), root.with_suffix(".png"))


@pytest.mark.parametrize("build, message", [
    (_empty_class, r"\['healthy'\] .* hold no images"),
    (_no_images, r"found no images and sub-folders \['notes'\]"),
    (_images_in_root, r"found 2 image\(s\) directly in it"),
    (lambda root: root, r"does not exist"),
    (_file_not_folder, r"is not a folder"),
])
def test_layout_errors_say_what_was_found_and_expected(tmp_path, build, message):
    root = build(tmp_path / "dataset")
    with pytest.raises(DatasetLayoutError, match=message) as error:
        load_images(small_config(root, tmp_path / "cache"))
    assert "Expected class sub-folders" in str(error.value)


# ------------------------------------------------------------------------------------------------ layouts

def test_split_folders_in_any_case_inside_a_wrapper_folder(tmp_path):
    write_class_folders(tmp_path / "data" / "Wrapper" / "TRAIN", {"a": 4, "b": 3})
    write_class_folders(tmp_path / "data" / "Wrapper" / "Test", {"a": 2, "b": 1})
    train = load_images(small_config(tmp_path / "data", tmp_path / "cache"))
    test = load_images(small_config(tmp_path / "data", tmp_path / "cache", split="test"))
    assert train.class_counts() == {"a": 4, "b": 3} and test.class_counts() == {"a": 2, "b": 1}
    assert Path(train.source).name == "TRAIN" and test.split == "test"


def test_training_folder_only_has_no_test_split(tmp_path):
    write_class_folders(tmp_path / "data" / "Training", {"a": 3})
    with pytest.raises(DatasetLayoutError, match="no test split"):
        load_images(small_config(tmp_path / "data", tmp_path / "cache", split="test"))


def test_labels_agree_across_splits_when_a_split_lacks_a_class(tmp_path):
    write_class_folders(tmp_path / "data" / "train", {"a": 2, "b": 2, "c": 2})
    write_class_folders(tmp_path / "data" / "test", {"a": 1, "c": 1})
    test = load_images(small_config(tmp_path / "data", tmp_path / "cache", split="test"))
    assert test.class_names == ["a", "b", "c"]
    assert test.class_counts() == {"a": 1, "b": 0, "c": 1}


def test_nested_copy_of_the_dataset_is_ignored(tmp_path):
    """Kaggle's yes/no set ships yes/, no/ and brain_tumor_dataset/{yes,no}/ side by side."""
    root = write_class_folders(tmp_path / "data", {"yes": 4, "no": 3})
    write_class_folders(root / "brain_tumor_dataset", {"yes": 4, "no": 3})
    result = load_images(small_config(root, tmp_path / "cache"))
    assert result.class_names == ["no", "yes"]
    assert len(result) == 5  # 4 + 3 images minus one held-out test image per class


# ----------------------------------------------------------------------------------------- split and subsets

def test_stratified_split_is_deterministic_and_disjoint(tmp_path):
    root = write_class_folders(tmp_path / "data", {"big": 30, "small": 6})

    def files(split: str, seed: int = 0, cache: str = "cache") -> set[str]:
        return set(load_images(small_config(root, tmp_path / cache, split=split, seed=seed)).files)

    train, test = files("train"), files("test")
    assert not train & test
    assert len(train | test) == 36
    assert sum(name.startswith("big/") for name in test) == 6  # round(30 * 0.2)
    assert sum(name.startswith("small/") for name in test) == 1  # round(6 * 0.2)
    assert files("test", cache="other-cache") == test
    assert files("test", seed=1) != test


def test_max_per_class_takes_a_deterministic_nested_subset(tmp_path):
    root = write_class_folders(tmp_path / "data", {"big": 30, "small": 6})
    four = load_images(small_config(root, tmp_path / "cache", max_per_class=4))
    two = load_images(small_config(root, tmp_path / "cache", max_per_class=2))
    assert four.class_counts() == {"big": 4, "small": 4}
    assert set(two.files) < set(four.files)
    again = load_images(small_config(root, tmp_path / "other-cache", max_per_class=4))
    assert again.files == four.files and torch.equal(again.images, four.images)


# ------------------------------------------------------------------------------------------------------- cache

def test_cache_is_reused_and_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    root = write_class_folders(tmp_path / "data", {"a": 5, "b": 5})
    config = small_config(root, tmp_path / "cache")
    first = load_images(config)
    cache_file = tmp_path / "cache" / "decoded" / f"{first.cache_key}.safetensors"
    with safe_open(cache_file, framework="pt") as cache:  # a safetensors file, not a pickle
        assert set(cache.keys()) == {"images", "labels"} and "medgan" in cache.metadata()

    calls = []
    original = data.decode_image
    monkeypatch.setattr(data, "decode_image", lambda *args, **kwargs: calls.append(args) or original(*args, **kwargs))
    second = load_images(config)
    assert calls == []
    assert second.cache_key == first.cache_key and torch.equal(second.images, first.images)
    assert second.files == first.files

    changed = root / first.files[0]
    save(np.full((20, 24), 7, np.uint8), changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = load_images(config)
    assert third.cache_key != first.cache_key and calls


def test_unreadable_cache_file_is_decoded_again(tmp_path):
    root = write_class_folders(tmp_path / "data", {"a": 5})
    config = small_config(root, tmp_path / "cache")
    first = load_images(config)
    (tmp_path / "cache" / "decoded" / f"{first.cache_key}.safetensors").write_bytes(b"garbage")
    assert torch.equal(load_images(config).images, first.images)


# ----------------------------------------------------------------------------------------------------- batches

def indexed_set(class_sizes: tuple[int, ...] = (6, 4), size: int = 8) -> ImageSet:
    """Image i is filled with the value i and has a bright marker column on its left edge."""
    n = sum(class_sizes)
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].repeat(1, 1, size, size)  # (N, 1, S, S)
    images[:, :, :, 0] = 255
    labels = torch.repeat_interleave(torch.arange(len(class_sizes)), torch.tensor(class_sizes))
    return ImageSet(images, labels, [f"class{i}" for i in range(len(class_sizes))])


def batch_indices(x: torch.Tensor) -> torch.Tensor:
    """Recover the image index of each sample of an indexed_set batch (from its middle pixel)."""
    return to_uint8(x)[:, 0, 0, x.shape[-1] // 2].long()


def test_epoch_is_a_permutation_with_matching_labels():
    images = indexed_set()
    stream = BatchStream(images, 4, drop_last=False)
    batches = list(stream.epoch(0))
    assert stream.steps_per_epoch() == len(batches) == 3
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (4, 1, 8, 8) and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    indices = torch.cat([batch_indices(x) for x, _ in batches])
    assert sorted(indices.tolist()) == list(range(len(images)))
    assert torch.equal(torch.cat([y for _, y in batches]), images.labels[indices])


def test_order_depends_only_on_seed_and_epoch():
    images = indexed_set((20, 20))

    def order(seed: int, epoch: int) -> list[int]:
        return torch.cat([batch_indices(x) for x, _ in BatchStream(images, 5, seed=seed).epoch(epoch)]).tolist()

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)


@pytest.mark.parametrize("balanced", [False, True])
def test_resuming_mid_epoch_gives_the_tail_of_the_epoch(balanced):
    stream = BatchStream(indexed_set((20, 5)), 4, seed=3, balanced=balanced, hflip=True)
    full = list(stream.epoch(2))
    tail = list(BatchStream(indexed_set((20, 5)), 4, seed=3, balanced=balanced, hflip=True).epoch(2, start_step=3))
    assert len(tail) == len(full) - 3
    for (x_full, y_full), (x_tail, y_tail) in zip(full[3:], tail):
        assert torch.equal(x_full, x_tail) and torch.equal(y_full, y_tail)


def test_skipped_batches_are_not_materialised(monkeypatch):
    stream = BatchStream(indexed_set((20, 20)), 4)
    built = []
    original = stream._batch
    monkeypatch.setattr(stream, "_batch", lambda *args: built.append(1) or original(*args))
    assert len(list(stream.epoch(0, start_step=7))) == 3
    assert len(built) == 3


def test_start_step_outside_the_epoch_raises():
    with pytest.raises(ValueError, match="start_step"):
        BatchStream(indexed_set(), 2).epoch(0, start_step=6)


def test_balanced_sampling_evens_out_an_imbalanced_set():
    images = indexed_set((90, 10))
    draws = 40 * len(images)

    def rare_fraction(balanced: bool) -> float:
        stream = BatchStream(images, 10, balanced=balanced)
        labels = torch.cat([y for epoch in range(40) for _, y in stream.epoch(epoch)])
        assert len(labels) == draws
        return labels.float().mean().item()

    rare = rare_fraction(balanced=True)
    chi_square = draws * ((rare - 0.5) ** 2 / 0.5 + (rare - 0.5) ** 2 / 0.5)
    assert chi_square < 10.83  # 1 degree of freedom, p = 0.001
    assert rare_fraction(balanced=False) == pytest.approx(0.1)


def test_flips_are_per_sample_and_exact():
    images = indexed_set((30, 30))
    stream = BatchStream(images, 60, hflip=True)
    x, _ = next(stream.epoch(0))
    originals = images.images[batch_indices(x)]
    flipped = to_uint8(x)[:, 0, 0, -1] == 255  # the marker column moved to the right edge
    assert 10 < flipped.sum() < 50
    assert torch.equal(to_uint8(x)[flipped], originals[flipped].flip(-1))
    assert torch.equal(to_uint8(x)[~flipped], originals[~flipped])
    unflipped, _ = next(BatchStream(images, 60).epoch(0))
    assert (to_uint8(unflipped)[:, 0, 0, -1] != 255).all()


def test_resolution_downsamples_by_area_and_channels_last():
    images = indexed_set((8, 8), size=16)
    full, _ = next(BatchStream(images, 4).epoch(0))
    low, _ = next(BatchStream(images, 4, resolution=4, channels_last=True).epoch(0))
    assert low.shape == (4, 1, 4, 4)
    assert low.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(low, F.avg_pool2d(full, 4))


def test_batch_size_and_resolution_checks():
    images = indexed_set()  # 10 images
    with pytest.raises(ValueError, match="batch_size <= 10"):
        BatchStream(images, 11)
    assert BatchStream(images, 11, drop_last=False).steps_per_epoch() == 1
    assert BatchStream(images, 3).steps_per_epoch() == 3
    assert BatchStream(images, 3, drop_last=False).steps_per_epoch() == 4
    with pytest.raises(ValueError, match="resolution"):
        BatchStream(images, 2, resolution=16)


def test_to_uint8_inverts_the_batch_scaling():
    values = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(values.float().div(127.5).sub(1)), values)
    assert to_uint8(torch.tensor([-3.0, 3.0, float("nan")])).tolist() == [0, 255, 0]


# ------------------------------------------------------------------------------------------------------ Kaggle

@pytest.fixture
def offline_kaggle(tmp_path, monkeypatch) -> list[str]:
    """kagglehub with its network layer failing as it does offline; returns the handles it was asked for."""
    kagglehub = pytest.importorskip("kagglehub")
    requests = pytest.importorskip("requests")
    requested = []

    def unreachable(handle: str, *args, **kwargs) -> str:
        requested.append(handle)
        raise requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", unreachable)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("KAGGLE_CACHE_MOUNT_FOLDER", str(tmp_path / "kaggle-input"))
    return requested


def fake_kagglehub_version(version: int, complete: bool = True, handle: str = YES_NO_HANDLE) -> Path:
    """A cached download laid out as kagglehub does: versions/<N>/ plus <N>.complete once finished."""
    base = Path(os.environ["KAGGLEHUB_CACHE"]) / "datasets" / handle
    folder = write_class_folders(base / "versions" / str(version) / "brain_tumor_dataset", {"yes": 4, "no": 3}).parent
    if complete:
        (base / f"{version}.complete").touch()
    return folder


def test_offline_kaggle_uses_the_newest_complete_cached_version(offline_kaggle):
    fake_kagglehub_version(1)
    newest = fake_kagglehub_version(2)
    fake_kagglehub_version(3, complete=False)  # an interrupted download
    with pytest.warns(UserWarning, match="unreachable.*version 2"):
        assert resolve_dataset("kaggle:brain-tumor-yes-no") == newest
    assert offline_kaggle == [YES_NO_HANDLE]


def test_offline_kaggle_with_a_version_uses_exactly_that_version(offline_kaggle):
    first = fake_kagglehub_version(1)
    fake_kagglehub_version(2)
    with pytest.warns(UserWarning, match="version 1"):
        assert resolve_dataset(f"kaggle:{YES_NO_HANDLE}/versions/1") == first


def test_offline_kaggle_without_a_cache_says_how_to_get_the_data(offline_kaggle):
    fake_kagglehub_version(1, complete=False)
    with pytest.raises(DatasetUnavailableError, match="(?s)credentials.*download.*folder path"):
        resolve_dataset("kaggle:brain-tumor-yes-no")


def test_offline_kaggle_dataset_loads_from_the_cache(offline_kaggle, tmp_path):
    fake_kagglehub_version(1)
    with pytest.warns(UserWarning, match="cached copy"):
        result = load_images(small_config("kaggle:brain-tumor-yes-no", tmp_path / "cache"))
    assert result.class_names == ["no", "yes"] and len(result) == 5


def test_kaggle_notebook_mount_is_used_without_downloading(offline_kaggle, tmp_path):
    mounted = tmp_path / "kaggle-input" / "brain-mri-images-for-brain-tumor-detection"
    mounted.mkdir(parents=True)
    assert resolve_dataset("kaggle:brain-tumor-yes-no") == mounted
    assert offline_kaggle == []


def test_kaggle_shortcuts_and_handles(tmp_path, monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")
    requested = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: requested.append(handle) or str(tmp_path))
    monkeypatch.setenv("KAGGLE_CACHE_MOUNT_FOLDER", str(tmp_path / "kaggle-input"))
    for spec in ["brain-tumor-mri", "alzheimer-4class", "brain-tumor-yes-no", "owner/set", "owner/set/versions/3"]:
        assert resolve_dataset(f"kaggle:{spec}") == tmp_path
    assert requested == [data.KAGGLE_SHORTCUTS["brain-tumor-mri"], data.KAGGLE_SHORTCUTS["alzheimer-4class"],
                         YES_NO_HANDLE, "owner/set", "owner/set/versions/3"]
    with pytest.raises(ValueError, match="shortcuts"):
        resolve_dataset("kaggle:not a handle")


# -------------------------------------------------------------------------------------------------------- demo

def test_demo_spec_builds_the_seeded_set_in_the_cache_folder(tmp_path, monkeypatch):
    built = []

    def build_demo_dataset(root: Path, *, seed: int = 0) -> Path:
        built.append((root, seed))
        return write_class_folders(root, {"a": 3, "b": 3})

    fake = types.ModuleType("medgan_core.demo_data")
    fake.demo_root = lambda cache_dir, seed=0: Path(cache_dir) / f"demo-{seed}"
    fake.build_demo_dataset = build_demo_dataset
    monkeypatch.setitem(sys.modules, "medgan_core.demo_data", fake)
    result = load_images(DataConfig(dataset="demo", cache_dir=str(tmp_path), seed=2, image_size=16))
    assert built == [(tmp_path / "demo-2", 2)] and result.class_names == ["a", "b"]


def test_demo_spec_builds_and_loads(tmp_path):
    pytest.importorskip("medgan_core.demo_data")
    result = load_images(DataConfig(dataset="demo", cache_dir=str(tmp_path), max_per_class=5))
    assert len(result) > 0 and result.images.shape[1:] == (1, 64, 64)
    assert resolve_dataset("demo", tmp_path) == resolve_dataset("demo", tmp_path)


# ---------------------------------------------------------------------------------------------- real MRI sets

TUMOUR_CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
REAL_SETS = {
    "brain_tumor_mri_small": TUMOUR_CLASSES,
    "brain_tumor_mri_train": TUMOUR_CLASSES,
    "alzheimer_small": ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"],  # stage order
    "brain_tumor_yes_no": ["no", "yes"],
}


@pytest.mark.parametrize("name, split", [(name, split) for name in REAL_SETS for split in ("train", "test")
                                         if (name, split) != ("brain_tumor_mri_train", "test")])
def test_real_sets_load(shared_data_dir, shared_cache_dir, name, split):
    result = load_images(DataConfig(dataset=str(shared_data_dir / name), split=split, max_per_class=5,
                                    cache_dir=str(shared_cache_dir)))
    assert result.class_names == REAL_SETS[name]
    assert result.class_counts() == dict.fromkeys(REAL_SETS[name], 5)
    assert result.images.shape == (5 * len(REAL_SETS[name]), 1, 64, 64) and not result.skipped
    assert all(image.float().std() > 10 for image in result.images)  # real content, not blank


def test_real_training_only_set_has_no_test_split(shared_data_dir, shared_cache_dir):
    with pytest.raises(DatasetLayoutError, match="no test split"):
        load_images(DataConfig(dataset=str(shared_data_dir / "brain_tumor_mri_train"), split="test",
                               cache_dir=str(shared_cache_dir)))


def test_real_mixed_format_set_decodes_every_file(shared_data_dir, shared_cache_dir):
    """brain_tumor_yes_no mixes JPEG and PNG in L, RGB, RGBA and P modes."""
    sizes = [len(load_images(DataConfig(dataset=str(shared_data_dir / "brain_tumor_yes_no"), split=split,
                                        cache_dir=str(shared_cache_dir), channels=3))) for split in ("train", "test")]
    assert sum(sizes) == 253


def test_class_order_sets_the_labels_and_a_known_stage_order_is_the_default(tmp_path):
    from medgan_core.data import identify_dataset, order_classes

    root = tmp_path / "stages"
    for name in ("MildDemented", "ModerateDemented", "NonDemented", "VeryMildDemented"):
        (root / name).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.full((8, 8), index * 40, np.uint8)).save(root / name / f"{index}.png")
    config = DataConfig(dataset=str(root), cache_dir=str(tmp_path / "cache"), image_size=16)
    stages = ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"]
    data = load_images(config)
    assert data.class_names == stages and data.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # not A-Z
    chosen = ["ModerateDemented", "MildDemented", "VeryMildDemented", "NonDemented"]
    reordered = load_images(dataclasses.replace(config, class_order=tuple(chosen)))
    assert reordered.class_names == chosen
    assert torch.equal(reordered.images[reordered.labels == 0], data.images[data.labels == 3])  # same images
    assert reordered.dataset["fingerprint"] == data.dataset["fingerprint"] == identify_dataset(str(root))["fingerprint"]
    assert order_classes(["b", "a"]) == ["a", "b"]
    with pytest.raises(ValueError, match=r"missing \['NonDemented'\], not in the dataset \['Healthy'\]"):
        load_images(dataclasses.replace(config, class_order=("Healthy", "VeryMildDemented", "MildDemented",
                                                             "ModerateDemented")))
