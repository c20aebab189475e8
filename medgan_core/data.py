"""Brain MRI folders -> cached uint8 tensors -> deterministic training batches.

Three steps, each usable on its own:

1. :func:`resolve_dataset` turns a dataset spec (``"demo"``, ``"kaggle:<handle>"`` or a folder) into a folder.
2. :func:`load_images` finds the class folders (with or without Training/Testing split folders), decodes every
   image once into a square uint8 tensor and caches the result as a safetensors file keyed by the file list and
   the settings, so later runs skip decoding.
3. :class:`BatchStream` serves shuffled (or class-balanced) float batches in [-1, 1] whose order depends only on
   (seed, epoch), so a run resumed at any step sees exactly the batches it would have seen.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from .config import DataConfig
from .fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

TRANSFORM_VERSION = 1  # bump whenever decode_image's output changes, so stale caches are not reused
MASK_TRANSFORM_VERSION = 1  # the same for decode_mask
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
SPLIT_FOLDER_NAMES = {"train": ("train", "training"), "test": ("test", "testing")}  # compared lower-case
KAGGLE_SHORTCUTS = {
    "brain-tumor-mri": "masoudnickparvar/brain-tumor-mri-dataset",
    "alzheimer-4class": "tourist55/alzheimers-dataset-4-class-of-images",
    "brain-tumor-yes-no": "navoneel/brain-mri-images-for-brain-tumor-detection",
}
_IGNORED_FOLDERS = frozenset({"__MACOSX"})  # macOS zip artefacts, never a class
MASK_SUFFIX = "_mask"  # <name>_mask.<ext> is the mask of <name>.<ext> (Kaggle LGG kaggle_3m, the figshare tumour set)
MASK_TREE = ("images", "masks")  # or parallel folders: masks/<path> is the mask of images/<path>
VOLUME_FILE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".dcm")  # counted in a dataset's identity
# Subject ids in slice file names (matched on the name without extension)
SUBJECT_PATTERNS = {
    "adni": r"^(?P<subject>.+?)_\d+$",  # <subject>_<slice>, as in the ADNI AD/NC slice sets
    "oasis": r"^(?P<subject>OAS\d_\d+)_MR\d+",  # OAS1_0001_MR1_..., OASIS-1 sessions of one subject
}
# Class sets with a natural order, used when DataConfig.class_order is None (labels, sliders, exports follow it)
KNOWN_CLASS_ORDERS = (
    ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"),  # kaggle:alzheimer-4class (CDR stages)
    ("Non_Demented", "Very_Mild_Demented", "Mild_Demented", "Moderate_Demented"),  # the same set, other spelling
)
_KAGGLE_HANDLE = re.compile(r"^([\w.-]+)/([\w.-]+)(?:/versions/(\d+))?$")
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_EXPECTED_LAYOUT = (
    "Expected class sub-folders of images, optionally inside split folders:\n"
    "  <root>/<class>/*.png                                (test_fraction of each class is held out)\n"
    "  <root>/Training/<class>/*.png + <root>/Testing/<class>/*.png   (or train/ + test/)"
)


class DatasetLayoutError(ValueError):
    """The dataset folder is missing or does not hold images in a layout the loader understands."""


class DatasetUnavailableError(RuntimeError):
    """A Kaggle dataset could not be downloaded and no complete copy is cached."""


class UnreadableImageWarning(UserWarning):
    """Some image files could not be decoded and were left out."""


class MissingMaskWarning(UserWarning):
    """Images without masks were left out, masks without images were ignored, or masks were resized."""


@dataclass
class ImageSet:
    """Decoded images of one split, held in memory.

    ``files`` and ``skipped`` are paths relative to ``source``.
    """

    images: torch.Tensor  # (N, C, S, S) uint8
    labels: torch.Tensor  # (N,) int64, indices into class_names
    class_names: list[str]
    source: str = ""  # folder whose sub-folders are the classes
    split: str = "train"
    cache_key: str = ""
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded
    files: list[str] = field(default_factory=list)  # one per image, same order as images
    dataset: dict = field(default_factory=dict)  # identity of the whole dataset (see dataset_identity); {}: unknown
    masks: torch.Tensor | None = None  # (N, 1, S, S) uint8, 0 or 255: segmentation masks aligned with images
    subjects: list[str] = field(default_factory=list)  # subject id per image when known (volumes, subject_pattern)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a (N, C, S, S) uint8 tensor, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        expected = (self.images.shape[0], 1, *self.images.shape[2:])
        if self.masks is not None and (self.masks.dtype != torch.uint8 or tuple(self.masks.shape) != expected):
            raise ValueError(f"masks must be a {expected} uint8 tensor, got {tuple(self.masks.shape)} {self.masks.dtype}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """Colour channels C: 1 (gray) or 3 (RGB)."""
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Square side S in pixels."""
        return self.images.shape[-1]

    def class_counts(self) -> dict[str, int]:
        """Number of images per class name (classes without images count 0)."""
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts))

    def subset(self, indices: Sequence[int] | torch.Tensor, split: str | None = None) -> "ImageSet":
        """The images at ``indices``, with the same classes and source.

        Args:
            indices: rows to keep, in order.
            split: name of the new split (default: unchanged).
        Returns:
            A new :class:`ImageSet` whose cache key also names the rows, so distinct subsets never share cached
            features.
        """
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        digest = hashlib.sha256(index.numpy().tobytes()).hexdigest()[:12]
        files = [self.files[i] for i in index.tolist()] if self.files else []
        return ImageSet(self.images[index], self.labels[index], list(self.class_names), self.source,
                        split or self.split, f"{self.cache_key}:{split or self.split}:{digest}", [], files,
                        dict(self.dataset), None if self.masks is None else self.masks[index],
                        [self.subjects[i] for i in index.tolist()] if self.subjects else [])

    def stratified_split(self, fraction: float, seed: int = 0) -> tuple["ImageSet", "ImageSet"]:
        """Split off ``fraction`` of every class (at least one image of each class with two or more).

        Args:
            fraction: share of each class that goes to the second set, 0 < fraction < 1.
            seed: fixes the split.
        Returns:
            ``(rest, held_out)``, e.g. (train, validation) carved from a training set.
        Raises:
            ValueError: for a fraction outside (0, 1).
        """
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
        generator = torch.Generator().manual_seed(seed)
        rest, held_out = [], []
        for label in range(len(self.class_names)):
            rows = torch.nonzero(self.labels == label).flatten()
            rows = rows[torch.randperm(len(rows), generator=generator)].tolist()
            n_out = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
            held_out += rows[:n_out]
            rest += rows[n_out:]
        return self.subset(sorted(rest)), self.subset(sorted(held_out), split=f"{self.split}-heldout")


