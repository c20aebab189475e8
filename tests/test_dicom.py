"""medgan_core.dicom: DICOM series written here with pydicom come back as the same voxels in the right place."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medgan_core.dicom import DicomSeriesError, dicom_files, is_dicom_file, list_series, read_dicom_series

AXIAL = (1, 0, 0, 0, 1, 0)  # rows run to the patient's left, columns run posterior; normal points superior
SAGITTAL = (0, 1, 0, 0, 0, -1)  # rows run posterior, columns run inferior; normal points to the patient's right
PIXEL_SPACING = (0.8, 1.2)  # (between rows, between columns): unequal, so swapping them moves every voxel
SLICE_GAP = 3.0  # differs from both pixel spacings
SLOPE, INTERCEPT = 2.0, -10.0
MARKER = (2, 5, 3)  # (row, column, slice as written) of a voxel that stands out
MARKER_VALUE = 5000


def write_series(volume: np.ndarray, folder: Path, *, orientation=AXIAL, origin=(-100.0, -120.0, 30.0),
                 slice_step=(0.0, 0.0, SLICE_GAP), pixel_spacing=PIXEL_SPACING, uid: str | None = None,
                 description: str = "T1 axial", prefix: str = "IM", seed: int = 0) -> list[Path]:
    """Write ``volume`` (rows, cols, slices) int16 as one DICOM file per slice; file names are shuffled.

    Slice k sits at ``origin + k * slice_step`` (LPS mm). Returns the files in slice order (as written).
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    name_numbers = np.random.default_rng(seed).permutation(volume.shape[2])  # file order says nothing
    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.Modality = uid, description, "MR"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [round(float(v), 4) for v in np.add(origin, np.multiply(k, slice_step))]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = float(np.linalg.norm(slice_step))
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.Rows, ds.Columns = volume.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k], dtype="<i2").tobytes()
        path = folder / f"{prefix}{name_numbers[k]:04d}"  # no extension, like many scanner exports
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def make_volume(shape=(6, 7, 5)) -> np.ndarray:
    """Distinct values everywhere; rows != columns so a transpose shows."""
    return np.arange(np.prod(shape), dtype=np.int16).reshape(shape)


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# The marker's LPS position is worked out by hand from the write_series arguments, not by the module's formula:
# origin + row * 0.8 * (second cosine) + column * 1.2 * (first cosine) + slice * slice_step.
GEOMETRIES = {
    "axial, slices going superior": dict(
        orientation=AXIAL, origin=(-100.0, -120.0, 30.0), slice_step=(0.0, 0.0, 3.0),
        marker_lps=(-100 + 5 * 1.2, -120 + 2 * 0.8, 30 + 3 * 3.0), slices_reversed=False),
    "axial, slices going inferior": dict(
        orientation=AXIAL, origin=(-100.0, -120.0, 30.0), slice_step=(0.0, 0.0, -3.0),
        marker_lps=(-100 + 5 * 1.2, -120 + 2 * 0.8, 30 - 3 * 3.0), slices_reversed=True),
    "sagittal, slices going left": dict(
        orientation=SAGITTAL, origin=(-40.0, -100.0, 80.0), slice_step=(3.0, 0.0, 0.0),
        marker_lps=(-40 + 3 * 3.0, -100 + 5 * 1.2, 80 - 2 * 0.8), slices_reversed=True),
}


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_round_trip_keeps_values_and_puts_voxels_at_their_patient_position(tmp_path, geometry):
    volume = make_volume()
    volume[MARKER] = MARKER_VALUE
    write_series(volume, tmp_path, orientation=geometry["orientation"], origin=geometry["origin"],
                 slice_step=geometry["slice_step"])
    before = folder_digest(tmp_path)

    image = read_dicom_series(tmp_path)

    data = np.asarray(image.dataobj)
    assert data.dtype == np.float32 and data.shape == volume.shape
    expected = volume.astype(np.float32) * SLOPE + INTERCEPT
    # the reader orders slices along the normal, so a series written against the normal comes back reversed
    np.testing.assert_array_equal(data, expected[:, :, ::-1] if geometry["slices_reversed"] else expected)
    marker_index = np.unravel_index(np.argmax(data), data.shape)
    x, y, z = geometry["marker_lps"]
    np.testing.assert_allclose((image.affine @ [*marker_index, 1])[:3], [-x, -y, z], atol=1e-3)
    np.testing.assert_allclose(image.header.get_zooms(), [0.8, 1.2, 3.0], atol=1e-4)
    assert folder_digest(tmp_path) == before


def test_a_single_slice_gets_its_slice_thickness_along_the_normal(tmp_path):
    write_series(make_volume((6, 7, 1)), tmp_path, slice_step=(0.0, 0.0, 2.5))
    affine = read_dicom_series(tmp_path).affine
    np.testing.assert_allclose(affine[:3, 2], [0.0, 0.0, 2.5])
    np.testing.assert_allclose(affine[:3, 3], [100.0, 120.0, 30.0])


