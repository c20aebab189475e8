"""Volumes -> slices: orientation from the affine, slice selection, masks from label volumes, subject-level splits,
labels CSVs, the cache, and each kind of bad input."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgan_core import volumes
from medgan_core.config import DataConfig
from medgan_core.data import DatasetLayoutError, UnreadableImageWarning, held_out_subjects, load_images
from medgan_core.dedup import leakage_audit
from medgan_core.volumes import VolumeSubject, VolumeWarning, slice_subject
from tests.test_data import tree_fingerprint

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats_volumes"
SHAPE = (20, 24, 16)  # (x, y, z) voxels of the RAS+ test head


def ras_head(marker: tuple[int, int, int] = (14, 18, 11), shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A (x, y, z) RAS+ volume: a graded box "brain" on a zero background and a bright marker cube in its
    right-anterior-superior corner. Returns float32."""
    volume = np.zeros(shape, np.float32)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    volume[2:-2, 2:-2, 2:-2] = (100 + x + y + z)[2:-2, 2:-2, 2:-2]
    i, j, k = marker
    volume[i:i + 3, j:j + 3, k:k + 3] = 1000  # 27 voxels: above the 99.5th percentile of the brain
    return volume


def as_stored(volume: np.ndarray, zooms=(1.0, 1.0, 1.0), storage: str = "ras") -> nib.Nifti1Image:
    """The same physical RAS+ volume stored with another voxel order: "ras", "lps" (x and y flipped),
    "permuted" (array axes (z, x, y)) or "flipped-z" (inferior first in the array, i.e. z reversed)."""
    affine = np.diag([*zooms, 1.0])
    data = volume
    if storage == "lps":
        data = volume[::-1, ::-1, :]
        affine = affine @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, -1, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    elif storage == "permuted":
        data = volume.transpose(2, 0, 1)  # array index (k, i, j) holds RAS voxel (i, j, k)
        affine = affine @ np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    elif storage == "flipped-z":
        data = volume[:, :, ::-1]
        affine = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, SHAPE[2] - 1], [0, 0, 0, 1]])
    return nib.Nifti1Image(np.ascontiguousarray(data), affine)