# ----------------------------------------------------------------------------------------------- dataset specs

def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder for decoded-tensor caches and the demo set.

    Args:
        cache_dir: explicit folder (``DataConfig.cache_dir``); when None, ``$MEDGAN_CACHE`` or ``~/.cache/medgan``.
    Returns:
        The folder path (not created here).
    """
    chosen = cache_dir or os.environ.get("MEDGAN_CACHE") or Path.home() / ".cache" / "medgan"
    return Path(chosen).expanduser()


def resolve_dataset(spec: str, cache_dir: str | os.PathLike | None = None, *, seed: int = 0) -> Path:
    """Turn a dataset spec into the folder that holds the dataset.

    Args:
        spec: ``"demo"`` (synthetic set built on first use), ``"demo-volumes"`` (the same for NIfTI volumes),
            ``"kaggle:<shortcut>"`` (see ``KAGGLE_SHORTCUTS``),
            ``"kaggle:<owner>/<name>[/versions/<N>]"``, or a local folder path.
        cache_dir: where the demo set is built; default as in :func:`resolve_cache_dir`.
        seed: seed of the demo set.
    Returns:
        The dataset root folder. Local paths are returned as given; :func:`load_images` checks them.
    Raises:
        ValueError: for a malformed Kaggle handle.
        DatasetUnavailableError: when a Kaggle dataset can be neither downloaded nor found in the cache.
    """
    if spec == "demo":
        from .demo_data import build_demo_dataset, demo_root  # imported late: only the demo needs it

        return Path(build_demo_dataset(demo_root(resolve_cache_dir(cache_dir), seed), seed=seed))
    if spec == "demo-volumes":
        from .demo_data import build_demo_volumes, demo_volumes_root

        return Path(build_demo_volumes(demo_volumes_root(resolve_cache_dir(cache_dir), seed), seed=seed))
    if spec.startswith("kaggle:"):
        return download_kaggle(spec.removeprefix("kaggle:"))
    return Path(spec).expanduser()


def download_kaggle(handle: str) -> Path:
    """Local folder of a Kaggle dataset: the Kaggle notebook mount, a fresh download, or the kagglehub cache.

    An unversioned handle makes kagglehub ask the API for the latest version even when the data is cached, so
    offline it fails; then the newest complete version in the kagglehub cache is used, with a warning.

    Args:
        handle: a ``KAGGLE_SHORTCUTS`` key, ``owner/name`` or ``owner/name/versions/N``.
    Returns:
        The dataset folder.
    Raises:
        ValueError: for a malformed handle.
        DatasetUnavailableError: offline (or without access) and no complete cached copy.
    """
    handle = KAGGLE_SHORTCUTS.get(handle, handle)
    match = _KAGGLE_HANDLE.match(handle)
    if match is None:
        raise ValueError(f"Bad Kaggle handle {handle!r}: use 'owner/name', 'owner/name/versions/N' or one of "
                         f"the shortcuts {sorted(KAGGLE_SHORTCUTS)}")
    owner, name, version = match.group(1), match.group(2), match.group(3)
    # kagglehub mounts attached datasets here inside Kaggle notebooks; honour its override variable too
    mounted = Path(os.environ.get("KAGGLE_CACHE_MOUNT_FOLDER", "/kaggle/input")) / name
    if mounted.is_dir():
        return mounted

    import kagglehub  # imported late: slow to import and only needed for Kaggle specs
    from kagglehub.exceptions import BackendError, CredentialError, UnauthenticatedError

    try:
        return Path(kagglehub.dataset_download(handle))
    except (OSError, BackendError, CredentialError, UnauthenticatedError) as error:  # requests errors are OSErrors
        cached = _cached_kaggle_version(owner, name, int(version) if version else None)
        if cached is None:
            raise DatasetUnavailableError(
                f"Could not download Kaggle dataset {handle!r} ({type(error).__name__}: {error}) and no complete "
                f"copy is in the kagglehub cache ({_kagglehub_cache() / 'datasets' / owner / name}). To get it, "
                f"either connect to the internet (private or gated data also needs Kaggle credentials: "
                f"KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json), or download "
                f"https://www.kaggle.com/datasets/{owner}/{name} manually, unzip it and pass the folder path as "
                f"the dataset.") from error
        warnings.warn(f"Kaggle is unreachable ({type(error).__name__}); using the cached copy "
                      f"{owner}/{name} version {cached.name} at {cached}", stacklevel=2)
        return cached


def _kagglehub_cache() -> Path:
    """kagglehub's cache root (same rule as ``kagglehub.config.get_cache_folder``)."""
    return Path(os.environ.get("KAGGLEHUB_CACHE", Path.home() / ".cache" / "kagglehub"))


def _cached_kaggle_version(owner: str, name: str, version: int | None) -> Path | None:
    """Newest completely downloaded version (or exactly ``version``) of a dataset in the kagglehub cache."""
    base = _kagglehub_cache() / "datasets" / owner / name
    # kagglehub extracts into versions/<N>/ and touches <N>.complete beside versions/ only once that succeeded
    complete = [int(marker.stem) for marker in base.glob("*.complete")
                if marker.stem.isdigit() and (base / "versions" / marker.stem).is_dir()]
    if version is not None:
        complete = [number for number in complete if number == version]
    return base / "versions" / str(max(complete)) if complete else None


# ------------------------------------------------------------------------------------------------ folder layout

@dataclass
class _Layout:
    """Where the images of one split are and which files belong to which class."""

    folder: Path  # its sub-folders are the classes
    class_files: dict[str, list[Path]]  # class name -> sorted image files
    class_names: list[str]  # labels are indices here; the union over all split folders
    carve_split: bool  # no split folders: hold out test_fraction of each class
    root: Path  # the dataset folder holding every split (wrapper folders removed)
    mask_tree: tuple[Path, Path] | None = None  # (images folder, masks folder) of a parallel-tree layout


