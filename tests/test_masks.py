"""Image+mask pairs: both layouts, alignment through decode, cache and flips, and each kind of bad input."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medgan_core import data
from medgan_core.data import BatchStream, DatasetLayoutError, MissingMaskWarning, decode_mask, load_images
from tests.test_data import small_config, tree_fingerprint

BACKGROUND, LESION = 60, 255


def pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64x48 (W x H) image with one bright 8x8 square on a 4-px grid, and its 0/255 mask.

    At 16 px the scale is exactly 1/4, so the square covers whole output pixels: a mask that drifted by one pixel
    would no longer match the bright pixels.
    """
    rng = np.random.default_rng(seed)
    top, left = 4 * rng.integers(0, 10), 4 * rng.integers(0, 14)
    image = np.full((48, 64), BACKGROUND, np.uint8)
    image[top:top + 8, left:left + 8] = LESION
    mask = np.where(image == LESION, 255, 0).astype(np.uint8)
    return image, mask


def write_pairs(root: Path, counts: dict[str, int], layout: str = "suffix") -> Path:
    """``<class>/<n>.png`` + ``<class>/<n>_mask.png`` ("suffix") or ``images/<class>/<n>.png`` + ``masks/...``."""
    for class_index, (name, count) in enumerate(counts.items()):
        for i in range(count):
            image, mask = pair(class_index * 100 + i)
            if layout == "suffix":
                folder = root / name
                folder.mkdir(parents=True, exist_ok=True)
                image_path, mask_path = folder / f"{name}_{i}.png", folder / f"{name}_{i}_mask.png"
            else:
                (root / "images" / name).mkdir(parents=True, exist_ok=True)
                (root / "masks" / name).mkdir(parents=True, exist_ok=True)
                image_path, mask_path = root / "images" / name / f"{i}.png", root / "masks" / name / f"{i}.png"
            Image.fromarray(image).save(image_path)
            Image.fromarray(mask).save(mask_path)
    return root


def assert_aligned(images: torch.Tensor, masks: torch.Tensor) -> None:
    """Mask pixels are exactly the bright pixels, in every image."""
    bright = images[:, :1].float() > (BACKGROUND + LESION) / 2
    assert torch.equal(bright, masks > 0), "mask and image drifted apart"
    assert bright.flatten(1).any(1).all(), "every image kept its lesion"


@pytest.mark.parametrize("layout", ["suffix", "trees"])
def test_masks_load_aligned_in_both_layouts_and_files_are_untouched(tmp_path, layout):
    root = write_pairs(tmp_path / "set", {"a": 5, "b": 5}, layout)
    before = tree_fingerprint(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complete pairs: nothing to report
        train = load_images(small_config(root, tmp_path / "cache", masks=True, test_fraction=0.2))
    assert train.masks is not None and train.masks.shape == (8, 1, 16, 16)
    assert set(train.masks.unique().tolist()) <= {0, 255}
    assert_aligned(train.images, train.masks)
    assert all("_mask" not in name for name in train.files)
    assert tree_fingerprint(root) == before


def test_without_masks_mask_files_are_never_images(tmp_path):
    root = write_pairs(tmp_path / "set", {"a": 4, "b": 4})
    loaded = load_images(small_config(root, tmp_path / "cache", split="train", test_fraction=0.25))
    assert loaded.masks is None and len(loaded) == 6
    assert all("_mask" not in name for name in loaded.files)


def test_masks_survive_cache_subset_and_flipped_batches(tmp_path, monkeypatch):
    root = write_pairs(tmp_path / "set", {"a": 6, "b": 6})
    config = small_config(root, tmp_path / "cache", masks=True)
    first = load_images(config)
    monkeypatch.setattr(data, "decode_mask", lambda *a, **k: pytest.fail("decoded a cached mask again"))
    again = load_images(config)
    assert torch.equal(first.masks, again.masks) and again.cache_key == first.cache_key
    subset = again.subset([3, 0])
    assert torch.equal(subset.masks, again.masks[[3, 0]])
    stream = BatchStream(again, 4, hflip=True, masks=True, seed=1)
    flipped = 0
    for epoch in range(3):
        for x, _ in stream.epoch(epoch):
            assert x.shape == (4, 2, 16, 16)
            assert_aligned(data.to_uint8(x[:, :1]), data.to_uint8(x[:, 1:]))
            flipped += 1
    assert flipped > 0
    with pytest.raises(ValueError, match="masks=True"):
        BatchStream(load_images(small_config(root, tmp_path / "cache")), 4, masks=True)


def test_an_image_without_a_mask_is_listed_or_skipped_when_asked(tmp_path):
    root = write_pairs(tmp_path / "set", {"a": 4, "b": 4})
    (root / "a" / "a_2_mask.png").unlink()
    config = small_config(root, tmp_path / "cache", masks=True, split="train", test_fraction=0.25)
    with pytest.raises(DatasetLayoutError, match=r"no mask.*a_2\.png.*missing_masks='skip'"):
        load_images(config)
    with pytest.warns(MissingMaskWarning, match="Left out 1 image"):
        loaded = load_images(small_config(root, tmp_path / "cache", masks=True, missing_masks="skip",
                                          split="train", test_fraction=0.25))
    assert "a/a_2.png" not in loaded.files and len(loaded) == 5
    assert (root / "a" / "a_2.png").is_file(), "nothing deleted"


def test_a_mask_without_its_image_is_reported(tmp_path):
    root = write_pairs(tmp_path / "set", {"a": 3, "b": 3})
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "b" / "stray_mask.png")
    with pytest.warns(MissingMaskWarning, match=r"1 mask file\(s\) have no image.*stray_mask\.png"):
        load_images(small_config(root, tmp_path / "cache", masks=True, test_fraction=0.34))


