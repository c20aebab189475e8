"""The README's leakage table: what links each shared dataset's test split to its training split.

    .venv/bin/python benchmarks/leakage_table.py            # every set under ../shared/data that is present

For each set: the split the loader uses (split folders, or the seeded carve: by subject where subject ids exist),
subjects on both sides, and test images with a near-twin in training (perceptual hash, <= 6 of 64 bits differ, at
64 px). The tumour set's real train/test pair is checked as shipped: the 5,229 Kaggle training images against the
200 test images of ``brain_tumor_mri_small``. Sets that are absent are listed as skipped.
"""
from __future__ import annotations

from pathlib import Path

from medgan_core.config import DataConfig
from medgan_core.data import load_images
from medgan_core.dedup import DEFAULT_MAX_DISTANCE, leakage_audit

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# (row name, training spec, test spec, extra DataConfig settings, how the split is made)
SETS = [
    ("brain_tumor_mri_small", "brain_tumor_mri_small", None, {}, "Training/ vs Testing/ folders"),
    ("brain_tumor_mri_train vs brain_tumor_mri_small Testing", "brain_tumor_mri_train",
     "brain_tumor_mri_small", {}, "the Kaggle Training images vs its Testing images"),
    ("alzheimer_small", "alzheimer_small", None, {}, "train/ vs test/ folders"),
    ("brain_tumor_yes_no", "brain_tumor_yes_no", None, {}, "seeded 20 % carve per class (by slice: no ids)"),
    ("brain_tumor_masks", "brain_tumor_masks", None, {}, "seeded 20 % carve per class (by slice: no ids)"),
    ("brats_volumes (FLAIR, axial 30-70 %)", "brats_volumes", None, {"modality": "flair"},
     "seeded 20 % carve by subject"),
]


def main() -> None:
    print("| dataset | split | train / test images | subjects train / test / on both sides | test images with a "
          f"near-twin in training (pHash <= {DEFAULT_MAX_DISTANCE} bits) |")
    print("|---|---|---:|---:|---:|")
    for name, train_spec, test_spec, extra, how in SETS:
        if not (SHARED / train_spec).is_dir() or (test_spec and not (SHARED / test_spec).is_dir()):
            print(f"| {name} | skipped: not in {SHARED} | | | |")
            continue
        train = load_images(DataConfig(dataset=str(SHARED / train_spec), image_size=64, **extra))
        test_config = DataConfig(dataset=str(SHARED / (test_spec or train_spec)), image_size=64, split="test", **extra)
        test = load_images(test_config)
        audit = leakage_audit(train, test)
        twins = audit.near_duplicates
        subjects = (f"{audit.n_train_subjects} / {audit.n_test_subjects} / {len(audit.shared_subjects)}"
                    if audit.n_test_subjects is not None else "no subject ids")
        print(f"| {name} | {how} | {len(train)} / {len(test)} | {subjects} | "
              f"{len(twins.test_indices)} ({100 * twins.share:.1f} %) |")


if __name__ == "__main__":
    main()