def _list_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """Sorted (sub-folders, image files) of ``folder``; hidden entries, masks and other files are ignored."""
    subdirs, images = [], []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or entry.name in _IGNORED_FOLDERS:
            continue
        if entry.is_dir():
            subdirs.append(Path(entry.path))
        elif entry.is_file() and _is_image_name(entry.name) and not _is_mask_name(entry.name):
            images.append(Path(entry.path))
    return sorted(subdirs), sorted(images)


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _is_mask_name(name: str) -> bool:
    return Path(name).stem.lower().endswith(MASK_SUFFIX)


def _split_name(folder: Path) -> str | None:
    """'train' or 'test' when the folder is a split folder, else None."""
    return next((split for split, names in SPLIT_FOLDER_NAMES.items() if folder.name.lower() in names), None)


def _unwrap(folder: Path) -> Path:
    """Descend through wrapper folders that Kaggle archives often add.

    A wrapper holds no images and exactly one sub-folder, which is neither a split folder nor a class folder
    (it holds no images itself) but has sub-folders of its own.
    """
    while True:
        subdirs, images = _list_folder(folder)
        if len(subdirs) != 1 or images or _split_name(subdirs[0]):
            return folder
        child_subdirs, child_images = _list_folder(subdirs[0])
        if child_images or not child_subdirs:
            return folder
        folder = subdirs[0]


def _class_files(folder: Path, strict: bool = True) -> dict[str, list[Path]]:
    """Class name -> image files for the sub-folders of ``folder`` that directly hold images.

    Sub-folders holding only folders (e.g. a second copy of the dataset inside it) are ignored.

    Raises:
        DatasetLayoutError: when ``strict`` and there are no class folders or some class folder is empty.
    """
    subdirs, loose_images = _list_folder(folder)
    classes, empty = {}, []
    for subdir in subdirs:
        nested, files = _list_folder(subdir)
        if files:
            classes[subdir.name] = files
        elif not nested:
            empty.append(subdir.name)
    if not strict:
        return classes
    if not classes:
        found = (f"{len(loose_images)} image(s) directly in it (move them into a folder named after their class)"
                 if loose_images else "no images")
        found += f" and sub-folders {[d.name for d in subdirs][:10]} without images" if subdirs else ""
        raise DatasetLayoutError(f"No class folders with images in {folder}: found {found}.\n{_EXPECTED_LAYOUT}")
    if empty:
        raise DatasetLayoutError(f"Class folder(s) {empty} in {folder} hold no images (next to classes "
                                 f"{sorted(classes)}); remove them or add images.\n{_EXPECTED_LAYOUT}")
    if loose_images:
        logger.warning("Ignoring %d image(s) directly in %s, next to the class folders", len(loose_images), folder)
    return classes


