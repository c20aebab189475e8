"""Memorisation audit: is a generated image (nearly) a copy of a training image?

Each generated image gets its nearest training image in two spaces: feature space (cosine distance between
L2-normalised features) and pixel space (normalised cross-correlation, NCC, over the whole image; distance
1 - NCC). What counts as "too near" is calibrated on real data: the ``percentile``-th percentile of the
distances from held-out real test images to their nearest training image. A generated image nearer than that
is flagged, separately in each space.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..sampling import picture_array
from .distribution import Extractor, SmallSampleWarning, _features
from .extractors import extractor_identity

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.figure import Figure

_CHUNK = 512  # rows per block of similarities (a 256 px image is 65,536 values)
MIN_BELOW_PERCENTILE = 5  # test images needed below the percentile for a stable threshold


@dataclass
class MemorizationReport:
    """Nearest training neighbours of generated images and the shares flagged as near-copies."""

    table: pd.DataFrame  # one row per generated image, see memorization_audit
    feature_threshold: float  # cosine distance
    pixel_threshold: float  # 1 - NCC
    percentile: float
    share_feature: float  # flagged in feature space
    share_pixel: float  # flagged in pixel space
    share_flagged: float  # flagged in either space
    n_fake: int
    n_train: int
    n_test: int
    extractor: str
    extractor_sha256: str | None
    warning: str | None = None

    def summary(self) -> dict[str, Any]:
        """Every field except the table (JSON-ready)."""
        return {name: value for name, value in vars(self).items() if name != "table"}


def _unit_features(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double(), dim=1)


def _unit_pixels(images: torch.Tensor) -> torch.Tensor:
    """Flattened, mean-centred, unit-norm images: their dot product is the NCC (any intensity scale)."""
    x = images.flatten(1).float()
    return F.normalize(x - x.mean(dim=1, keepdim=True), dim=1)  # a constant image gets NCC 0 with everything


def _nearest(query: torch.Tensor, reference: torch.Tensor,
             unit: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Highest similarity of each query row to the reference rows, and its index, in blocks."""
    best = torch.full((len(query),), -math.inf, dtype=torch.float64)
    index = torch.zeros(len(query), dtype=torch.long)
    for q in range(0, len(query), _CHUNK):
        rows = slice(q, q + _CHUNK)
        block_query = unit(query[rows])
        for r in range(0, len(reference), _CHUNK):
            similarity, position = (block_query @ unit(reference[r:r + _CHUNK]).T).max(dim=1)
            better = similarity.double() > best[rows]
            best[rows] = torch.where(better, similarity.double(), best[rows])
            index[rows] = torch.where(better, position + r, index[rows])
    return best, index


def _check_images(images: torch.Tensor, features: torch.Tensor, what: str) -> None:
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"{what} images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if len(features) != len(images):
        raise ValueError(f"{len(features)} {what} feature rows for {len(images)} {what} images")


