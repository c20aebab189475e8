"""Subject-level splits from file names, and the leakage audit (shared subjects, near-duplicate slices)."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from medgan_core.config import DataConfig
from medgan_core.data import DatasetLayoutError, load_images, subject_of
from medgan_core.dedup import leakage_audit


def write_slices(folder, subjects, slices, rng):
    """``folder/<subject>_<k>.png`` random 16 px slices."""
    folder.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        for k in range(slices):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{subject}_{k}.png")


def subjects(data):
    return {subject_of(name.rsplit("/", 1)[-1].removesuffix(".png"), "adni") for name in data.files}


@pytest.mark.parametrize("seed", range(5))
def test_no_subject_is_on_both_sides_of_a_subject_split(tmp_path, seed):
    rng = np.random.default_rng(seed)
    root = tmp_path / "set"
    for name in ("AD", "CN"):
        ids = [f"{name}{rng.integers(100, 999)}s{k}" for k in range(rng.integers(2, 7))]
        write_slices(root / name, ids, int(rng.integers(1, 5)), rng)
    config = DataConfig(dataset=str(root), image_size=16, subject_pattern="adni", test_fraction=0.3, seed=seed,
                        cache_dir=str(tmp_path / "cache"))
    train, test = load_images(config), load_images(dataclasses.replace(config, split="test"))
    assert not subjects(train) & subjects(test)
    assert len(train) + len(test) == sum(1 for _ in root.rglob("*.png"))
    for label in range(2):  # every class with two or more subjects has one in the test split
        assert (test.labels == label).any() and (train.labels == label).any()


def test_more_slices_of_a_subject_keep_every_subject_on_its_side(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "set"
    write_slices(root / "AD", [f"s{k}" for k in range(6)], 3, rng)
    write_slices(root / "CN", [f"c{k}" for k in range(6)], 3, rng)
    config = DataConfig(dataset=str(root), image_size=16, subject_pattern="adni", cache_dir=str(tmp_path / "cache"))
    before = subjects(load_images(dataclasses.replace(config, split="test")))
    write_slices(root / "AD", ["s0", "s3"], 5, rng)  # more slices of two subjects (files _3, _4 are new)
    assert subjects(load_images(dataclasses.replace(config, split="test"))) == before


def test_file_names_without_a_subject_and_bad_patterns_fail_with_a_message(tmp_path):
    rng = np.random.default_rng(1)
    write_slices(tmp_path / "set" / "AD", ["s1", "s2"], 2, rng)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "set" / "AD" / "scan.png")
    config = DataConfig(dataset=str(tmp_path / "set"), image_size=16, subject_pattern="adni",
                        cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DatasetLayoutError, match=r"1 file\(s\) of class 'AD' have no subject id .*scan.png"):
        load_images(config)
    with pytest.raises(ValueError, match=r"regex with a \(\?P<subject>...\) group"):
        load_images(dataclasses.replace(config, subject_pattern=r"(\d+)"))
    assert subject_of("OAS1_0042_MR1_mpr_n4_anon_111_t88_gfc_tra_90", "oasis") == "OAS1_0042"


def test_the_audit_finds_shared_subjects_and_near_duplicate_slices(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "set"
    write_slices(root / "Training" / "AD", ["s1", "s2", "s3"], 2, rng)
    write_slices(root / "Testing" / "AD", ["s3", "s4"], 2, rng)  # s3 leaks
    copy = np.asarray(Image.open(root / "Training" / "AD" / "s1_0.png"))
    Image.fromarray(copy).save(root / "Testing" / "AD" / "s5_0.png")  # a re-saved slice of s1 under another id
    config = DataConfig(dataset=str(root), image_size=16, cache_dir=str(tmp_path / "cache"))
    train, test = load_images(config), load_images(dataclasses.replace(config, split="test"))
    report = leakage_audit(train, test, subject_pattern="adni")
    assert report.shared_subjects.values.tolist() == [["s3", 2, 2]]
    assert (report.n_train_subjects, report.n_test_subjects) == (3, 3)
    assert report.near_duplicates.pairs["test_file"].tolist() == ["AD/s5_0.png"]
    dropped = [test.files[i] for i in report.test_indices(test)]
    assert len(report.clean(test)) == len(test) - 3
    assert sorted(dropped) == ["AD/s3_0.png", "AD/s3_1.png", "AD/s5_0.png"]
    assert "1 of 3 test subjects also in training" in report.summary()
    assert "no subject ids" in leakage_audit(train, test).summary()
