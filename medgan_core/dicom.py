"""Read one DICOM series (a folder of 2D slices) into a NIfTI volume whose affine places it correctly in space.

Scanner exports hold one file per slice, often several series in one folder, with file names that say nothing
about slice order. This module picks one series, orders its slices by their position in space (file names and
InstanceNumbers are not reliable), refuses missing or duplicated slices, and returns a ``nibabel.Nifti1Image`` that
NIfTI tools read the same way. DICOM patient coordinates are LPS (x to the patient's left, y posterior), NIfTI world
coordinates RAS+ (x right, y anterior): x and y change sign. Files are only opened for reading.
Limits: one 2D grayscale frame per file, with the 'DICM' marker; convert multi-frame or colour data with dcm2niix.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import pydicom

DICOM_PREAMBLE_BYTES = 128  # a DICOM file starts with a 128-byte preamble followed by the 'DICM' marker
DICOM_MARKER = b"DICM"
MISSING_SLICE_GAP_RATIO = 1.5  # a gap this many times the median slice gap means at least one slice is missing
SAME_POSITION_MM = 1e-3  # slices closer than this along the normal sit at the same place
GEOMETRY_TOLERANCE = 1e-4  # DICOM stores cosines and spacings as rounded decimal strings
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
GEOMETRY_LENGTHS = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}  # numbers


class DicomSeriesError(ValueError):
    """A folder of DICOM files cannot be read as one complete volume; the message says why and what to do."""


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str  # SeriesInstanceUID
    description: str  # SeriesDescription ('' when absent)
    modality: str  # Modality, e.g. 'MR'
    files: tuple[Path, ...]  # sorted by name, not by slice position


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: np.ndarray  # (3,) ImagePositionPatient: LPS mm of the centre of the first pixel
    orientation: np.ndarray  # (6,) ImageOrientationPatient: direction along a row, then down a column
    pixel_spacing: np.ndarray  # (2,) PixelSpacing: mm between rows, then between columns
    thickness: float  # SliceThickness in mm; only used to give a one-slice volume a depth
    pixels: np.ndarray  # (rows, cols) float32 with RescaleSlope/RescaleIntercept applied


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file, judged by the 'DICM' marker at byte 128 and not by the extension.

    Args:
        path: any path; DICOM files often have no extension or a meaningless one.
    Returns:
        True for a regular file with the marker; False otherwise (including directories and short files).
    Raises:
        OSError: the file exists but cannot be opened.
    """
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as file:
        head = file.read(DICOM_PREAMBLE_BYTES + len(DICOM_MARKER))  # cheap: never reads a whole file
    return head[DICOM_PREAMBLE_BYTES:] == DICOM_MARKER