def memorization_audit(fake_images: torch.Tensor, train_images: torch.Tensor, test_images: torch.Tensor,
                       fake_feats: Any, train_feats: Any, test_feats: Any, *, extractor: Extractor,
                       percentile: float = 1.0) -> MemorizationReport:
    """Flag generated images that are nearer to a training image than real held-out images ever are.

    Args:
        fake_images: (N_fake, C, H, W) generated images (float in [-1, 1] or uint8; NCC ignores the scale).
        train_images: (N_train, C, H, W) training images, same C, H, W.
        test_images: (N_test, C, H, W) real images not used for training (the calibration set).
        fake_feats: (N_fake, D) features of the generated images.
        train_feats: (N_train, D) features of the training images, same extractor.
        test_feats: (N_test, D) features of the test images.
        extractor: the extractor (or its ``describe()`` dict) recorded in the report.
        percentile: the thresholds are this percentile (0..100) of the test-to-train nearest distances.
    Returns:
        The :class:`MemorizationReport`; its table has per generated image: ``fake_index``,
        ``nearest_train_feature``, ``feature_distance``, ``nearest_train_pixel``, ``pixel_ncc``,
        ``pixel_distance``, ``flag_feature``, ``flag_pixel``, ``flagged``.
    Raises:
        ValueError: for empty sets, image shapes that differ, or features that do not match the images.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be between 0 and 100, got {percentile}")
    fake_feats, train_feats = _features(fake_feats, "generated"), _features(train_feats, "training")
    test_feats = _features(test_feats, "test")
    for images, features, what in ((fake_images, fake_feats, "generated"), (train_images, train_feats, "training"),
                                   (test_images, test_feats, "test")):
        _check_images(images, features, what)
    if not fake_images.shape[1:] == train_images.shape[1:] == test_images.shape[1:]:
        raise ValueError(f"pixel NCC needs images of one shape: generated {tuple(fake_images.shape[1:])}, training "
                         f"{tuple(train_images.shape[1:])}, test {tuple(test_images.shape[1:])}; resize them first")
    if not fake_feats.shape[1] == train_feats.shape[1] == test_feats.shape[1]:
        raise ValueError("generated, training and test features differ in width: use one extractor for all three")

    fake_cos, fake_feature_nn = _nearest(fake_feats, train_feats, _unit_features)
    fake_ncc, fake_pixel_nn = _nearest(fake_images, train_images, _unit_pixels)
    test_cos, _ = _nearest(test_feats, train_feats, _unit_features)
    test_ncc, _ = _nearest(test_images, train_images, _unit_pixels)
    feature_threshold = float(np.percentile((1 - test_cos).numpy(), percentile))
    pixel_threshold = float(np.percentile((1 - test_ncc).numpy(), percentile))

    table = pd.DataFrame({
        "fake_index": np.arange(len(fake_images)),
        "nearest_train_feature": fake_feature_nn.numpy(),
        "feature_distance": (1 - fake_cos).numpy(),
        "nearest_train_pixel": fake_pixel_nn.numpy(),
        "pixel_ncc": fake_ncc.numpy(),
        "pixel_distance": (1 - fake_ncc).numpy(),
    })
    table["flag_feature"] = table["feature_distance"] <= feature_threshold
    table["flag_pixel"] = table["pixel_distance"] <= pixel_threshold
    table["flagged"] = table["flag_feature"] | table["flag_pixel"]

    notes = []
    if len(test_images) * percentile / 100 < MIN_BELOW_PERCENTILE:
        notes.append(f"only {len(test_images)} test images: percentile {percentile:g} rests on fewer than "
                     f"{MIN_BELOW_PERCENTILE} of them, so the thresholds are unstable; use more test images or a "
                     f"higher percentile")
    if min(feature_threshold, pixel_threshold) < 1e-6:
        notes.append("a threshold is ~0: the test set holds copies of training images (see medgan_core.dedup), "
                     "so only exact copies can be flagged")
    for note in notes:
        warnings.warn(note, SmallSampleWarning, stacklevel=2)
    name, sha256 = extractor_identity(extractor)
    return MemorizationReport(
        table=table, feature_threshold=feature_threshold, pixel_threshold=pixel_threshold, percentile=percentile,
        share_feature=float(table["flag_feature"].mean()), share_pixel=float(table["flag_pixel"].mean()),
        share_flagged=float(table["flagged"].mean()), n_fake=len(fake_images), n_train=len(train_images),
        n_test=len(test_images), extractor=name, extractor_sha256=sha256, warning="; ".join(notes) or None)


def plot_memorization_gallery(report: MemorizationReport, fake_images: torch.Tensor, train_images: torch.Tensor,
                              n: int = 8, *, by: str = "feature", save_to: str | Path | None = None) -> Figure:
    """The generated images nearest to a training image, each beside that training image.

    Args:
        report: from :func:`memorization_audit` on these images.
        fake_images: the generated images of the audit.
        train_images: the training images of the audit.
        n: pairs shown (the closest ones).
        by: ``"feature"`` or ``"pixel"``: which distance ranks the pairs and picks the neighbour.
        save_to: also save the figure here as PNG.
    Returns:
        The figure: one row per pair (generated | nearest training image in the ``by`` space, with that
        space's distance), flagged images' titles in red.
    Raises:
        ValueError: for an unknown ``by`` or images that do not match the report.
    """
    from ..plotting import _finish, _new_figure  # imported late: matplotlib only when plotting

    if by not in ("feature", "pixel"):
        raise ValueError(f"by must be 'feature' or 'pixel', got {by!r}")
    if (len(fake_images), len(train_images)) != (report.n_fake, report.n_train):
        raise ValueError(f"the report covers {report.n_fake} generated and {report.n_train} training images, got "
                         f"{len(fake_images)} and {len(train_images)}")
    rows = report.table.sort_values(f"{by}_distance").head(n)
    fig, axes = _new_figure(len(rows), 2, figsize=(5, 2.4 * len(rows)))
    for (_, row), (fake_ax, train_ax) in zip(rows.iterrows(), zip(axes[::2], axes[1::2])):
        train_index = int(row[f"nearest_train_{by}"])
        colour = "red" if row["flagged"] else "black"
        fake_ax.imshow(picture_array(fake_images[int(row["fake_index"])]), cmap="gray", vmin=0, vmax=255)
        fake_ax.set_title(f"generated #{int(row['fake_index'])}", color=colour, fontsize=9)
        train_ax.imshow(picture_array(train_images[train_index]), cmap="gray", vmin=0, vmax=255)
        distance = f"feature d={row['feature_distance']:.3f}" if by == "feature" else f"NCC={row['pixel_ncc']:.3f}"
        train_ax.set_title(f"train #{train_index}\n{distance}", color=colour, fontsize=9)
        fake_ax.axis("off")
        train_ax.axis("off")
    fig.suptitle(f"Nearest training images ({by} space); red: flagged", fontsize=10)
    return _finish(fig, save_to)
