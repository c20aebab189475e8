"""Settings as dataclasses: what data to read and how to train.

Model architecture settings live next to each model (``models/<name>.py``); these two
dataclasses hold everything else, and both round-trip through JSON so checkpoints can
describe the run that produced them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class DataConfig:
    """Which images to read and how to turn them into training tensors."""

    dataset: str = "demo"  # "demo", "kaggle:<shortcut or owner/name[/versions/N]>", or a folder path
    image_size: int = 64  # square side the images are resized + padded to: 64, 128 or 256
    channels: int = 1  # 1 = grayscale, 3 = RGB (grayscale replicated when the source is gray)
    split: str = "train"  # "train" or "test"
    max_per_class: int | None = None  # cap per class for tiny runs (deterministic subset)
    test_fraction: float = 0.2  # held out when a folder has no Training/Testing split
    seed: int = 0  # drives the split, subsets and the demo set
    cache_dir: str | None = None  # decoded-tensor cache; default $MEDGAN_CACHE or ~/.cache/medgan
    class_order: tuple[str, ...] | None = None  # label order (e.g. disease stages); None: a known order, else A-Z
    subject_pattern: str | None = None  # "adni", "oasis" or a regex with (?P<subject>...) on file names: the
                                        # held-out test split is then drawn by subject, never by slice
    masks: bool = False  # also read each image's segmentation mask: <name>_mask.<ext> next to it, or the same path
                         # in a masks/ folder beside images/; binarised, nearest-neighbour resized, flipped with its image
    missing_masks: str = "error"  # with masks: images that have none raise "error" (listed) or are left out ("skip")
    # Volumes (NIfTI/MGH files or DICOM series; see medgan_core.volumes): how they become slices
    modality: str | tuple[str, ...] | None = None  # file-name regex of the image volume in a subject folder
                                                   # (e.g. "flair"); a tuple stacks modalities as channels
    slice_axis: str = "axial"  # "axial", "coronal" or "sagittal", from the affine (volumes are reoriented to RAS)
    slice_band: tuple[float, float] = (0.3, 0.7)  # slices within this share of the brain's extent along the axis
    slice_every: int = 1  # every k-th slice of the band
    slices_with_label: bool = False  # only slices where the label volume is non-zero (within the band)
    intensity: str = "percentile"  # per volume, inside the brain: "percentile" (0.5-99.5 % -> 0..255) or
                                   # "zscore" (mean +- 3 SD -> 0..255); the background stays 0
    mask_labels: tuple[int, ...] | None = None  # label values that make the mask (None: every value > 0)
    labels_csv: str | None = None  # one row per subject (id, class) instead of class folders; ids are matched
                                   # as whole tokens of the volume paths
    csv_columns: tuple[str, str] = ("subject", "class")  # the id and class columns of labels_csv


@dataclass
class TrainConfig:
    """How the one training loop runs. Every field is saved in each checkpoint."""

    epochs: int = 10  # passes over the training set (ignored if max_steps is set; growing models follow their plan)
    max_steps: int | None = None  # generator updates in total; overrides epochs
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    optimizer: str = "adam"  # "adam" or "rmsprop"
    n_critic: int = 1  # discriminator updates per generator update
    ema_kimg: float = 10.0  # half-life of G's EMA in thousands of real images (stylegan2-ada); 0 disables the EMA
    ema_rampup: float | None = 0.05  # half-life <= this share of the images seen (in the current growth stage); None: off
    balanced: bool = False  # class-balanced sampling (WeightedRandomSampler)
    hflip: bool = False  # random horizontal flips
    seed: int = 0
    sample_every: int = 100  # steps between fixed-noise sample grids
    n_samples: int = 64  # images in each sample grid
    log_every: int = 10  # steps between history rows
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk
    max_minutes: float | None = None  # wall-clock budget: stop cleanly and checkpoint before it
    device: str = "auto"  # "auto" picks CUDA when present
    amp: bool | str = True  # True: float16 autocast + GradScaler on CUDA, off on CPU; "bf16": bfloat16 on any device
                            # (the same code path on a CPU, which is how the tests cover it); False: off
    channels_last: bool = True
    progress: bool = True  # tqdm progress bar
    loss_options: dict[str, Any] = field(default_factory=dict)  # options of the model's loss recipe (e.g. gp_lambda)
    augment: str = "none"  # "none", "diffaugment" or "ada": what D sees of real and fake images (medgan_core.augment)
    augment_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"target": 0.6, "ada_kimg": 100} for "ada"


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict (tuples become lists).

    Args:
        config: any dataclass instance.
    Returns:
        A plain dict.
    """
    return json_ready(dataclasses.asdict(config))


def json_ready(value: Any) -> Any:
    """Recursively make ``value`` strict JSON: tuples as lists, numpy scalars as Python numbers, NaN as null."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def from_dict(cls: type, values: dict[str, Any]):
    """Build dataclass ``cls`` from a dict, restoring tuple fields and rejecting unknown keys.

    Args:
        cls: the dataclass type.
        values: field values, e.g. read from JSON.
    Returns:
        An instance of ``cls``.
    Raises:
        ValueError: naming unknown fields, so a checkpoint for another model fails clearly.
    """
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; valid fields: {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        default = names[key].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