def _scan_layout(root: Path, split: str) -> _Layout:
    """Interpret a dataset folder for one split."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DatasetLayoutError(f"Dataset folder {root} {what}. The dataset must be 'demo', 'kaggle:<owner/name>' "
                                 f"(shortcuts: {sorted(KAGGLE_SHORTCUTS)}) or a folder.\n{_EXPECTED_LAYOUT}")
    root = _unwrap(root)
    trees = {d.name.lower(): d for d in _list_folder(root)[0]}
    if all(name in trees for name in MASK_TREE):  # images/... with masks/... beside it
        layout = _scan_layout(trees["images"], split)
        layout.root, layout.mask_tree = root, (trees["images"], trees["masks"])
        return layout
    split_dirs: dict[str, Path] = {}
    for subdir in _list_folder(root)[0]:
        name = _split_name(subdir)
        if name in split_dirs:
            raise DatasetLayoutError(f"{root} has two {name} folders: {split_dirs[name].name!r} and {subdir.name!r}")
        if name:
            split_dirs[name] = subdir
    if not split_dirs:
        classes = _class_files(root)
        return _Layout(root, classes, sorted(classes), carve_split=True, root=root)
    if split not in split_dirs:
        present = ", ".join(d.name for d in split_dirs.values())
        raise DatasetLayoutError(
            f"{root} has split folder(s) {present} but no {split} split ({' or '.join(SPLIT_FOLDER_NAMES[split])}, "
            f"any case). Use split='{next(iter(split_dirs))}', or pass a split folder itself as the dataset "
            f"(e.g. {next(iter(split_dirs.values()))}) to hold out test_fraction of it as a test split.")
    folder = _unwrap(split_dirs[split])
    classes = _class_files(folder)
    # labels must mean the same class in every split, even if a split lacks a class
    names = set(classes).union(*(_class_files(_unwrap(d), strict=False) for d in split_dirs.values()))
    return _Layout(folder, classes, sorted(names), carve_split=False, root=root)


def _select_files(layout: _Layout, config: DataConfig) -> list[tuple[Path, int]]:
    """(file, label) pairs of the requested split and per-class cap, sorted by class then name.

    Each class gets its own seeded permutation, so a class's split and subset do not change when another class
    gains files. The test split is the permutation's head; ``max_per_class`` keeps the head of what remains.
    """
    held_out = _test_subjects(layout, config) if layout.carve_split and config.subject_pattern else None
    chosen = []
    for label, name in enumerate(layout.class_names):
        files = layout.class_files.get(name, [])
        order = np.random.default_rng([config.seed, zlib.crc32(name.encode())]).permutation(len(files))
        shuffled = [files[i] for i in order]
        if held_out is not None:  # by subject: all of a subject's slices on one side
            in_test = [subject_of(path.stem, config.subject_pattern) in held_out for path in shuffled]
            shuffled = [path for path, test in zip(shuffled, in_test) if test == (config.split == "test")]
        elif layout.carve_split:
            n_test = min(max(round(len(files) * config.test_fraction), 1), len(files) - 1)
            shuffled = shuffled[:n_test] if config.split == "test" else shuffled[n_test:]
        chosen += [(path, label) for path in sorted(shuffled[:config.max_per_class])]
    return chosen


def _find_masks(chosen: list[tuple[Path, int]], layout: _Layout) -> tuple[list[Path | None], list[Path]]:
    """The mask file of each chosen image (None where it has none) and the masks whose image is missing.

    Same-folder convention: ``<name>_mask.<ext>`` beside ``<name>.<ext>`` (any image extension). Parallel trees:
    ``masks/<path>/<name>.<ext>`` (or ``<name>_mask.<ext>``) for ``images/<path>/<name>.<ext>``.
    """
    listings: dict[Path, dict[str, Path]] = {}
    found = []
    for image, _ in chosen:
        folder = image.parent
        if layout.mask_tree is not None:
            folder = layout.mask_tree[1] / image.parent.relative_to(layout.mask_tree[0])
        if folder not in listings:
            listings[folder] = _mask_listing(folder, suffix_required=layout.mask_tree is None)
        found.append(listings[folder].get(image.stem))
    image_stems = {(path.parent, path.stem) for files in layout.class_files.values() for path in files}
    orphans = []
    for folder, listing in listings.items():
        image_folder = folder if layout.mask_tree is None else \
            layout.mask_tree[0] / folder.relative_to(layout.mask_tree[1])
        orphans += [mask for stem, mask in listing.items() if (image_folder, stem) not in image_stems]
    return found, sorted(orphans)


def _mask_listing(folder: Path, suffix_required: bool) -> dict[str, Path]:
    """Image stem -> mask file, for the mask files in ``folder`` (first by name when one stem has several)."""
    if not folder.is_dir():
        return {}
    listing: dict[str, Path] = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith(".") or not _is_image_name(name):
            continue
        stem = Path(name).stem
        if _is_mask_name(name):
            stem = stem[:-len(MASK_SUFFIX)]
        elif suffix_required:
            continue
        listing.setdefault(stem, folder / name)
    return listing


def _pair_masks(chosen: list[tuple[Path, int]], layout: _Layout,
                config: DataConfig) -> tuple[list[tuple[Path, int]], list[Path]]:
    """The chosen images that have masks, and their mask files.

    Raises:
        DatasetLayoutError: when some images have no mask and ``config.missing_masks`` is "error".
    """
    masks, orphans = _find_masks(chosen, layout)
    if orphans:
        warnings.warn(f"{len(orphans)} mask file(s) have no image beside them and are not used (e.g. "
                      f"{[p.name for p in orphans[:5]]}); an image named like the mask without {MASK_SUFFIX!r} "
                      f"pairs them", MissingMaskWarning, stacklevel=3)
    missing = [path for (path, _), mask in zip(chosen, masks) if mask is None]
    if missing and config.missing_masks == "error":
        where = ("masks/ beside images/, same relative path" if layout.mask_tree
                 else f"<name>{MASK_SUFFIX}.<ext> beside each image")
        raise DatasetLayoutError(
            f"{len(missing)} of {len(chosen)} images of the {config.split} split have no mask ({where}), e.g. "
            f"{[str(p.relative_to(layout.folder)) for p in missing[:5]]}. Add their masks, or pass "
            f"missing_masks='skip' to leave those images out (with a warning); an empty mask file means 'no "
            f"lesion' and is kept.")
    if missing:
        warnings.warn(f"Left out {len(missing)} image(s) without a mask (missing_masks='skip'), e.g. "
                      f"{[p.name for p in missing[:5]]}", MissingMaskWarning, stacklevel=3)
    kept = [(pair, mask) for pair, mask in zip(chosen, masks) if mask is not None]
    return [pair for pair, _ in kept], [mask for _, mask in kept]


def subject_of(name: str, pattern: str) -> str | None:
    """The subject id in a file name (without extension), or None when the pattern does not match.

    Args:
        name: e.g. ``"002_S_0295_37"``.
        pattern: a :data:`SUBJECT_PATTERNS` name or a regex with a ``(?P<subject>...)`` group.
    Returns:
        The subject id.
    Raises:
        ValueError: for a regex without a ``subject`` group.
    """
    regex = re.compile(SUBJECT_PATTERNS.get(pattern, pattern))
    if "subject" not in regex.groupindex:
        raise ValueError(f"subject_pattern must be one of {sorted(SUBJECT_PATTERNS)} or a regex with a "
                         f"(?P<subject>...) group, got {pattern!r}")
    match = regex.search(name)
    return match.group("subject") if match else None


def subject_ids_of(files: Sequence[str], pattern: str, what: str = "file(s)") -> list[str]:
    """The subject id in each file name (a path; its name without extension is matched).

    Args:
        files: file names or relative paths.
        pattern: a :data:`SUBJECT_PATTERNS` name or a regex with a ``(?P<subject>...)`` group.
        what: how the error names the files (e.g. "file(s) of class 'AD'").
    Returns:
        One id per file.
    Raises:
        DatasetLayoutError: when some names do not match the pattern (examples listed, with the fix).
    """
    ids = [subject_of(Path(name).stem, pattern) for name in files]
    unmatched = [Path(name).name for name, subject in zip(files, ids) if subject is None]
    if unmatched:
        raise DatasetLayoutError(f"{len(unmatched)} {what} have no subject id under subject_pattern={pattern!r} "
                                 f"(e.g. {unmatched[:3]}); fix the pattern (presets: {sorted(SUBJECT_PATTERNS)}) or "
                                 f"rename the files")
    return ids


def _test_subjects(layout: _Layout, config: DataConfig) -> set[str]:
    """The held-out subjects: per class, ``test_fraction`` of its subjects in a seeded hash order (so adding slices
    or subjects moves few others), at least one when a class has two or more; a subject drawn in any class is held
    out in every class, so no subject is on both sides.

    Raises:
        DatasetLayoutError: when file names do not match the pattern (examples listed).
    """
    by_class = {name: subject_ids_of([path.name for path in layout.class_files.get(name, [])],
                                     config.subject_pattern, f"file(s) of class {name!r}")
                for name in layout.class_names}
    return held_out_subjects(by_class, config.test_fraction, config.seed)


def held_out_subjects(subjects_by_class: dict[str, Sequence[str]], fraction: float, seed: int) -> set[str]:
    """The test subjects: per class, ``fraction`` of its subjects in a seeded hash order (so adding subjects moves
    few others), at least one when a class has two or more; a subject drawn in any class is held out in every class.

    Args:
        subjects_by_class: class name -> subject ids (repeats allowed: one per slice).
        fraction: share of each class's subjects held out.
        seed: fixes the draw.
    Returns:
        The held-out subject ids.
    """
    held_out: set[str] = set()
    for ids in subjects_by_class.values():
        ordered = sorted(set(ids), key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
        n_test = min(max(round(len(ordered) * fraction), 1), len(ordered) - 1) if len(ordered) > 1 else 0
        held_out.update(ordered[:n_test])
    return held_out


# ----------------------------------------------------------------------------------------------------- identity

def dataset_identity(root: str | os.PathLike, class_names: Sequence[str]) -> dict:
    """What a dataset is, independent of where it lies: a fingerprint of its image files and classes.

    Runs, evaluators and exports record it, so a comparison can refuse a model or an evaluator trained on other data
    (e.g. the demo set, which shares the tumour set's class names). Every image, mask or volume file under ``root`` counts, with
    its path relative to ``root`` and its size in bytes (not its time stamps: a copy on another machine matches).

    Args:
        root: the dataset folder holding every split (``Training``/``Testing`` or the class folders).
        class_names: the dataset's classes, in label order (recorded; the fingerprint does not depend on the order).
    Returns:
        ``{"name": folder name, "fingerprint": 16 hex digits, "num_files": image files, "class_names": [...]}``.
    """
    root = Path(root)
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in _IGNORED_FOLDERS)
        for name in sorted(names):
            if not name.startswith(".") and (_is_image_name(name) or name.lower().endswith(VOLUME_FILE_SUFFIXES)):
                path = Path(folder, name)
                files.append([path.relative_to(root).as_posix(), path.stat().st_size])
    digest = hashlib.sha256(json.dumps({"files": files, "class_names": sorted(class_names)}).encode()).hexdigest()
    return {"name": root.name, "fingerprint": digest[:16], "num_files": len(files), "class_names": list(class_names)}


def identify_dataset(spec: str, cache_dir: str | os.PathLike | None = None, *, seed: int = 0,
                     class_order: Sequence[str] | None = None, labels_csv: str | None = None,
                     csv_columns: tuple[str, str] = ("subject", "class")) -> dict:
    """The :func:`dataset_identity` of a dataset spec (``"demo"``, ``"kaggle:..."`` or a folder), without decoding.

    Args:
        spec: as for :func:`resolve_dataset`.
        cache_dir: as for :func:`resolve_dataset`.
        seed: seed of the demo set.
        class_order: as ``DataConfig.class_order``.
        labels_csv: as ``DataConfig.labels_csv`` (volume datasets whose classes come from a CSV).
        csv_columns: as ``DataConfig.csv_columns``.
    Returns:
        The identity that :func:`load_images` gives every split of this dataset.
    """
    root = resolve_dataset(spec, resolve_cache_dir(cache_dir), seed=seed)
    from . import volumes  # (imports this module)

    if root.is_dir() and volumes.holds_volumes(root):
        config = DataConfig(dataset=str(root), labels_csv=labels_csv, csv_columns=csv_columns)
        names = {subject.class_name for subject in volumes.scan_volumes(root, config, pick_images=False)}
        return dataset_identity(root, order_classes(sorted(names), class_order))
    layout = _scan_layout(root, "train")
    return dataset_identity(layout.root, order_classes(layout.class_names, class_order))


def order_classes(found: Sequence[str], class_order: Sequence[str] | None = None) -> list[str]:
    """The label order of a dataset's classes: ``class_order`` when given, else a known order
    (:data:`KNOWN_CLASS_ORDERS`, e.g. dementia stages from none to moderate), else alphabetical.

    Args:
        found: the class folder names.
        class_order: every one of them, in the wanted order.
    Returns:
        The class names in label order.
    Raises:
        ValueError: when ``class_order`` misses a class or names one that is not there.
    """
    if class_order is not None:
        missing, unknown = sorted(set(found) - set(class_order)), sorted(set(class_order) - set(found))
        if missing or unknown or len(set(class_order)) != len(class_order):
            raise ValueError(f"class_order must list each class once: the dataset has {sorted(found)}; missing "
                             f"{missing}, not in the dataset {unknown}")
        return list(class_order)
    known = next((order for order in KNOWN_CLASS_ORDERS if set(order) == set(found)), None)
    return list(known) if known else sorted(found)


def describe_dataset(identity: dict | None) -> str:
    """One line naming a dataset identity for messages: ``name (N image files, fingerprint ...)``."""
    if not identity:
        return "an unrecorded dataset"
    return f"{identity['name']} ({identity['num_files']} image files, fingerprint {identity['fingerprint']})"


def same_dataset(a: dict | None, b: dict | None) -> bool | None:
    """True/False when both identities are known and (do not) match; None when either is unknown."""
    if not a or not b:
        return None
    return a["fingerprint"] == b["fingerprint"]


# ------------------------------------------------------------------------------------------------------- decode

def check_power_of_two_size(image_size: int) -> None:
    """Reject sizes the models cannot use.

    Raises:
        ValueError: unless ``image_size`` is a power of two >= 16 (64, 128 and 256 are the usual ones).
    """
    if not isinstance(image_size, int) or image_size < 16 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 16 (usually 64, 128 or 256), got {image_size!r}")


def decode_image(path: str | os.PathLike, image_size: int, channels: int = 1) -> np.ndarray:
    """Read one image file as a square, zero-padded uint8 array.

    Any PIL mode is accepted: transparency is composited on black, palette/CMYK/bilevel images are converted,
    and 16-bit or float images are min-max stretched to 0..255 (MRI exports rarely fill the 16-bit range, so a
    fixed division would leave them nearly black). The longer side is resized to ``image_size`` (antialiased,
    aspect ratio kept) and the image is centred on a black square.

    Args:
        path: image file (GIFs and multi-page TIFFs give their first frame).
        image_size: side of the square output.
        channels: 1 for grayscale, 3 for RGB (gray sources replicated).
    Returns:
        Array of shape (channels, image_size, image_size), dtype uint8.
    Raises:
        Exception: whatever PIL raises for an unreadable file (callers skip such files).
    """
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as image:
        image.draft(mode, (image_size, image_size))  # JPEG only: decode at a reduced scale, about 2x faster
        image = _to_8bit(ImageOps.exif_transpose(image), mode)
    array = _fit_square(image, image_size, Image.Resampling.LANCZOS)
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_mask(path: str | os.PathLike, image_size: int,
                image_path: str | os.PathLike | None = None) -> tuple[np.ndarray, str | None]:
    """Read one mask file as a binary square aligned with :func:`decode_image`'s output of its image.

    A pixel is in the mask when its value is above 127, or above 0 when the file's maximum is 127 or less (0/1,
    0/255 and label-valued masks all work; colour masks: any channel). The mask is resized to its image's size when
    they differ (nearest neighbour, reported), then fitted into the square like the image, by area averaging and a
    majority vote (so it stays aligned with the antialiased image).

    Args:
        path: mask file.
        image_size: side of the square output.
        image_path: the mask's image, whose size the mask must have (None: not checked).
    Returns:
        ``(mask, note)``: uint8 array (1, image_size, image_size) of 0 and 255, and a note when it was resized.
    Raises:
        Exception: whatever PIL raises for an unreadable file.
    """
    with Image.open(path) as mask:
        values = np.asarray(ImageOps.exif_transpose(mask))
    if values.ndim == 3:
        values = values[..., :3].max(axis=-1)  # (H, W): colour masks count any channel, alpha ignored
    binary = Image.fromarray(np.where(values > (127 if values.max() > 127 else 0), 255, 0).astype(np.uint8))
    note = None
    if image_path is not None:
        with Image.open(image_path) as image:
            size = ImageOps.exif_transpose(image).size if image.getexif().get(0x0112, 1) != 1 else image.size
        if binary.size != size:
            note = f"mask {binary.size[0]}x{binary.size[1]} resized to its image's {size[0]}x{size[1]}"
            binary = binary.resize(size, Image.Resampling.NEAREST)
    square = _fit_square(binary, image_size, Image.Resampling.BOX)
    return np.where(square > 127, 255, 0).astype(np.uint8)[None], note


def _fit_square(image: Image.Image, image_size: int, resample: Image.Resampling,
                pixel_aspect: float = 1.0) -> np.ndarray:
    """Resize the longer side to ``image_size`` (aspect ratio kept) and centre on a black square: (S, S[, 3]).

    ``pixel_aspect`` is a pixel's width over its height (anisotropic MRI voxels), so the result has square pixels.
    """
    width, height = image.size[0] * pixel_aspect, image.size[1]
    scale = image_size / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new(image.mode, (image_size, image_size))  # black
    canvas.paste(image.resize(size, resample), ((image_size - size[0]) // 2, (image_size - size[1]) // 2))
    return np.asarray(canvas)


def _to_8bit(image: Image.Image, mode: str) -> Image.Image:
    """Any PIL image -> 8-bit ``mode`` ("L" or "RGB")."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        stretched = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = Image.fromarray(np.round(stretched).astype(np.uint8))
    elif image.mode in _ALPHA_MODES or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image.convert("RGBA"))
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # PIL converts CMYK, YCbCr, P, 1, ... to RGB, but not all of them to L
    return image.convert(mode)


