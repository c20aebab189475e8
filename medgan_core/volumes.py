"""MRI volumes (NIfTI, MGH, DICOM series) -> 2D slices, split by subject, cached like decoded PNGs.

:func:`medgan_core.data.load_images` comes here when a dataset folder holds volumes instead of 2D images. Layouts
(split folders ``Training``/``Testing`` and class folders optional, as for 2D sets):

- ``<root>[/<split>][/<class>]/<subject>/<modalities>.nii.gz`` with optional label and brain-mask volumes beside them
  (BraTS: ``Flair_*.nii.gz``, ``T1c_*.nii.gz``, ``OTMultiClass.nii.gz``, ``brainmask.nii.gz``);
- ``<root>[/<split>][/<class>]/<subject>.nii.gz``: one volume per subject;
- a DICOM series folder in place of a subject folder;
- no class folders and a labels CSV (one row per subject: an id column and a class column) instead.

Every volume is reoriented to RAS+ (nibabel's closest canonical), so slices of any acquisition look the same way up:
rows run anterior->posterior (axial) or superior->inferior (coronal, sagittal), columns patient right->left (the
radiological convention) or anterior->posterior (sagittal). Pixels keep their physical aspect ratio. Intensities are
normalised per volume inside the brain; the background stays black (0).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from .config import DataConfig
from .data import (MASK_SUFFIX, SPLIT_FOLDER_NAMES, VOLUME_FILE_SUFFIXES, DatasetLayoutError, ImageSet,
                   MissingMaskWarning, _fit_square, dataset_identity, held_out_subjects,
                   order_classes, read_tensor_cache, warn_skipped, write_tensor_cache)
from .fileio import staged_folder
from .sampling import picture_array

logger = logging.getLogger(__name__)

VOLUME_TRANSFORM_VERSION = 1  # bump whenever slicing or normalisation changes, so stale caches are not reused
VOLUME_SUFFIXES = tuple(s for s in VOLUME_FILE_SUFFIXES if s != ".dcm")  # what nibabel reads
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # axis of the RAS+ array that each view cuts across
INTENSITY_MODES = ("percentile", "zscore")
LABEL_NAME = re.compile(r"seg|label|OTMultiClass|truth|_mask\b|_mask\.", re.IGNORECASE)  # label volumes
BRAIN_MASK_NAME = re.compile(r"brain_?mask", re.IGNORECASE)


class VolumeWarning(UserWarning):
    """A volume needed a repair that changes what is read (a time point picked, NaNs set to background)."""


@dataclass(frozen=True)
class VolumeSubject:
    """One subject's files: the image volume(s) (one per channel), and optionally a label and a brain mask."""

    subject: str
    class_name: str
    split: str | None  # "train"/"test" from split folders; None: carved by subject
    images: tuple[Path, ...]  # a volume file or a DICOM folder per channel
    label: Path | None = None
    brain_mask: Path | None = None


def is_volume_name(name: str) -> bool:
    """True for file names nibabel reads as volumes (``.nii``, ``.nii.gz``, ``.mgz``, ``.mgh``)."""
    return name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(name: str) -> str:
    """The file name without its volume suffix (``sub-01.nii.gz`` -> ``sub-01``)."""
    lower = name.lower()
    return next((name[:-len(suffix)] for suffix in VOLUME_SUFFIXES if lower.endswith(suffix)), name)


def holds_volumes(root: str | os.PathLike) -> bool:
    """True when a dataset folder holds volume files or DICOM series (and should be sliced, not decoded as 2D)."""
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        if any(is_volume_name(n) or _is_dicom_slice(Path(folder, n)) for n in names if not n.startswith(".")):
            return True
    return False


def _is_dicom_slice(path: Path) -> bool:
    """A ``.dcm`` file, or an extensionless file with the DICOM magic (as many scanner exports name them)."""
    from .dicom import is_dicom_file

    return path.name.lower().endswith(".dcm") or "." not in path.name and is_dicom_file(path)


# ------------------------------------------------------------------------------------------------------ scanning

