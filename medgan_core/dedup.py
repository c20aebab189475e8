"""Near-duplicate detection with a perceptual hash (pHash), so a classifier's test accuracy is quoted honestly.

The Kaggle tumour set is built from several sources and holds near-identical slices in both its Training and
Testing folders; a test image with a near-twin in training measures memory, not generalisation.
pHash (Zauner 2010): grayscale, resize to 32x32, 2-D DCT, keep the 8x8 lowest frequencies without the DC term,
one bit per coefficient above their median. Two images are near-duplicates when their 64-bit hashes differ in at
most ``max_distance`` bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.fft
import torch
import torch.nn.functional as F

from .data import ImageSet, subject_ids_of

HASH_SIZE = 8  # 8x8 DCT coefficients -> 64-bit hash
DEFAULT_MAX_DISTANCE = 6  # bits of 64; resized/re-encoded copies of one slice differ by ~0-4


def perceptual_hash(images: torch.Tensor) -> np.ndarray:
    """64-bit pHash of each image.

    Args:
        images: (N, C, H, W) uint8 (or float) images; colour is averaged to gray.
    Returns:
        (N,) uint64 array of hashes.
    """
    gray = images.float().mean(dim=1, keepdim=True)  # (N, 1, H, W)
    small = F.interpolate(gray, size=(4 * HASH_SIZE, 4 * HASH_SIZE), mode="area")[:, 0].numpy()  # (N, 32, 32)
    low = scipy.fft.dctn(small, axes=(1, 2), norm="ortho")[:, :HASH_SIZE, :HASH_SIZE].reshape(len(small), -1)
    low = low[:, 1:]  # drop DC: overall brightness says nothing about content
    bits = low > np.median(low, axis=1, keepdims=True)  # (N, 63)
    weights = np.left_shift(np.uint64(1), np.arange(bits.shape[1], dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def hamming_distances(hashes_a: np.ndarray, hashes_b: np.ndarray) -> np.ndarray:
    """Bit differences between every pair of hashes.

    Args:
        hashes_a: (N,) uint64 hashes.
        hashes_b: (M,) uint64 hashes.
    Returns:
        (N, M) int array of Hamming distances (0..64).
    """
    return np.bitwise_count(hashes_a[:, None] ^ hashes_b[None, :]).astype(np.int64)


@dataclass
class NearDuplicateReport:
    """Test images that have a near-twin in the training set."""

    pairs: pd.DataFrame  # one row per test image with a twin: test_index, train_index, distance, classes, files
    n_test: int
    max_distance: int

    @property
    def test_indices(self) -> list[int]:
        """Indices (into the test set) of images with a near-twin in training."""
        return sorted(self.pairs["test_index"].tolist())

    @property
    def share(self) -> float:
        """Fraction of the test set with a near-twin in training."""
        return len(self.pairs) / self.n_test if self.n_test else 0.0

    def summary(self) -> str:
        """One line for notebooks and logs."""
        cross = int((self.pairs["test_class"] != self.pairs["train_class"]).sum()) if len(self.pairs) else 0
        return (f"{len(self.pairs)} of {self.n_test} test images ({self.share:.1%}) have a near-duplicate in training "
                f"(pHash distance <= {self.max_distance} of 64 bits); {cross} of them with a different label")


def find_near_duplicates(train: ImageSet, test: ImageSet, max_distance: int = DEFAULT_MAX_DISTANCE,
                         chunk: int = 1024) -> NearDuplicateReport:
    """For each test image, its nearest training image by pHash, kept when within ``max_distance`` bits.

    Args:
        train: training images.
        test: test images.
        max_distance: largest Hamming distance (of 64 bits) that counts as a near-duplicate.
        chunk: test images compared at once (bounds memory at chunk x len(train)).
    Returns:
        The :class:`NearDuplicateReport`.
    """
    train_hashes, test_hashes = perceptual_hash(train.images), perceptual_hash(test.images)
    rows = []
    for start in range(0, len(test_hashes), chunk):
        distances = hamming_distances(test_hashes[start:start + chunk], train_hashes)  # (chunk, N_train)
        nearest = distances.argmin(axis=1)
        for offset, (train_index, distance) in enumerate(zip(nearest, distances[np.arange(len(nearest)), nearest])):
            if distance <= max_distance:
                test_index = start + offset
                rows.append({"test_index": test_index, "train_index": int(train_index), "distance": int(distance),
                             "test_class": test.class_names[int(test.labels[test_index])],
                             "train_class": train.class_names[int(train.labels[train_index])],
                             "test_file": test.files[test_index] if test.files else "",
                             "train_file": train.files[train_index] if train.files else ""})
    columns = ["test_index", "train_index", "distance", "test_class", "train_class", "test_file", "train_file"]
    return NearDuplicateReport(pd.DataFrame(rows, columns=columns), len(test), max_distance)


def drop_near_duplicates(test: ImageSet, report: NearDuplicateReport) -> ImageSet:
    """The test set without the images that have a near-twin in training.

    Args:
        test: the test set the report was computed on.
        report: from :func:`find_near_duplicates`.
    Returns:
        The de-duplicated test set.
    """
    twins = set(report.test_indices)
    return test.subset([i for i in range(len(test)) if i not in twins], split=f"{test.split}-dedup")


@dataclass
class LeakageReport:
    """What links a test split to its training split: shared subjects and near-duplicate slices."""

    shared_subjects: pd.DataFrame  # subject, train_images, test_images (empty without subject ids)
    near_duplicates: NearDuplicateReport
    subject_pattern: str | None
    n_train_subjects: int | None  # None without subject ids
    n_test_subjects: int | None

    def test_indices(self, test: ImageSet) -> list[int]:
        """Test images to drop: those of a shared subject and those with a near-twin in training."""
        shared = set(self.shared_subjects["subject"])
        ids = subject_ids(test, self.subject_pattern) if self.n_test_subjects is not None else []
        by_subject = [i for i, subject in enumerate(ids) if subject in shared]
        return sorted(set(by_subject) | set(self.near_duplicates.test_indices))

    def clean(self, test: ImageSet) -> ImageSet:
        """The test set without :meth:`test_indices` (split ``<split>-clean``)."""
        dropped = set(self.test_indices(test))
        return test.subset([i for i in range(len(test)) if i not in dropped], split=f"{test.split}-clean")

    def summary(self) -> str:
        """Two lines for notebooks and the README."""
        if self.n_test_subjects is None:
            subjects = "no subject ids (pass subject_pattern to check subjects)"
        else:
            subjects = (f"{len(self.shared_subjects)} of {self.n_test_subjects} test subjects also in training "
                        f"({self.n_train_subjects} training subjects)")
        return f"subjects: {subjects}\nslices: {self.near_duplicates.summary()}"


def subject_ids(data: ImageSet, subject_pattern: str | None = None) -> list[str] | None:
    """The subject id of every image: ``data.subjects`` (volumes, or loaded with a subject pattern), else from the
    file names with ``subject_pattern``, else None.

    Raises:
        ValueError: when a pattern is given but the set has no file names or a file name does not match it.
    """
    if data.subjects:
        return list(data.subjects)
    if subject_pattern is None:
        return None
    if not data.files:
        raise ValueError(f"the {data.split} set has no file names, so no subject ids: load it with load_images")
    return subject_ids_of(data.files, subject_pattern, f"{data.split} file(s)")


def leakage_audit(train: ImageSet, test: ImageSet, *, subject_pattern: str | None = None,
                  max_distance: int = DEFAULT_MAX_DISTANCE) -> LeakageReport:
    """Subjects shared by the two splits (when subject ids are known) and near-duplicate slices (pHash).

    Args:
        train: the training split (with ``files``).
        test: the test split (with ``files``).
        subject_pattern: ``"adni"``, ``"oasis"`` or a regex with ``(?P<subject>...)`` (see ``DataConfig``); not
            needed for sets that carry subject ids (volumes).
        max_distance: pHash bits (of 64) that still count as a near-duplicate.
    Returns:
        The :class:`LeakageReport`.
    Raises:
        ValueError: when subject ids are asked for but the sets carry no file names, or a file name does not match.
    """
    shared = pd.DataFrame(columns=["subject", "train_images", "test_images"])
    n_train_subjects = n_test_subjects = None
    train_ids, test_ids = subject_ids(train, subject_pattern), subject_ids(test, subject_pattern)
    if train_ids is not None and test_ids is not None:
        train_counts, test_counts = pd.Series(train_ids).value_counts(), pd.Series(test_ids).value_counts()
        both = sorted(set(train_counts.index) & set(test_counts.index))
        shared = pd.DataFrame({"subject": both, "train_images": [int(train_counts[s]) for s in both],
                               "test_images": [int(test_counts[s]) for s in both]})
        n_train_subjects, n_test_subjects = len(train_counts), len(test_counts)
    return LeakageReport(shared, find_near_duplicates(train, test, max_distance), subject_pattern, n_train_subjects,
                         n_test_subjects)