def test_two_series_in_one_folder_need_a_description_to_pick_one(tmp_path):
    t1, flair = make_volume(), make_volume() + 1000
    write_series(t1, tmp_path, description="T1 MPRAGE", prefix="A", seed=1)
    write_series(flair, tmp_path, description="AX FLAIR", prefix="B", seed=2)
    before = folder_digest(tmp_path)

    assert [(s.description, s.modality, len(s.files)) for s in list_series(tmp_path)] == [
        ("AX FLAIR", "MR", 5), ("T1 MPRAGE", "MR", 5)]
    with pytest.raises(DicomSeriesError, match=r"(?s)2 DICOM series.*'AX FLAIR'.*'T1 MPRAGE'.*description="):
        read_dicom_series(tmp_path)
    picked = np.asarray(read_dicom_series(tmp_path, description="flair").dataobj)
    np.testing.assert_array_equal(picked, flair * SLOPE + INTERCEPT)
    with pytest.raises(DicomSeriesError, match=r"(?s)no series .*match description='DWI'.*'AX FLAIR'"):
        read_dicom_series(tmp_path, description="DWI")
    with pytest.raises(DicomSeriesError, match=r"2 series .*match description='a'"):
        read_dicom_series(tmp_path, description="a")
    assert folder_digest(tmp_path) == before


def test_a_missing_slice_is_reported_with_the_gap(tmp_path):
    paths = write_series(make_volume((6, 7, 6)), tmp_path)  # slices at z = 30, 33, ..., 45
    paths[3].unlink()  # z = 39
    before = folder_digest(tmp_path)
    with pytest.raises(DicomSeriesError, match=r"\(5 slices\) has a gap of 6.00 mm between positions 36.00 and 42.00"):
        read_dicom_series(tmp_path)
    assert folder_digest(tmp_path) == before


def test_two_slices_at_one_position_are_refused(tmp_path):
    paths = write_series(make_volume(), tmp_path)
    (tmp_path / "copy").write_bytes(paths[2].read_bytes())
    with pytest.raises(DicomSeriesError, match=r"both sit at 36.00 mm"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("odd", ["shape", "orientation", "pixel spacing"])
def test_slices_of_another_geometry_are_refused(tmp_path, odd):
    uid = generate_uid()
    write_series(make_volume(), tmp_path, uid=uid)  # z = 30 ... 42
    extra = dict(origin=(-100.0, -120.0, 45.0), uid=uid, prefix="X")
    if odd == "shape":
        write_series(make_volume((6, 6, 1)), tmp_path, **extra)
    elif odd == "orientation":
        write_series(make_volume((6, 7, 1)), tmp_path, orientation=(1, 0, 0, 0, 0.9962, 0.0872), **extra)
    else:
        write_series(make_volume((6, 7, 1)), tmp_path, pixel_spacing=(1.0, 1.2), **extra)
    with pytest.raises(DicomSeriesError, match=r"X0000 has .*one volume needs one geometry"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("damage", ["garbage after the marker", "truncated"])
def test_a_damaged_file_is_named(tmp_path, damage):
    paths = write_series(make_volume(), tmp_path)
    broken = paths[1]
    if damage == "garbage after the marker":
        broken.write_bytes(bytes(128) + b"DICM" + bytes(range(256)) * 2)
    else:
        broken.write_bytes(broken.read_bytes()[:-40])  # cut inside the pixel data: the header still parses
    before = folder_digest(tmp_path)
    with pytest.raises(DicomSeriesError, match=broken.name):
        read_dicom_series(tmp_path)
    assert folder_digest(tmp_path) == before


def test_an_empty_folder_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("not a slice")
    with pytest.raises(DicomSeriesError, match="no DICOM files in"):
        read_dicom_series(tmp_path)


def test_is_dicom_file_looks_at_the_marker_not_the_extension(tmp_path):
    dicom = write_series(make_volume((4, 4, 1)), tmp_path / "series")[0]
    assert dicom.suffix == "" and is_dicom_file(dicom)
    png = tmp_path / "slice.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(png)
    assert not is_dicom_file(png)
    short = tmp_path / "short"
    short.write_bytes(b"DICM")
    assert not is_dicom_file(short)
    assert not is_dicom_file(tmp_path)


def test_hidden_files_are_skipped(tmp_path):
    paths = write_series(make_volume(), tmp_path)
    (tmp_path / ".IM_copy").write_bytes(paths[0].read_bytes())  # would otherwise sit at the same position
    assert dicom_files(tmp_path) == sorted(paths)
    assert read_dicom_series(tmp_path).shape == (6, 7, 5)