def scan_volumes(root: str | os.PathLike, config: DataConfig, pick_images: bool = True) -> list[VolumeSubject]:
    """Find every subject of a volume dataset, with its class and split.

    Args:
        root: the dataset folder.
        config: ``modality``, ``labels_csv`` and ``csv_columns`` are used here.
        pick_images: pick each subject's image volumes by ``modality``; False when only the subjects and their
            classes are wanted (a dataset's identity does not depend on the modality).
    Returns:
        Subjects sorted by (split, class, id).
    Raises:
        DatasetLayoutError: for a subject folder whose modality is ambiguous or missing, a subject id used twice,
            classes from folders for some subjects only, or a labels CSV without the named columns.
    """
    root = Path(root)
    bases = [(split, d) for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
             for split, names in SPLIT_FOLDER_NAMES.items() if d.name.lower() in names] or [(None, root)]
    leaves = []  # (split, base, folder, file names)
    for split, base in bases:
        for folder, subdirs, names in os.walk(base):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            leaves.append((split, base, Path(folder), sorted(n for n in names if not n.startswith("."))))
    # a volume name found in several folders names a modality (T1.nii.gz, flair.nii.gz): those folders are subjects
    seen_in = Counter(name.lower() for *_, names in leaves for name in set(names) if is_volume_name(name))
    repeated = {name for name, count in seen_in.items() if count > 1}
    found: list[tuple[str | None, Path, Path, tuple[Path, ...], Path | None, Path | None]] = []
    for split, base, folder, names in leaves:
        found += [(split, base, *item) for item in _subjects_in(folder, names, config, repeated, pick_images)]
    if not found:
        raise DatasetLayoutError(f"No volumes ({', '.join(VOLUME_SUFFIXES)}) or DICOM series under {root}.")
    rows = _read_labels_csv(config) if config.labels_csv else None
    subjects, seen = [], {}
    for split, base, where, images, label, brain in found:
        subject = volume_stem(where.name) if where.is_file() else where.name
        parts = where.relative_to(base).parts
        class_name = parts[0] if len(parts) >= 2 else None
        if rows is not None:
            subject, class_name = _match_row(where.relative_to(root).as_posix(), rows)
            if subject is None:
                continue  # reported by _report_unmatched
        if subject in seen:
            raise DatasetLayoutError(f"Subject id {subject!r} names two subjects: {seen[subject]} and {where}; "
                                     f"rename one (subject ids decide the split, so they must be unique)")
        seen[subject] = where
        subjects.append(VolumeSubject(subject, class_name, split, images, label, brain))
    if rows is not None:
        _report_unmatched(rows, set(seen), [where.relative_to(root).as_posix() for _, _, where, *_ in found], config)
    with_class = {s.class_name is not None for s in subjects}
    if with_class == {True, False}:
        raise DatasetLayoutError(f"Some subjects of {root} are in class folders and some are not (e.g. "
                                 f"{next(s.subject for s in subjects if s.class_name is None)}): put every subject "
                                 f"in a class folder, or none (one class), or pass labels_csv")
    if with_class == {False}:
        subjects = [dataclasses.replace(s, class_name=root.name) for s in subjects]
    if not subjects:
        raise DatasetLayoutError(f"No subject of {root} matched a row of {config.labels_csv}.")
    return sorted(subjects, key=lambda s: (s.split or "", s.class_name, s.subject))