def _decode_files(paths: list[Path], image_size: int, channels: int,
                  mask_paths: list[Path] | None = None) -> list[tuple[np.ndarray, np.ndarray | None, str | None] | str]:
    """Decode files (and their masks) in a thread pool (PIL releases the GIL).

    Returns:
        Per file ``(image, mask or None, note on the mask or None)``, or an error string.
    """
    def attempt(index: int) -> tuple[np.ndarray, np.ndarray | None, str | None] | str:
        path = paths[index]
        try:
            image = decode_image(path, image_size, channels)
        except Exception as error:  # noqa: BLE001 - PIL plugins raise many types for malformed files
            return f"{type(error).__name__}: {error}"
        if mask_paths is None:
            return image, None, None
        try:
            return (image, *decode_mask(mask_paths[index], image_size, path))
        except Exception as error:  # noqa: BLE001
            return f"its mask {mask_paths[index].name}: {type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(attempt, range(len(paths))))


# -------------------------------------------------------------------------------------------------------- cache

def _cache_key(folder: Path, chosen: list[tuple[Path, int]], class_names: list[str], config: DataConfig,
               mask_paths: list[Path] | None = None) -> str:
    """Hash of everything the decoded tensors depend on; a changed, added or removed file gives a new key."""
    files = []
    for path, label in chosen:
        stat = path.stat()
        files.append([path.relative_to(folder).as_posix(), label, stat.st_size, stat.st_mtime_ns])
    settings = {"transform_version": TRANSFORM_VERSION, "files": files, "class_names": class_names,
                "image_size": config.image_size, "channels": config.channels, "split": config.split,
                "max_per_class": config.max_per_class, "seed": config.seed, "test_fraction": config.test_fraction}
    if mask_paths is not None:  # (absent otherwise, so image-only caches keep their keys)
        settings["masks"] = [[os.path.relpath(path, folder), path.stat().st_size, path.stat().st_mtime_ns] for path in mask_paths]
        settings["mask_version"] = MASK_TRANSFORM_VERSION
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def read_tensor_cache(path: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, metadata) of a cache file, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as cache:
            return {name: cache.get_tensor(name) for name in cache.keys()}, json.loads(cache.metadata()["medgan"])
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        logger.warning("Ignoring unreadable cache file %s (%s); computing it again", path, error)
        return None