def dicom_files(folder: str | Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (no subfolders), sorted by name, hidden files skipped.

    Args:
        folder: the folder to look in.
    Returns:
        Paths of the files that pass :func:`is_dicom_file`.
    Raises:
        FileNotFoundError, NotADirectoryError: ``folder`` is not an existing folder.
    """
    return sorted(p for p in Path(folder).iterdir() if not p.name.startswith(".") and is_dicom_file(p))


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The DICOM series in ``folder``, grouped by SeriesInstanceUID; reads headers only, not pixel data.

    Args:
        folder: a folder of DICOM files.
    Returns:
        One SeriesInfo per series, sorted by description then uid; empty when the folder holds no DICOM file.
    Raises:
        DicomSeriesError: a file cannot be parsed or has no SeriesInstanceUID (the message names it).
    """
    files_by_uid: dict[str, list[Path]] = {}
    description_and_modality: dict[str, tuple[str, str]] = {}
    for path in dicom_files(folder):
        with _reading(path):
            header = pydicom.dcmread(path, stop_before_pixels=True)
            uid = str(header.get("SeriesInstanceUID", ""))
            named = (str(header.get("SeriesDescription", "")), str(header.get("Modality", "")))
        if not uid:
            raise DicomSeriesError(f"{path} has no SeriesInstanceUID (damaged, or not an image slice?); "
                                   "move it out of the folder")
        files_by_uid.setdefault(uid, []).append(path)
        description_and_modality.setdefault(uid, named)
    series = [SeriesInfo(uid, *description_and_modality[uid], tuple(files)) for uid, files in files_by_uid.items()]
    return sorted(series, key=lambda s: (s.description, s.uid))


def read_dicom_series(folder: str | Path, description: str | None = None) -> nibabel.Nifti1Image:
    """Read one DICOM series from ``folder`` as a 3D volume with a RAS+ affine in millimetres.

    Args:
        folder: a folder of DICOM files, one 2D slice per file, in any file order.
        description: a regular expression matched (case-insensitive ``re.search``) against each series'
            SeriesDescription to pick one; needed only when the folder holds more than one series.
    Returns:
        A float32 ``(rows, cols, slices)`` image: axis 0 follows the DICOM row index, axis 1 the column index,
        axis 2 the slice normal (row direction x column direction). Rescale slope and intercept are applied.
    Raises:
        DicomSeriesError: no series, several series and no (or an ambiguous) ``description``, an unreadable file,
            slices of different size, orientation or pixel spacing, or missing or duplicated slices.
    """
    series = _pick_series(list_series(folder), description, folder)
    volume, affine = _assemble([_read_slice(path) for path in series.files], series)
    image = nibabel.Nifti1Image(volume, affine)
    image.set_sform(affine, code="scanner")  # DICOM patient coordinates are the scanner's, not a template's
    image.header.set_xyzt_units("mm")
    return image


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any failure while parsing ``path`` into a DicomSeriesError that names the file."""
    try:
        yield
    except Exception as error:  # pydicom reports damage as InvalidDicomError, struct.error, ValueError, ...
        raise DicomSeriesError(f"cannot read {path} ({type(error).__name__}: {error}); the file is damaged or holds "
                               "something other than an image slice: re-export it or move it out of the folder"
                               ) from error


def _describe(series: list[SeriesInfo]) -> str:
    return "\n".join(f"  {s.uid}  {s.description!r}  ({s.modality}, {len(s.files)} files)" for s in series)


def _pick_series(series: list[SeriesInfo], description: str | None, folder: str | Path) -> SeriesInfo:
    if not series:
        raise DicomSeriesError(f"no DICOM files in {folder} (a DICOM file has 'DICM' at byte 128); "
                               "point at the folder that holds the slices themselves")
    if description is None:
        if len(series) == 1:
            return series[0]
        raise DicomSeriesError(f"{folder} holds {len(series)} DICOM series:\n{_describe(series)}\n"
                               "pass description=<regex matching one SeriesDescription> to pick one")
    matches = [s for s in series if re.search(description, s.description, flags=re.IGNORECASE)]
    if len(matches) == 1:
        return matches[0]
    which = "no series" if not matches else f"{len(matches)} series"
    raise DicomSeriesError(f"{which} in {folder} match description={description!r}; the series there are:\n"
                           f"{_describe(series)}\npass a regex that matches exactly one SeriesDescription")


def _read_slice(path: Path) -> _Slice:
    with _reading(path):
        dataset = pydicom.dcmread(path)
        geometry = {keyword: np.asarray(dataset.get(keyword) or [], dtype=float).ravel()
                    for keyword in GEOMETRY_LENGTHS}
        stored = dataset.pixel_array
        # absent or empty means stored values are the real ones
        slope, intercept = float(dataset.get("RescaleSlope") or 1.0), float(dataset.get("RescaleIntercept") or 0.0)
        thickness = float(dataset.get("SliceThickness") or 1.0)
    for keyword, length in GEOMETRY_LENGTHS.items():
        if geometry[keyword].shape != (length,):
            raise DicomSeriesError(f"{path} has no valid {keyword} (need {length} numbers), so its place in space "
                                   "is unknown; move it out of the folder (a secondary capture or report?)")
    if stored.ndim != 2:
        raise DicomSeriesError(f"{path} holds pixel data of shape {stored.shape}, not one 2D grayscale slice "
                               "(multi-frame or colour DICOM); convert the series with dcm2niix instead")
    return _Slice(path, geometry["ImagePositionPatient"], geometry["ImageOrientationPatient"],
                  geometry["PixelSpacing"], thickness, (stored * slope + intercept).astype(np.float32))


def _check_one_geometry(slices: list[_Slice], series: SeriesInfo) -> None:
    reference = slices[0]
    for other in slices[1:]:
        for what, ours, theirs in (("size (rows, columns)", other.pixels.shape, reference.pixels.shape),
                                   ("ImageOrientationPatient", other.orientation, reference.orientation),
                                   ("PixelSpacing", other.pixel_spacing, reference.pixel_spacing)):
            if not np.allclose(ours, theirs, atol=GEOMETRY_TOLERANCE):
                raise DicomSeriesError(f"series {series.description!r}: {other.path.name} has {what} "
                                       f"{np.round(ours, 4).tolist()} but {reference.path.name} has "
                                       f"{np.round(theirs, 4).tolist()}; one volume needs one geometry, so move "
                                       "the odd files out of the folder")


def _assemble(slices: list[_Slice], series: SeriesInfo) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols, slices) volume and its RAS+ affine from the slices of one series, in any order."""
    _check_one_geometry(slices, series)
    reference = slices[0]
    along_row, down_column = reference.orientation[:3], reference.orientation[3:]
    normal = np.cross(along_row, down_column)
    # sort by distance along the normal: the one order that is right whatever the file names or InstanceNumbers
    by_position = sorted(slices, key=lambda s: float(s.position @ normal))
    distances = np.array([s.position @ normal for s in by_position])  # (n,) mm, increasing
    gaps = np.diff(distances)  # (n - 1,)
    if np.any(gaps < SAME_POSITION_MM):
        index = int(np.argmax(gaps < SAME_POSITION_MM))
        raise DicomSeriesError(f"series {series.description!r}: {by_position[index].path.name} and "
                               f"{by_position[index + 1].path.name} both sit at {distances[index]:.2f} mm along "
                               "the slice normal (several echoes or time points, or a duplicated file); keep one "
                               "volume's files in the folder")
    if len(gaps):
        usual_gap = float(np.median(gaps))
        if np.any(gaps > MISSING_SLICE_GAP_RATIO * usual_gap):
            index = int(np.argmax(gaps))
            raise DicomSeriesError(f"series {series.description!r} ({len(slices)} slices) has a gap of "
                                   f"{gaps[index]:.2f} mm between positions {distances[index]:.2f} and "
                                   f"{distances[index + 1]:.2f} mm along the slice normal, where slices are "
                                   f"{usual_gap:.2f} mm apart: slices are missing; export the complete series")
    volume = np.stack([s.pixels for s in by_position], axis=-1)  # (rows, cols, slices)
    if len(by_position) > 1:  # the mean step between first and last slice; keeps a gantry tilt as a shear
        slice_step = (by_position[-1].position - by_position[0].position) / (len(by_position) - 1)
    else:
        slice_step = normal * reference.thickness
    row_spacing, column_spacing = reference.pixel_spacing
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = down_column * row_spacing  # axis 0 = row index: the next row is further down a column
    affine_lps[:3, 1] = along_row * column_spacing  # axis 1 = column index: the next column is further along a row
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = by_position[0].position
    return volume, LPS_TO_RAS @ affine_lps