def _subjects_in(folder: Path, names: list[str], config: DataConfig, modality_names: set[str],
                 pick_images: bool) -> list[tuple[Path, tuple[Path, ...], Path | None, Path | None]]:
    """(subject path, image volumes, label, brain mask) of the subjects directly in one folder (no image volumes
    picked from a subject folder when ``pick_images`` is False).

    The folder is one subject when it holds a label or brain-mask volume, when ``modality`` is set, or when one of
    its volume names (lower case) is in ``modality_names``; otherwise each volume file is a subject.
    """
    volumes = [n for n in names if is_volume_name(n)]
    if not volumes:
        return [(folder, (folder,), None, None)] if any(_is_dicom_slice(folder / n) for n in names) else []
    brain = [n for n in volumes if BRAIN_MASK_NAME.search(n)]
    labels = [n for n in volumes if LABEL_NAME.search(n) and n not in brain]
    candidates = [n for n in volumes if n not in brain and n not in labels]
    if not (brain or labels or config.modality or {n.lower() for n in volumes} & modality_names):  # a file each
        return [(folder / n, (folder / n,), None, None) for n in volumes]
    for role, files in (("label", labels), ("brain-mask", brain)):
        if len(files) > 1:
            raise DatasetLayoutError(f"Subject folder {folder} has {len(files)} {role} volumes {files}; keep one")
    images = tuple(folder / _pick_modality(folder, candidates, pattern)
                   for pattern in _modality_patterns(config)) if pick_images else ()
    return [(folder, images, folder / labels[0] if labels else None, folder / brain[0] if brain else None)]


def _modality_patterns(config: DataConfig) -> tuple[str | None, ...]:
    modality = config.modality
    return tuple(modality) if isinstance(modality, (list, tuple)) else (modality,)


def _pick_modality(folder: Path, candidates: list[str], pattern: str | None) -> str:
    """The one candidate volume matching ``pattern`` (case-insensitive regex; None: the only candidate)."""
    matches = candidates if pattern is None else [n for n in candidates if re.search(pattern, n, re.IGNORECASE)]
    if len(matches) == 1:
        return matches[0]
    if pattern is None:
        raise DatasetLayoutError(f"Subject folder {folder} holds {len(candidates)} image volumes {candidates}: choose "
                                 f"one with modality='<regex>' (e.g. modality='flair'), or stack several as channels "
                                 f"with modality=('flair', 't1c') and channels=2")
    raise DatasetLayoutError(f"modality={pattern!r} matches {len(matches)} of the volumes {candidates} in {folder}; "
                             f"it must match exactly one (make the regex more specific)")