def write_tensor_cache(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write the cache atomically; a read-only cache folder only costs the speed-up."""
    try:
        atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata={"medgan": json.dumps(metadata)}))
    except OSError as error:
        warnings.warn(f"Could not write the decoded-image cache {path} ({error}); the next run decodes again",
                      stacklevel=3)


# ---------------------------------------------------------------------------------------------------- load_images

def load_images(config: DataConfig) -> ImageSet:
    """Decode (or read from cache) the images of one split as a uint8 tensor.

    Args:
        config: dataset spec, image size, channels, split, per-class cap, test fraction, seed and cache folder.
    Returns:
        The split's images, labels and class names. Unreadable files are left out and listed in ``skipped``
        (with one :class:`UnreadableImageWarning`). The source folder is never modified.
    Raises:
        ValueError: for invalid settings (image size, channels, split, max_per_class, test_fraction).
        DatasetLayoutError: for a missing folder, an unrecognised layout, empty class folders or no readable image.
        DatasetUnavailableError: when a Kaggle dataset cannot be obtained.
    """
    _check_config(config)
    cache_dir = resolve_cache_dir(config.cache_dir)
    root = resolve_dataset(config.dataset, cache_dir, seed=config.seed)
    from . import volumes  # (imports this module)

    if root.is_dir() and volumes.holds_volumes(root):
        return volumes.load_volume_images(config, root, cache_dir)
    layout = _scan_layout(root, config.split)
    layout.class_names = order_classes(layout.class_names, config.class_order)
    chosen = _select_files(layout, config)
    mask_paths = None
    if config.masks:
        chosen, mask_paths = _pair_masks(chosen, layout, config)
    if not chosen:
        raise DatasetLayoutError(f"The {config.split} split of {layout.folder} has no images "
                                 f"(classes {layout.class_names}).")
    key = _cache_key(layout.folder, chosen, layout.class_names, config, mask_paths)
    cache_path = cache_dir / "decoded" / f"{key}.safetensors"
    cached = read_tensor_cache(cache_path)
    if cached is None:
        tensors, metadata = _decode_split(layout.folder, chosen, config, mask_paths)
        write_tensor_cache(cache_path, tensors, metadata)
    else:
        tensors, metadata = cached
    skipped = metadata["skipped"]  # [[relative path, error], ...]
    warn_skipped(skipped, "image file(s)", layout.folder)
    if metadata.get("resized_masks"):
        resized = metadata["resized_masks"]
        warnings.warn(f"{len(resized)} mask(s) had another size than their image and were resized to it (nearest "
                      f"neighbour), e.g. {resized[:3]}", MissingMaskWarning, stacklevel=2)
    return ImageSet(images=tensors["images"], labels=tensors["labels"], class_names=layout.class_names,
                    source=str(layout.folder), split=config.split, cache_key=key,
                    skipped=[name for name, _ in skipped], files=metadata["files"],
                    dataset=dataset_identity(layout.root, layout.class_names), masks=tensors.get("masks"),
                    subjects=subject_ids_of(metadata["files"], config.subject_pattern)
                    if config.subject_pattern else [])


def warn_skipped(skipped: list[list[str]], what: str, where: str | os.PathLike) -> None:
    """One :class:`UnreadableImageWarning` listing what was left out and why (nothing when the list is empty).

    Args:
        skipped: ``[[name, reason], ...]``.
        what: what the names are, e.g. "image file(s)" or "subject(s)".
        where: the dataset folder.
    """
    if skipped:
        listed = "".join(f"\n  {name} ({reason})" for name, reason in skipped[:10])
        more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        warnings.warn(f"Skipped {len(skipped)} unreadable {what} in {where}:{listed}{more}", UnreadableImageWarning,
                      stacklevel=3)


def _check_config(config: DataConfig) -> None:
    """Fail early, with the valid choices, on settings the loader cannot honour."""
    check_power_of_two_size(config.image_size)
    stacked = isinstance(config.modality, (list, tuple)) and len(config.modality) == config.channels
    if config.channels not in (1, 3) and not stacked:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {config.channels!r}")
    if config.split not in SPLIT_FOLDER_NAMES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FOLDER_NAMES)}, got {config.split!r}")
    if config.max_per_class is not None and config.max_per_class < 1:
        raise ValueError(f"max_per_class must be None or >= 1, got {config.max_per_class!r}")
    if not 0 < config.test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {config.test_fraction!r}")
    if config.subject_pattern is not None:
        subject_of("", config.subject_pattern)  # a regex without a subject group fails here, before any work
    if config.missing_masks not in ("error", "skip"):
        raise ValueError(f'missing_masks must be "error" or "skip", got {config.missing_masks!r}')
    _check_volume_config(config)


def _check_volume_config(config: DataConfig) -> None:
    """The volume settings (checked for every dataset: a typo fails before any work, not when volumes appear)."""
    from .volumes import INTENSITY_MODES, SLICE_AXES

    if config.slice_axis not in SLICE_AXES:
        raise ValueError(f"slice_axis must be one of {sorted(SLICE_AXES)}, got {config.slice_axis!r}")
    low, high = config.slice_band
    if not 0 <= low <= high <= 1:
        raise ValueError(f"slice_band must be (low, high) with 0 <= low <= high <= 1 (shares of the brain's extent), "
                         f"got {config.slice_band!r}")
    if not isinstance(config.slice_every, int) or config.slice_every < 1:
        raise ValueError(f"slice_every must be an integer >= 1, got {config.slice_every!r}")
    if config.intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {config.intensity!r}")
    if isinstance(config.modality, (list, tuple)) and len(config.modality) != config.channels:
        raise ValueError(f"modality={tuple(config.modality)!r} stacks {len(config.modality)} volumes as channels, so "
                         f"channels must be {len(config.modality)}, got {config.channels}")


def _decode_split(folder: Path, chosen: list[tuple[Path, int]], config: DataConfig,
                  mask_paths: list[Path] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Decode the chosen files (and masks) into cache tensors and metadata (file names, skipped files with reasons,
    resized masks)."""
    started = time.perf_counter()
    results = _decode_files([path for path, _ in chosen], config.image_size, config.channels, mask_paths)
    arrays, masks, labels, files, skipped, resized = [], [], [], [], [], []
    for (path, label), result in zip(chosen, results):
        name = path.relative_to(folder).as_posix()
        if isinstance(result, str):
            skipped.append([name, result])
            continue
        image, mask, note = result
        arrays.append(image)
        masks.append(mask)
        labels.append(label)
        files.append(name)
        if note:
            resized.append(f"{name}: {note}")
    if not arrays:
        listed = ", ".join(name for name, _ in skipped[:10])
        raise DatasetLayoutError(f"None of the {len(chosen)} image files in {folder} could be read "
                                 f"(e.g. {listed}; first error: {skipped[0][1]}).")
    logger.info("Decoded %d images from %s in %.1f s", len(arrays), folder, time.perf_counter() - started)
    tensors = {"images": torch.from_numpy(np.stack(arrays)),  # (N, C, S, S) uint8
               "labels": torch.tensor(labels, dtype=torch.int64)}
    if mask_paths is not None:
        tensors["masks"] = torch.from_numpy(np.stack(masks))  # (N, 1, S, S) uint8, 0 or 255
    return tensors, {"files": files, "skipped": skipped, "resized_masks": resized}


# ------------------------------------------------------------------------------------------------------ batches

def balance_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) draw weight of every sample, 1 / its class's size: every class equally likely (class-balanced draws).

    Args:
        labels: (N,) int64 class indices.
        num_classes: K.
    Returns:
        float64 (N,) weights.
    """
    class_sizes = torch.bincount(labels, minlength=num_classes).double()
    return (1.0 / class_sizes)[labels]


def epoch_order(n: int, seed: int, epoch: int,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Generator]:
    """The sample order of one epoch, fixed by (seed, epoch): a permutation of ``n``, or ``n`` draws with replacement
    by ``weights`` (see :func:`balance_weights`).

    Args:
        n: samples.
        seed: base seed.
        epoch: epoch index.
        weights: (n,) draw weights, or None for a plain shuffle.
    Returns:
        ``(order (n,) int64, generator)``: the generator goes on with the epoch's further draws (flips).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if weights is not None:
        return torch.multinomial(weights, n, replacement=True, generator=generator), generator
    return torch.randperm(n, generator=generator), generator