def write_subject(folder: Path, volume: np.ndarray, label: np.ndarray | None = None, storage: str = "ras",
                  zooms=(1.0, 1.0, 1.0), name: str = "T1.nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(as_stored(volume, zooms, storage), folder / name)
    if label is not None:
        nib.save(as_stored(label.astype(np.float32), zooms, storage), folder / "seg.nii.gz")
    return folder


def config(root: Path, tmp_path: Path, **overrides) -> DataConfig:
    overrides.setdefault("image_size", 16)
    overrides.setdefault("slice_band", (0.0, 1.0))
    return DataConfig(dataset=str(root), cache_dir=str(tmp_path / "cache"), **overrides)


def bright_pixels(images: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.argwhere(np.asarray(images)[..., 0, :, :] >= 250)  # (n, 3): slice, row, column


@pytest.mark.parametrize("storage", ["ras", "lps", "permuted", "flipped-z"])
@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_the_ras_corner_marker_lands_top_left_whatever_the_affine(tmp_path, storage, axis):
    folder = write_subject(tmp_path / "set" / "s1", ras_head(), storage=storage)
    subject = VolumeSubject("s1", "c", None, (folder / "T1.nii.gz",))
    images, _, indices = slice_subject(subject, config(tmp_path / "set", tmp_path, slice_axis=axis))
    hits = bright_pixels(images)
    assert len(hits), "the marker is visible"
    # axial: anterior up, patient right on the left; coronal: superior up, right on the left;
    # sagittal: superior up, anterior on the left. The marker is right-anterior-superior: top left in every view.
    assert hits[:, 1].max() < 8 and hits[:, 2].max() < 8, f"{axis}/{storage}: marker at {hits[:, 1:].mean(0)}"
    first = {"axial": 11, "coronal": 18, "sagittal": 14}[axis]
    assert {indices[i] for i in hits[:, 0]} == {first, first + 1, first + 2}


def test_anisotropic_voxels_keep_their_physical_aspect(tmp_path):
    folder = write_subject(tmp_path / "set" / "s1", ras_head(), zooms=(1.0, 1.0, 3.0))
    subject = VolumeSubject("s1", "c", None, (folder / "T1.nii.gz",))
    images, _, _ = slice_subject(subject, config(tmp_path / "set", tmp_path, slice_axis="coronal",
                                                 slice_band=(0.5, 0.5), image_size=64))
    rows, cols = np.nonzero(images[0, 0] > 0)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1  # brain box: 16 x 1 mm wide, 12 x 3 mm high
    assert height / width == pytest.approx(36 / 16, rel=0.1)


def test_band_every_and_label_slices(tmp_path):
    label = np.zeros(SHAPE)
    label[8:12, 8:12, 6:9] = 2
    label[8:12, 8:12, 10] = 4
    folder = write_subject(tmp_path / "set" / "s1", ras_head(), label)
    subject = VolumeSubject("s1", "c", None, (folder / "T1.nii.gz",), folder / "seg.nii.gz")
    root = tmp_path / "set"
    assert slice_subject(subject, config(root, tmp_path, slice_band=(0.5, 0.5)))[2] == [8]  # brain z 2..13
    assert slice_subject(subject, config(root, tmp_path, slice_every=3))[2] == [2, 5, 8, 11]
    with_label = config(root, tmp_path, slices_with_label=True, masks=True)
    images, masks, indices = slice_subject(subject, with_label)
    assert indices == [6, 7, 8, 10] and masks.shape == (4, 1, 16, 16)
    assert slice_subject(subject, dataclasses.replace(with_label, mask_labels=(4,)))[2] == [10]


def test_masks_from_label_volumes_stay_aligned_with_their_slices(tmp_path):
    head = ras_head((10, 26, 10), shape=(16, 32, 16))  # axial slices 32 x 16: at 32 px every voxel is one pixel,
    label = (head == 1000).astype(np.float32)  # the marker is the lesion; a one-pixel drift fails
    for storage in ("ras", "permuted"):
        folder = write_subject(tmp_path / storage / "s1", head, label, storage=storage)
        subject = VolumeSubject("s1", "c", None, (folder / "T1.nii.gz",), folder / "seg.nii.gz")
        images, masks, _ = slice_subject(subject, config(tmp_path / storage, tmp_path, masks=True, image_size=32))
        assert np.array_equal(images[:, 0] >= 250, masks[:, 0] > 0), storage
        assert (masks > 0).sum() == 27, "3 x 3 x 3 voxels, one pixel each"


def subject_tree(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/<class>-sub<n>/T1.nii.gz`` (+ brainmask), ``counts[class]`` subjects per class."""
    for name, count in counts.items():
        for n in range(count):
            folder = write_subject(root / name / f"{name}-sub{n}", ras_head())
            nib.save(as_stored(np.ones(SHAPE, np.float32)), folder / "brainmask.nii.gz")
    return root


def test_load_images_splits_by_subject_and_ids_survive_the_cache(tmp_path, monkeypatch):
    root = subject_tree(tmp_path / "set", {"ad": 5, "cn": 4})
    before = tree_fingerprint(root)
    train = load_images(config(root, tmp_path))
    test = load_images(config(root, tmp_path, split="test"))
    assert train.class_names == ["ad", "cn"] and len(train.subjects) == len(train)
    assert not set(train.subjects) & set(test.subjects)
    assert set(train.subjects) | set(test.subjects) == {f"{c}-sub{n}" for c, k in (("ad", 5), ("cn", 4))
                                                         for n in range(k)}
    assert all("#axial=" in name for name in train.files)
    audit = leakage_audit(train, test, max_distance=0)  # subject ids come with the slices: no pattern needed
    assert audit.shared_subjects.empty and audit.n_test_subjects == len(set(test.subjects))
    leaky = leakage_audit(train, train.subset(range(0, len(train), 7)), max_distance=0)
    assert len(leaky.shared_subjects) == len(set(train.subjects[::7])) and leaky.test_indices(train) != []
    monkeypatch.setattr(volumes, "slice_subject", lambda *a, **k: pytest.fail("sliced a cached volume again"))
    again = load_images(config(root, tmp_path))
    assert again.subjects == train.subjects and torch.equal(again.images, train.images)
    assert again.subset([0, 3]).subjects == [train.subjects[0], train.subjects[3]]
    assert tree_fingerprint(root) == before


@pytest.mark.parametrize("seed", range(20))
def test_no_subject_is_ever_on_both_sides(seed):
    rng = random.Random(seed)
    by_class = {f"c{c}": [f"s{rng.randrange(40)}" for _ in range(rng.randrange(1, 30))]
                for c in range(rng.randrange(1, 5))}
    fraction = rng.uniform(0.05, 0.6)
    held_out = held_out_subjects(by_class, fraction, seed)
    for ids in by_class.values():
        if len(set(ids)) > 1:
            assert set(ids) & held_out, "every class with two subjects has one in the test split"
    everyone = set().union(*by_class.values())
    assert held_out < everyone or len(everyone) == 1
    more = {**by_class, "extra": ["new-subject", "other-new"]}
    assert held_out <= held_out_subjects(more, fraction, seed) | held_out, "stable when subjects are added"


def test_labels_csv_matches_ids_as_whole_tokens_and_reports_the_rest(tmp_path):
    root = tmp_path / "set"
    for subject in ("sub-1", "sub-10", "sub-2", "sub-3", "sub-4"):
        write_subject(root, ras_head(), name=f"{subject}_T1w.nii.gz")
    csv = tmp_path / "participants.csv"
    csv.write_text("participant_id,group\nsub-1,AD\nsub-10,CN\nsub-2,AD\nsub-3,CN\nsub-99,AD\n")
    settings = config(root, tmp_path, labels_csv=str(csv), csv_columns=("participant_id", "group"))
    with pytest.warns(UserWarning) as caught:
        subjects = volumes.scan_volumes(root, settings)
    messages = " ".join(str(w.message) for w in caught)
    assert "sub-99" in messages and "sub-4_T1w.nii.gz" in messages
    assert {s.subject: s.class_name for s in subjects} == {"sub-1": "AD", "sub-10": "CN", "sub-2": "AD", "sub-3": "CN"}
    with pytest.raises(DatasetLayoutError, match=r"no column\(s\) \['id'\]"):
        volumes.scan_volumes(root, dataclasses.replace(settings, csv_columns=("id", "group")))


def test_ambiguous_modality_fails_with_the_fix_and_a_tuple_stacks_channels(tmp_path):
    folder = write_subject(tmp_path / "set" / "s1", ras_head(), name="flair.nii.gz")
    write_subject(folder, ras_head(), name="t1c.nii.gz")
    write_subject(tmp_path / "set" / "s2", ras_head(), name="flair.nii.gz")
    write_subject(tmp_path / "set" / "s2", ras_head(), name="t1c.nii.gz")
    with pytest.raises(DatasetLayoutError, match=r"modality='<regex>'"):
        load_images(config(tmp_path / "set", tmp_path))
    stacked = load_images(config(tmp_path / "set", tmp_path, modality=("flair", "t1c"), channels=2))
    assert stacked.images.shape[1] == 2
    with pytest.raises(ValueError, match="channels must be 2"):
        load_images(config(tmp_path / "set", tmp_path, modality=("flair", "t1c")))


def test_bad_volumes_are_reported_and_the_rest_loads(tmp_path):
    root = tmp_path / "set"
    subject_tree(root / "Training", {"c": 4})
    write_subject(root / "Testing" / "c" / "test-sub", ras_head())
    train = root / "Training" / "c"
    (train / "c-sub0" / "T1.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    nib.save(as_stored(np.ones((4, 4, 4), np.float32)), train / "c-sub1" / "brainmask.nii.gz")
    nan_head = ras_head()
    nan_head[5, 5, 5] = np.nan
    nib.save(as_stored(nan_head), train / "c-sub2" / "T1.nii.gz")
    four_d = np.stack([ras_head(), np.zeros(SHAPE, np.float32)], axis=-1)
    nib.save(nib.Nifti1Image(four_d, np.eye(4)), train / "c-sub3" / "T1.nii.gz")
    before = tree_fingerprint(root)
    with pytest.warns(UnreadableImageWarning) as caught:
        with pytest.warns(VolumeWarning):
            loaded = load_images(config(root, tmp_path))
    messages = " ".join(str(w.message) for w in caught)
    assert "c-sub0" in messages and "c-sub1" in messages and "must share a grid" in messages
    assert set(loaded.subjects) == {"c-sub2", "c-sub3"}
    assert set(load_images(config(root, tmp_path, split="test")).subjects) == {"test-sub"}
    assert tree_fingerprint(root) == before


def test_4d_volumes_use_the_first_time_point_and_nan_voxels_become_background(tmp_path):
    head = ras_head()
    head[10, 10, 8] = np.nan
    nib.save(nib.Nifti1Image(np.stack([head, -head], axis=-1), np.eye(4)), tmp_path / "v.nii.gz")
    subject = VolumeSubject("v", "c", None, (tmp_path / "v.nii.gz",))
    with pytest.warns(VolumeWarning) as caught:
        images, _, _ = slice_subject(subject, config(tmp_path, tmp_path))
    assert "first time point" in str(caught[0].message) and "1 NaN voxels" in str(caught[1].message)
    assert len(bright_pixels(images)), "the first time point (with the marker) was used"


@pytest.mark.skipif(not BRATS.is_dir(), reason="shared BraTS volumes not present")
def test_brats_subjects_give_flair_slices_with_tumour_masks(tmp_path):
    settings = DataConfig(dataset=str(BRATS), modality="flair", masks=True, image_size=64, slice_every=4,
                          cache_dir=str(tmp_path / "cache"))
    train, test = load_images(settings), load_images(dataclasses.replace(settings, split="test"))
    assert len(set(train.subjects)) == 5 and len(set(test.subjects)) == 1
    assert not set(train.subjects) & set(test.subjects)
    tumour = train.masks.flatten(1).any(1)
    assert 0.2 < tumour.float().mean() < 1.0, "the band holds slices with and without tumour"
    assert train.images.float().mean() > 10 and train.images[:, :, :2, :2].max() == 0, "brain on black"


def test_dicom_series_folders_load_like_nifti_and_mixed_series_are_picked_by_modality(tmp_path):
    from tests.test_dicom import write_series

    # RAS voxel (x, y, z) sits at LPS (-x, -y, z); with the axial cosines columns run to L and rows to P
    as_dicom = np.ascontiguousarray(ras_head()[::-1, ::-1, :].transpose(1, 0, 2)).astype(np.int16)
    root = tmp_path / "set"
    for subject in ("s1", "s2"):
        write_series(as_dicom, root / subject, slice_step=(0.0, 0.0, 1.0), pixel_spacing=(1.0, 1.0),
                     description="T1 axial")
    write_series(np.zeros_like(as_dicom), root / "s1", slice_step=(0.0, 0.0, 1.0), pixel_spacing=(1.0, 1.0),
                 description="FLAIR", prefix="FL")
    with pytest.raises(DatasetLayoutError, match="No slices") as error:
        for split in ("train", "test"):  # s1 is in one of them
            load_images(config(root, tmp_path, split=split))
    assert "description" in str(error.value), "the two series of s1 are named, with the fix"
    loaded = [load_images(config(root, tmp_path, split=split, modality="t1")) for split in ("train", "test")]
    assert {s for part in loaded for s in part.subjects} == {"s1", "s2"}
    for part in loaded:
        hits = bright_pixels(part.images)
        assert len(hits) and hits[:, 1].max() < 8 and hits[:, 2].max() < 8, "marker top left, as for NIfTI"


def test_exported_slices_keep_subject_volume_and_index_and_load_back_by_subject(tmp_path):
    root = tmp_path / "set"
    for n in range(4):
        label = np.zeros(SHAPE)
        label[8:12, 8:12, 5:9] = 1
        write_subject(root / "c" / f"sub{n}", ras_head(), label)
    loaded = load_images(config(root, tmp_path, masks=True))
    out = volumes.export_slices(loaded, tmp_path / "export")
    manifest = (out / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "file,class,subject,volume,axis,slice" and len(manifest) == len(loaded) + 1
    first = manifest[1].split(",")
    assert first[2] == loaded.subjects[0] and first[3] == loaded.files[0].split("#")[0] and first[4] == "axial"
    again = load_images(DataConfig(dataset=str(out), image_size=16, masks=True, subject_pattern="adni",
                                   split="train", test_fraction=0.01, cache_dir=str(tmp_path / "cache2")))
    assert set(again.subjects) <= set(loaded.subjects) and len(again) > 0
    for name, image, mask in zip(again.files, again.images, again.masks):
        subject, index = Path(name).stem.rsplit("_", 1)
        k = next(i for i, f in enumerate(loaded.files) if f.startswith(f"c/{subject}/") and f.endswith(f"={index}"))
        assert torch.equal(image, loaded.images[k]) and torch.equal(mask, loaded.masks[k]), "pixels survive"
    with pytest.raises(FileExistsError):
        volumes.export_slices(loaded, out)


def test_a_volume_datasets_identity_needs_no_modality_and_matches_its_slices(tmp_path):
    from medgan_core.data import identify_dataset

    root = tmp_path / "set"
    for subject in ("s1", "s2"):  # two modalities per subject: loading needs modality=, the identity does not
        write_subject(root / subject, ras_head(), name="flair.nii.gz")
        write_subject(root / subject, ras_head(), name="t1c.nii.gz")
    loaded = load_images(config(root, tmp_path, modality="flair"))
    assert identify_dataset(str(root)) == loaded.dataset


@pytest.mark.parametrize("slope,inter", [(1.0, 0.0), (2.3283064365386963e-10, 0.5), (0.5, -3.0)])
def test_masks_stored_as_scaled_integers_read_as_their_scaled_values_say(tmp_path, slope, inter):
    # BraTS brain masks are int32 with a slope and an intercept; the fast path compares the stored integers
    stored = np.random.default_rng(0).integers(-20, 20, (6, 5, 4)).astype(np.int32)
    image = nib.Nifti1Image(stored, np.diag([-1.0, 1.0, 2.0, 1.0]))  # stored LAS: read back flipped to RAS
    image.header.set_slope_inter(slope, inter)
    nib.save(image, tmp_path / "mask.nii")
    expected = nib.as_closest_canonical(nib.load(tmp_path / "mask.nii")).get_fdata() > 0.5
    mask = np.asarray(volumes.read_volume(tmp_path / "mask.nii", mask_above=0.5).dataobj)
    assert mask.dtype == np.uint8 and np.array_equal(mask > 0, expected) and 0 < expected.sum() < expected.size