def _read_labels_csv(config: DataConfig) -> dict[str, str]:
    """Subject id -> class from the labels CSV."""
    path = Path(config.labels_csv).expanduser()
    id_column, class_column = config.csv_columns
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (id_column, class_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetLayoutError(f"{path} has no column(s) {missing} (columns: {reader.fieldnames}); set "
                                     f"csv_columns=('<id column>', '<class column>')")
        rows = {}
        for row in reader:
            subject, label = row[id_column].strip(), row[class_column].strip()
            if subject in rows and rows[subject] != label:
                raise DatasetLayoutError(f"{path}: subject {subject!r} has two classes ({rows[subject]!r}, {label!r})")
            if subject and label:
                rows[subject] = label
    return rows


def _token_pattern(subject: str) -> re.Pattern:
    """The id as a whole token of a path: ``sub-1`` matches ``sub-1_T1.nii.gz`` but never ``sub-10_T1.nii.gz``."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(subject)}(?![A-Za-z0-9])")


def _match_row(path: str, rows: dict[str, str]) -> tuple[str | None, str | None]:
    """(subject id, class) of the one CSV row whose id is a whole token of ``path``; (None, None) for no row.

    Raises:
        DatasetLayoutError: when the ids of several rows match the path.
    """
    hits = [subject for subject in rows if _token_pattern(subject).search(path)]
    if len(hits) > 1:
        raise DatasetLayoutError(f"{path} matches the ids of several rows of the labels CSV: {hits}")
    return (hits[0], rows[hits[0]]) if hits else (None, None)


def _report_unmatched(rows: dict[str, str], matched: set[str], paths: list[str], config: DataConfig) -> None:
    """Warn about CSV rows without files and files without a row: both are listed, never dropped silently."""
    without_files = sorted(set(rows) - matched)
    if without_files:
        warnings.warn(f"{len(without_files)} subject(s) of {config.labels_csv} have no volume: {without_files[:10]}",
                      MissingMaskWarning, stacklevel=4)
    without_row = [p for p in paths if not any(_token_pattern(s).search(p) for s in rows)]
    if without_row:
        warnings.warn(f"{len(without_row)} volume(s) match no row of {config.labels_csv} and are left out: "
                      f"{without_row[:10]}", MissingMaskWarning, stacklevel=4)


# ------------------------------------------------------------------------------------------------------- reading

def read_volume(path: str | os.PathLike, description: str | None = None, mask_above: float | None = None):
    """A volume reoriented to RAS+ (nibabel's closest canonical orientation), its voxels read once as float32.

    Args:
        path: a NIfTI/MGH file, or a folder of one DICOM series.
        description: for a DICOM folder with several series, a regex on the SeriesDescription.
        mask_above: read a mask instead: 1 where the (scaled) voxel is above this value, else 0 (uint8).
    Returns:
        A 3D ``nibabel`` image holding a float32 array (scaling applied), or the uint8 mask; of a 4D volume the
        first time point, with a :class:`VolumeWarning`.
    Raises:
        Exception: whatever nibabel or the DICOM reader raise for an unreadable input.
    """
    import nibabel as nib

    path = Path(path)
    if path.is_dir():
        from .dicom import read_dicom_series

        image = read_dicom_series(path, description)
    else:
        image = nib.load(path)
    if len(image.shape) == 4:
        warnings.warn(f"{path.name} is 4D {image.shape}: using its first time point (volume 0)", VolumeWarning,
                      stacklevel=2)
        image = image.slicer[..., 0]
    elif len(image.shape) != 3:
        raise ValueError(f"{path.name} has shape {image.shape}; a 3D (or 4D) volume is needed")
    # nibabel's as_closest_canonical would first read scaled voxels as float64 (twice the bytes, a third of a
    # BraTS subject's read time); the same flips and transposes on a float32 read are exact and cost nothing
    orientation = nib.orientations.io_orientation(image.affine)
    voxels = _float_voxels(image.dataobj) if mask_above is None else _mask_voxels(image.dataobj, mask_above)
    voxels = nib.orientations.apply_orientation(voxels, orientation)
    affine = image.affine @ nib.orientations.inv_ornt_aff(orientation, image.shape)
    return nib.Nifti1Image(voxels, affine)


def _float_voxels(data) -> np.ndarray:
    """The scaled voxels of a nibabel array proxy (or array) as float32."""
    return np.asarray(data, dtype=np.float32)


def _mask_voxels(data, above: float) -> np.ndarray:
    """uint8 0/1 voxels, 1 where the scaled value exceeds ``above``. Integer masks stored with a scaling (BraTS
    brain masks: int32 with slope and intercept) are compared in their stored integers, with the threshold mapped
    back through the scaling: no float copy of the volume (a third of a BraTS subject's read time)."""
    slope, inter = float(getattr(data, "slope", 1.0)), float(getattr(data, "inter", 0.0))
    if hasattr(data, "get_unscaled") and np.isfinite(slope) and slope > 0 and np.isfinite(inter):
        return (np.asarray(data.get_unscaled()) > (above - inter) / slope).astype(np.uint8)
    return (_float_voxels(data) > above).astype(np.uint8)


def _brain_mask(volume: np.ndarray) -> np.ndarray:
    """Estimated head/brain region when no brain mask ships: voxels away from the background (the corner median)."""
    corners = np.concatenate([volume[i, j, k].ravel() for i in (0, -1) for j in (0, -1) for k in (0, -1)])
    background = np.median(corners)
    spread = np.percentile(np.abs(volume - background), 99.5)
    mask = np.abs(volume - background) > 0.05 * spread if spread > 0 else np.zeros(volume.shape, bool)
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))


def _intensity_window(volume: np.ndarray, brain: np.ndarray, mode: str) -> tuple[float, float]:
    """The intensities shown as black and white, from statistics inside the brain: its 0.5th and 99.5th
    percentiles ("percentile") or its mean -+ 3 standard deviations ("zscore"), estimated on every 2nd voxel along
    each axis (an eighth of the work; the statistics of a brain's million voxels do not move)."""
    inside = volume[::2, ::2, ::2][brain[::2, ::2, ::2]]
    if inside.size == 0:
        return 0.0, 1.0
    if mode == "percentile":
        low, high = np.percentile(inside, [0.5, 99.5])
    else:
        mean, spread = float(inside.mean()), 3 * float(inside.std())
        low, high = mean - spread, mean + spread
    return float(low), float(high) if high > low else float(low) + 1.0


def view_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice of a RAS+ array in viewing orientation: rows top->bottom, columns left->right.

    The two remaining RAS+ axes run (R or A, then A or S); transposing and flipping both puts superior/anterior
    at the top and the patient's right (or anterior, sagittal) at the left.
    """
    cut = volume[(slice(None),) * axis + (index,)]  # a view (np.take would copy the whole volume)
    return cut.T[::-1, ::-1]


@dataclass
class SubjectVolumes:
    """One subject read for slicing: RAS+ arrays (x, y, z) on one grid."""

    channels: list[np.ndarray]  # float32 as stored (one per modality)
    windows: list[tuple[float, float]]  # per channel: the values shown as 0 and 1 (see DataConfig.intensity)
    brain: np.ndarray  # bool: the brain mask file, or the estimated head region
    label: np.ndarray | None  # bool: voxels of the chosen label values (None: no label volume, or not read)
    zooms: tuple[float, float, float]  # mm per voxel along x, y, z

    def picture(self, channel: int, axis: int, index: int) -> np.ndarray:
        """One normalised slice in viewing orientation (see :func:`view_slice`): [0, 1], 0 outside the brain.

        Only this slice is scaled: the whole volume never is (most of it is not sliced).
        """
        low, high = self.windows[channel]
        scaled = (view_slice(self.channels[channel], axis, index) - low) / (high - low)
        return np.where(view_slice(self.brain, axis, index), np.clip(scaled, 0, 1), 0).astype(np.float32)


def read_subject(subject: VolumeSubject, config: DataConfig, with_label: bool = True) -> SubjectVolumes:
    """Read and reorient one subject's volumes, with the intensity window of each.

    Args:
        subject: its files.
        config: ``modality``, ``intensity`` and ``mask_labels`` are used.
        with_label: also read the label volume (when there is one).
    Returns:
        The :class:`SubjectVolumes`.
    Raises:
        ValueError: for volumes of different shapes (label or brain mask vs image, or two modalities).
    """
    volumes = [read_volume(path, pattern) for path, pattern in zip(subject.images, _modality_patterns(config))]
    shape = volumes[0].shape
    arrays = []
    for path, volume in zip(subject.images, volumes):
        if volume.shape != shape:
            raise ValueError(f"{path.name} has shape {volume.shape} but {subject.images[0].name} {shape}: the "
                             f"modalities of one subject must share a grid (resample them first)")
        array = np.asarray(volume.dataobj, dtype=np.float32)
        if np.isnan(array).any():
            warnings.warn(f"{path.name}: {int(np.isnan(array).sum())} NaN voxels read as background", VolumeWarning,
                          stacklevel=2)
            array = np.where(np.isnan(array), np.nanmin(array) if np.isfinite(array).any() else 0, array)
        arrays.append(array)
    extra = {}
    for role, path, mask_above in (("label", subject.label if with_label else None, None),
                                   ("brain mask", subject.brain_mask, 0.5)):
        if path is not None:
            volume = read_volume(path, mask_above=mask_above)
            if volume.shape != shape:
                raise ValueError(f"The {role} {path.name} has shape {volume.shape} but its image "
                                 f"{subject.images[0].name} has {shape}; they must share a grid")
            extra[role] = np.asarray(volume.dataobj)  # label: float32 (NaN: outside the mask below); brain: 0/1
    brain = extra["brain mask"] > 0 if "brain mask" in extra else _brain_mask(arrays[0])
    label = None
    if "label" in extra:
        label = np.isin(np.rint(extra["label"]), config.mask_labels) if config.mask_labels else extra["label"] > 0
    return SubjectVolumes(arrays, [_intensity_window(array, brain, config.intensity) for array in arrays], brain,
                          label, tuple(float(z) for z in volumes[0].header.get_zooms()[:3]))


def pixel_aspect(zooms: tuple[float, float, float], axis: int) -> float:
    """Width over height of a pixel of :func:`view_slice` along ``axis`` (columns run along the first remaining
    RAS axis after its transpose)."""
    first, second = (zooms[a] for a in range(3) if a != axis)
    return first / second


def slice_subject(subject: VolumeSubject, config: DataConfig) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Slice one subject's volumes as the config says.

    Args:
        subject: its files.
        config: ``slice_axis``, ``slice_band``, ``slice_every``, ``slices_with_label``, ``intensity``, ``image_size``,
            ``channels``, ``masks`` and ``mask_labels`` are used.
    Returns:
        ``(images (n, C, S, S) uint8, masks (n, 1, S, S) uint8 0/255 or None, slice indices along the axis)``.
    Raises:
        ValueError: for volumes of different shapes (label or brain mask vs image, or two modalities).
    """
    volumes = read_subject(subject, config, with_label=config.masks or config.slices_with_label)
    axis = SLICE_AXES[config.slice_axis]
    indices = chosen_slices(volumes.brain, volumes.label, axis, config)
    aspect = pixel_aspect(volumes.zooms, axis)
    size = config.image_size
    channels = range(len(volumes.channels))
    images = np.stack([np.stack([_square(volumes.picture(c, axis, k), size, aspect) for c in channels])
                       for k in indices]) if indices else np.zeros((0, len(channels), size, size), np.uint8)
    if config.channels == 3 and images.shape[1] == 1:
        images = images.repeat(3, axis=1)  # gray replicated, as for 2D images
    masks = None
    if config.masks and volumes.label is not None and indices:
        masks = np.stack([_square(view_slice(volumes.label, axis, k).astype(np.float32), size, aspect, mask=True)
                          for k in indices])[:, None]
    return images, masks, indices


def chosen_slices(brain: np.ndarray, label: np.ndarray | None, axis: int, config: DataConfig) -> list[int]:
    """Slice indices: the band of the brain's extent along the axis, every k-th, optionally only with label.

    Args:
        brain: (x, y, z) bool brain mask.
        label: (x, y, z) bool label mask, or None.
        axis: 0, 1 or 2 (see ``SLICE_AXES``).
        config: ``slice_band``, ``slice_every`` and ``slices_with_label`` are used.
    Returns:
        Sorted slice indices along ``axis``.
    Raises:
        ValueError: for ``slices_with_label`` without a label volume.
    """
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(brain.any(axis=other))
    if present.size == 0:
        return []
    first, last = int(present[0]), int(present[-1])
    low, high = config.slice_band
    start, stop = first + round(low * (last - first)), first + round(high * (last - first))
    indices = list(range(start, stop + 1, config.slice_every))
    if config.slices_with_label:
        if label is None:
            raise ValueError("slices_with_label=True needs a label volume beside each image")
        with_label = set(np.flatnonzero(label.any(axis=other)).tolist())
        indices = [k for k in indices if k in with_label]
    return indices


def _square(view: np.ndarray, image_size: int, aspect: float, mask: bool = False) -> np.ndarray:
    """A [0, 1] slice (or a boolean mask) -> (S, S) uint8 with the physical aspect ratio, centred on black."""
    picture = Image.fromarray(np.round(view * 255).astype(np.uint8))
    if not mask:
        return _fit_square(picture, image_size, Image.Resampling.LANCZOS, aspect)
    return np.where(_fit_square(picture, image_size, Image.Resampling.BOX, aspect) > 127, 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------------- load split

def load_volume_images(config: DataConfig, root: Path, cache_dir: Path) -> ImageSet:
    """The slices of one split of a volume dataset, decoded once and cached (see :func:`data.load_images`).

    Args:
        config: the data settings (volume fields included).
        root: the dataset folder.
        cache_dir: where decoded tensors are cached.
    Returns:
        An :class:`ImageSet` whose ``files`` name ``<volume>#<axis>=<index>`` and whose ``subjects`` name each
        slice's subject; unreadable subjects are listed in ``skipped`` (with one warning).
    Raises:
        DatasetLayoutError: for layout problems (see :func:`scan_volumes`) or a split without slices.
    """
    subjects = scan_volumes(root, config)
    class_names = order_classes(sorted({s.class_name for s in subjects}), config.class_order)
    chosen = _split_subjects(subjects, class_names, config)
    key = _volume_cache_key(root, chosen, class_names, config)
    cache_path = cache_dir / "decoded" / f"{key}.safetensors"
    cached = read_tensor_cache(cache_path)
    if cached is None:
        tensors, metadata = _slice_subjects(root, chosen, class_names, config)
        write_tensor_cache(cache_path, tensors, metadata)
    else:
        tensors, metadata = cached
    warn_skipped(metadata["skipped"], "subject(s)", root)
    if config.masks and "masks" not in tensors:
        raise DatasetLayoutError(f"masks=True but the subjects of {root} have no label volume (a file named like "
                                 f"{LABEL_NAME.pattern!r} beside the image volumes)")
    return ImageSet(images=tensors["images"], labels=tensors["labels"], class_names=class_names, source=str(root),
                    split=config.split, cache_key=key, skipped=[name for name, _ in metadata["skipped"]],
                    files=metadata["files"], dataset=dataset_identity(root, class_names), masks=tensors.get("masks"),
                    subjects=metadata["subjects"])


def _split_subjects(subjects: list[VolumeSubject], class_names: list[str], config: DataConfig) -> list[VolumeSubject]:
    """The subjects of the requested split: from split folders, else ``test_fraction`` of each class's subjects."""
    if any(s.split for s in subjects):
        chosen = [s for s in subjects if s.split == config.split]
        if not chosen:
            raise DatasetLayoutError(f"No subject in the {config.split} split folder")
        return chosen
    by_class = {name: [s.subject for s in subjects if s.class_name == name] for name in class_names}
    held_out = held_out_subjects(by_class, config.test_fraction, config.seed)
    chosen = [s for s in subjects if (s.subject in held_out) == (config.split == "test")]
    if not chosen:
        raise DatasetLayoutError(f"The {config.split} split has no subject ({len(subjects)} subject(s) in all: a test "
                                 f"split needs at least two subjects in a class)")
    return chosen


def _volume_cache_key(root: Path, chosen: list[VolumeSubject], class_names: list[str], config: DataConfig) -> str:
    """Hash of the subjects' files (paths, sizes, times) and every setting the slices depend on."""
    def stat(path: Path | None) -> list:
        if path is None:
            return []
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        return [[f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns] for f in files]

    subjects = [[s.subject, s.class_name, [stat(p) for p in s.images], stat(s.label), stat(s.brain_mask)]
                for s in chosen]
    fields = ("image_size", "channels", "split", "max_per_class", "seed", "test_fraction", "masks", "slice_axis",
              "slice_band", "slice_every", "slices_with_label", "modality", "intensity", "mask_labels")
    settings = {"version": VOLUME_TRANSFORM_VERSION, "subjects": subjects, "class_names": class_names,
                **{name: getattr(config, name) for name in fields}}
    return "vol-" + hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:28]


def _slice_subjects(root: Path, chosen: list[VolumeSubject], class_names: list[str],
                    config: DataConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """Slice every chosen subject (a per-class ``max_per_class`` cap stops early) into cache tensors + metadata."""
    started = time.perf_counter()
    images, masks, labels, files, subjects, skipped = [], [], [], [], [], []
    per_class = {name: 0 for name in class_names}

    def attempt(subject: VolumeSubject) -> tuple[np.ndarray, np.ndarray | None, list[int]] | str:
        try:
            return slice_subject(subject, config)
        except Exception as error:  # noqa: BLE001 - nibabel/pydicom raise many types for malformed files
            return f"{type(error).__name__}: {error}"

    if config.max_per_class is None:  # threads: gzip inflation and numpy release the GIL
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            results = list(pool.map(attempt, chosen))
    else:  # a capped (quick) load stops reading a class once it has enough slices
        results = (attempt(s) if per_class[s.class_name] < config.max_per_class else None for s in chosen)
    for subject, result in zip(chosen, results):
        if result is None:
            continue
        name = subject.images[0].relative_to(root).as_posix()
        if isinstance(result, str):
            skipped.append([name, result])
            continue
        slices, slice_masks, indices = result
        if config.max_per_class is not None:
            keep = config.max_per_class - per_class[subject.class_name]
            slices, indices = slices[:keep], indices[:keep]
            slice_masks = None if slice_masks is None else slice_masks[:keep]
        if config.masks and slice_masks is None and len(indices):
            skipped.append([name, "no label volume beside it (masks=True)"])
            continue
        per_class[subject.class_name] += len(indices)
        images.append(slices)
        masks += [] if slice_masks is None else [slice_masks]
        labels += [class_names.index(subject.class_name)] * len(indices)
        files += [f"{name}#{config.slice_axis}={k}" for k in indices]
        subjects += [subject.subject] * len(indices)
    if not files:
        reasons = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DatasetLayoutError(f"No slices from the {len(chosen)} {config.split} subject(s) of {root}{reasons}.")
    logger.info("Sliced %d subjects of %s into %d images in %.1f s", len(chosen), root, len(files),
                time.perf_counter() - started)
    tensors = {"images": torch.from_numpy(np.concatenate(images)), "labels": torch.tensor(labels, dtype=torch.int64)}
    if masks:
        tensors["masks"] = torch.from_numpy(np.concatenate(masks))
    return tensors, {"files": files, "subjects": subjects, "skipped": skipped}


def export_slices(data: ImageSet, out_dir: str | os.PathLike, *, replace: bool = False) -> Path:
    """Write loaded volume slices as a 2D dataset any pipeline reads, with where each slice came from.

    Layout: ``<out_dir>/<class>/<subject>_<index>.png`` (+ ``<subject>_<index>_mask.png`` when the set has masks) and
    ``manifest.csv`` (file, class, subject, volume, axis, slice). The names follow the ``adni`` subject pattern, so
    ``load_images(DataConfig(dataset=out_dir, subject_pattern="adni"))`` splits the PNGs by subject again.

    Args:
        data: slices from :func:`medgan_core.data.load_images` on a volume dataset.
        out_dir: destination; refused when it holds files unless ``replace`` (swapped in only when complete).
        replace: replace an earlier export.
    Returns:
        ``out_dir``.
    Raises:
        ValueError: for a set without subject ids or volume slice names (not loaded from volumes).
        FileExistsError: see ``replace``.
    """
    if not data.subjects or not all("#" in name for name in data.files):
        raise ValueError("export_slices needs slices loaded from volumes (subject ids and <volume>#<axis>=<index> "
                         "names); a 2D dataset is already a folder of images")
    out_dir = Path(out_dir)
    with staged_folder(out_dir, replace) as staging:
        rows = []
        for k, (name, subject) in enumerate(zip(data.files, data.subjects)):
            volume, cut = name.rsplit("#", 1)
            axis, index = cut.split("=")
            class_name = data.class_names[int(data.labels[k])]
            stem = f"{subject}_{index}"
            (staging / class_name).mkdir(exist_ok=True)
            Image.fromarray(picture_array(data.images[k])).save(staging / class_name / f"{stem}.png")
            if data.masks is not None:
                Image.fromarray(data.masks[k, 0].numpy()).save(staging / class_name / f"{stem}{MASK_SUFFIX}.png")
            rows.append({"file": f"{class_name}/{stem}.png", "class": class_name, "subject": subject,
                         "volume": volume, "axis": axis, "slice": int(index)})
        with open(staging / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return out_dir