class BatchStream:
    """Deterministic, epoch-based batches from an ImageSet; resumable at any (epoch, step).

    The order of an epoch (and its flips) depends only on (seed, epoch), so ``epoch(e, start_step=k)`` yields
    exactly the batches ``k, k+1, ...`` of ``epoch(e)``.

    Args:
        data: decoded images.
        batch_size: images per batch.
        seed: base seed of the shuffles.
        balanced: draw ``len(data)`` samples per epoch with replacement, each with weight 1/(its class's size),
            so every class is seen equally often in expectation (like ``WeightedRandomSampler``).
        hflip: flip each sample horizontally with probability 1/2.
        drop_last: drop the final incomplete batch.
        device: where batches are placed.
        channels_last: return batches in channels-last memory format.
        resolution: side of the returned images; smaller than the stored size means area downsampling
            (a progressive GAN trains at 4..128 px from one cache).
        masks: append each image's mask as a last channel, (B, C + 1, R, R), flipped with its image (-1 outside
            the mask, 1 inside; image+mask models generate and discriminate both together).
    Raises:
        ValueError: for an empty set, a non-positive batch size, a batch larger than the set with ``drop_last``,
            a resolution outside 1..stored size, or ``masks`` for a set loaded without masks.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, seed: int = 0, balanced: bool = False,
                 hflip: bool = False, drop_last: bool = True, device: str | torch.device = "cpu",
                 channels_last: bool = False, resolution: int | None = None, masks: bool = False):
        if len(data) == 0:
            raise ValueError("BatchStream needs at least one image")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > len(data):
            raise ValueError(f"batch_size={batch_size} is larger than the {len(data)} images in the set, so "
                             f"drop_last=True leaves no batch; use batch_size <= {len(data)} or drop_last=False")
        if resolution is not None and not 1 <= resolution <= data.image_size:
            raise ValueError(f"resolution must be between 1 and the stored size {data.image_size}, got {resolution}; "
                             f"load the images with a larger image_size to train bigger")
        if masks and data.masks is None:
            raise ValueError("masks=True needs images loaded with their masks: DataConfig(masks=True)")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.balanced = balanced
        self.hflip = hflip
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.resolution = resolution or data.image_size
        self.masks = masks
        self._weights = balance_weights(data.labels, len(data.class_names)) if balanced else None

    def steps_per_epoch(self) -> int:
        """Batches in one epoch."""
        full, rest = divmod(len(self.data), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch, starting at batch ``start_step``.

        Args:
            epoch: epoch index (0-based); with the seed it fixes the order and flips.
            start_step: batches to skip (not materialised), for resuming mid-epoch.
        Returns:
            Iterator of ``(x, y)``: x float32 (B, C, R, R) in [-1, 1] on the device, y int64 (B,) labels.
        Raises:
            ValueError: when ``start_step`` is outside 0..steps_per_epoch().
        """
        steps = self.steps_per_epoch()
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step must be between 0 and {steps}, got {start_step}")
        return self._iterate(epoch, start_step, steps)

    def _iterate(self, epoch: int, start_step: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order, generator = epoch_order(n, self.seed, epoch, self._weights)
        # drawn for the whole epoch up front, so skipping batches leaves later flips unchanged
        flips = torch.rand(n, generator=generator) < 0.5 if self.hflip else None
        for step in range(start_step, steps):
            window = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield self._batch(order[window], None if flips is None else flips[window])

    def _batch(self, rows: torch.Tensor, flips: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.data.images[rows]  # (B, C, S, S) uint8
        if self.masks:
            images = torch.cat([images, self.data.masks[rows]], dim=1)  # (B, C + 1, S, S): flipped together below
        images = images.to(self.device, non_blocking=True)
        if flips is not None:
            images = torch.where(flips.to(self.device)[:, None, None, None], images.flip(-1), images)
        x = to_float(images)
        if self.resolution < self.data.image_size:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.data.labels[rows].to(self.device, non_blocking=True)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] back to uint8 0..255 (out-of-range values clipped, NaN -> 0), same device.

    Args:
        x: float tensor of any shape, e.g. (B, C, H, W) generator output.
    Returns:
        uint8 tensor of the same shape; exact inverse of the batch scaling for decoded images.
    """
    return x.detach().float().nan_to_num(-1.0).add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float32 in [-1, 1]; float images are taken to be in [-1, 1] already (generator range).

    Args:
        images: tensor of any shape, uint8 or float.
    Returns:
        float32 tensor of the same shape and device.
    """
    return images.float().div(127.5).sub(1) if images.dtype == torch.uint8 else images.float()