def test_a_mask_of_another_size_is_resized_to_its_image_with_a_warning(tmp_path):
    root = write_pairs(tmp_path / "set", {"a": 3, "b": 3})
    image, mask = pair(0)  # a_0
    Image.fromarray(mask).resize((128, 96), Image.Resampling.NEAREST).save(root / "a" / "a_0_mask.png")
    with pytest.warns(MissingMaskWarning, match=r"a_0\.png: mask 128x96 resized to its image's 64x48"):
        for split in ("train", "test"):  # a_0 is in one of them
            loaded = load_images(small_config(root, tmp_path / "cache", masks=True, split=split, test_fraction=0.34))
            assert_aligned(loaded.images, loaded.masks)


def test_empty_masks_are_kept_and_binarisation_reads_0_1_masks(tmp_path):
    empty = tmp_path / "empty_mask.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(empty)
    assert decode_mask(empty, 16)[0].max() == 0
    _, mask = pair(3)
    ones = tmp_path / "ones_mask.png"
    Image.fromarray((mask > 0).astype(np.uint8)).save(ones)  # 0/1 values, as many datasets store them
    assert np.array_equal(decode_mask(ones, 16)[0], decode_mask(_save(tmp_path / "m.png", mask), 16)[0])
    assert decode_mask(ones, 16)[0].max() == 255


def test_a_corrupt_mask_skips_its_pair_with_the_reason(tmp_path):
    root = write_pairs(tmp_path / "set", {"a": 3, "b": 3})
    (root / "b" / "b_1_mask.png").write_bytes(b"not a png")
    with pytest.warns(data.UnreadableImageWarning, match=r"b_1\.png \(its mask b_1_mask\.png"):
        loaded = load_images(small_config(root, tmp_path / "cache", masks=True, test_fraction=0.34))
    assert "b/b_1.png" not in loaded.files and loaded.masks.shape[0] == len(loaded)


def test_the_demo_set_has_lesion_masks(tmp_path):
    loaded = load_images(data.DataConfig(dataset="demo", image_size=32, masks=True, split="test", max_per_class=3))
    by_class = {name: loaded.masks[loaded.labels == k] for k, name in enumerate(loaded.class_names)}
    assert by_class["notumor"].max() == 0
    assert all(by_class[name].flatten(1).any(1).all() for name in ("glioma", "meningioma", "pituitary"))


def _save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path
