"""The offline demo set: layout, determinism, reuse, and lesions that really change the images."""
import json

import numpy as np
import pytest
from PIL import Image

from medgan_core import demo_data
from medgan_core.demo_data import DEMO_CLASSES, build_demo_dataset, render_demo_image

SMALL = dict(n_train_per_class=3, n_test_per_class=1, image_size=64)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "set", seed=3, **SMALL)


def test_layout_counts_and_png_format(small_demo):
    for split, count in (("Training", 3), ("Testing", 1)):
        assert sorted(p.name for p in (small_demo / split).iterdir()) == sorted(DEMO_CLASSES)
        for label in DEMO_CLASSES:
            files = sorted(p for p in (small_demo / split / label).glob("*.png") if not p.stem.endswith("_mask"))
            assert len(files) == count
            assert all(f.with_name(f"{f.stem}_mask.png").is_file() for f in files), "every image has its mask"
            with Image.open(files[0]) as image:
                assert image.mode == "L" and image.size == (64, 64)
    assert "NOT PATIENT DATA" in (small_demo / "README.txt").read_text()


def test_same_seed_same_pixels_other_seed_other_pixels(small_demo, tmp_path):
    again = build_demo_dataset(tmp_path / "again", seed=3, **SMALL)
    other = build_demo_dataset(tmp_path / "other", seed=4, **SMALL)
    for path in (small_demo / "Training" / "glioma").glob("*.png"):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again / path.relative_to(small_demo))))
    first = "Training/notumor/notumor_00000.png"
    assert not np.array_equal(np.asarray(Image.open(small_demo / first)), np.asarray(Image.open(other / first)))


def test_complete_build_is_reused_and_other_parameters_rebuild(small_demo, monkeypatch):
    marker = json.loads((small_demo / ".complete").read_text())
    assert marker["seed"] == 3 and marker["version"] == demo_data.DEMO_VERSION
    monkeypatch.setattr(demo_data, "render_demo_image", lambda *a, **k: pytest.fail("rebuilt a complete set"))
    assert build_demo_dataset(small_demo, seed=3, **SMALL) == small_demo


def test_interrupted_build_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = demo_data.render_demo_image

    def crash_on_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_data, "render_demo_image", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        build_demo_dataset(tmp_path / "set", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("label,view,index", [("glioma", "axial", 100), ("meningioma", "coronal", 120),
                                              ("pituitary", "sagittal", 98), ("pituitary", "axial", 44)])
def test_each_lesion_is_one_compact_mass_where_its_tumour_type_grows(label, view, index):
    image, brain = demo_data._slice(view, index)
    interior, outside, depth = demo_data._geometry(view, index)
    rng = np.random.default_rng(5)
    head, _ = demo_data._add_head(image, brain, interior, outside, rng)
    lesioned, mask = demo_data.LESIONS[label](head, brain, depth, view, rng)
    changed = np.abs(lesioned - head) > 0.15
    assert mask.dtype == bool and (mask & changed).sum() >= 0.5 * mask.sum(), "the mask lies on the lesion"
    if label != "glioma":  # (a glioma's oedema halo changes pixels outside its mask)
        assert (changed & ~mask).sum() <= 0.5 * changed.sum(), "the mask covers the lesion"
    assert 0.002 < changed.mean() < 0.1, f"{label} covers {changed.mean():.2%} of the slice"
    rows, cols = np.nonzero(changed)
    assert np.ptp(rows) < 70 and np.ptp(cols) < 70, "one compact region"
    centre = (rows.mean(), cols.mean())
    if label == "glioma":  # intra-axial, inside one hemisphere
        assert depth[int(centre[0]), int(centre[1])] > 5
        assert abs(centre[1] - image.shape[1] / 2) > 8
    elif label == "meningioma":  # based on the skull: reaches the brain surface
        assert depth[changed].min() < 3
    else:  # at the sella
        sella = demo_data._sella_in_slice(view)
        assert np.hypot(centre[0] - sella[0], centre[1] - sella[1]) < 6


def test_pituitary_images_come_only_from_slices_through_the_sella(monkeypatch):
    seen = []
    real = demo_data._slice.__wrapped__
    monkeypatch.setattr(demo_data, "_slice", lambda view, index: seen.append((view, index)) or real(view, index))
    rng = np.random.default_rng(0)
    for _ in range(6):
        render_demo_image("pituitary", rng, 64)
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}
    for view, index in seen:
        assert abs(index - demo_data.SELLA_VOXEL[axis[view]]) <= demo_data.SELLA_HALF_RANGE


def test_background_outside_the_head_stays_black():
    rng = np.random.default_rng(1)
    for label in DEMO_CLASSES:
        image, _ = render_demo_image(label, rng, 64)
        corners = np.r_[image[:3, :3].ravel(), image[:3, -3:].ravel(), image[-3:, :3].ravel(), image[-3:, -3:].ravel()]
        assert corners.max() <= 3, f"{label}: background noise {corners.max()}"
        assert image[24:40, 24:40].mean() > 40, "the head is still there"


def test_a_build_with_other_parameters_replaces_the_old_one(tmp_path):
    root = build_demo_dataset(tmp_path / "set", seed=3, **SMALL)
    build_demo_dataset(root, seed=3, n_train_per_class=1, n_test_per_class=1, image_size=32)
    assert json.loads((root / ".complete").read_text())["image_size"] == 32
    assert len(list((root / "Training" / "glioma").glob("*.png"))) == 2, "one image and its mask"
    with Image.open(next((root / "Testing" / "notumor").glob("*.png"))) as image:
        assert image.size == (32, 32)
    assert [p.name for p in tmp_path.iterdir()] == ["set"], "no staging or outdated folder left behind"


def test_masks_mark_the_lesion_and_are_empty_without_one():
    rng = np.random.default_rng(2)
    for label in DEMO_CLASSES:
        image, mask = render_demo_image(label, rng, 64)
        assert mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
        if label == "notumor":
            assert mask.max() == 0
        else:
            assert 4 <= (mask > 0).sum() < 0.1 * mask.size, f"{label}: {(mask > 0).sum()} mask pixels"
            assert image[mask > 0].mean() > 0.3 * 255, f"{label}: the mask lies on the bright mass"
