"""The built-in "demo" dataset: 2D slices of the MNI152 T1 template with procedural lesions.

It exists so that every notebook, test and benchmark runs offline with no download. The images come from the
MNI152 2009 T1 template that ``nilearn`` ships inside its wheel: one average brain, resliced along the three
axes, augmented (rotation, scale, intensity, contrast, noise) and given a drawn scalp/skull ring so slices look
like clinical T1 scans. Four classes are made by painting procedural lesions:

- ``glioma``: irregular infiltrative mass with a necrotic core and a dark oedema halo, off-midline;
- ``meningioma``: round, bright, well-circumscribed mass against the inner skull surface;
- ``pituitary``: small bright mass at the sella (midline, skull base), only on slices that cut it;
- ``notumor``: no lesion.

Every image ``<name>.png`` has its lesion mask ``<name>_mask.png`` beside it (0/255; empty for ``notumor``), so
image+mask models and segmentation checks run offline too (``DataConfig(masks=True)``).

THIS IS A TEMPLATE-DERIVED DEMO, NOT PATIENT DATA: it teaches the pipeline, not radiology. The folder layout
matches the real Kaggle sets (``Training/<class>/*.png``, ``Testing/<class>/*.png``).
"""
from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from .data import MASK_SUFFIX

DEMO_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
DEMO_VERSION = 3  # bump when the generated images change: it is part of the cache folder name
VIEWS = ("axial", "coronal", "sagittal")
VIEW_WEIGHTS = (0.5, 0.25, 0.25)
SELLA_VOXEL = (98, 138, 44)  # (x, y, z) of the pituitary fossa in the 1 mm template grid
SELLA_HALF_RANGE = 6  # slices within this many voxels of the sella show the pituitary mass
README = """MedGAN demo dataset (version {version}, seed {seed})

THIS IS A TEMPLATE-DERIVED DEMO, NOT PATIENT DATA.
Every image is a 2D slice of the MNI152 2009 T1 template (shipped with nilearn), augmented and given a drawn
scalp/skull ring; the lesions (glioma-like, meningioma-like, pituitary-like) are procedural drawings.
Use it to try the MedGAN pipeline offline, never to draw medical conclusions.
"""


def demo_root(cache_dir: Path, seed: int = 0) -> Path:
    """Folder of the demo set built with ``seed`` inside the cache folder."""
    return Path(cache_dir) / f"demo-v{DEMO_VERSION}-seed{seed}"


@functools.lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray]:
    """The 1 mm MNI152 T1 volume scaled to [0, 1] and its brain mask, both (x, y, z) = (197, 233, 189)."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    volume = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).get_fdata(), dtype=bool) | (volume > 0.05)
    return volume / volume.max(), mask


@functools.lru_cache(maxsize=None)
def _slice(view: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A slice in viewing orientation (axial: nose up; coronal/sagittal: top of the head up): (H, W) image, mask."""
    volume, mask = _template()
    take = {"axial": lambda a: a[:, :, index], "coronal": lambda a: a[:, index, :],
            "sagittal": lambda a: a[index, :, :]}[view]
    image, brain = np.rot90(take(volume)), np.rot90(take(mask))
    if view == "sagittal":  # face to the viewer's left, as radiologists display sagittal slices
        image, brain = image[:, ::-1], brain[:, ::-1]
    image, brain = image.copy(), brain.copy()
    image.flags.writeable = brain.flags.writeable = False  # cached: lesions and augmentations work on copies
    return image, brain


@functools.lru_cache(maxsize=None)
def _geometry(view: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice distance maps, computed once: skull interior, distance outside it, depth inside the brain."""
    _, brain = _slice(view, index)
    interior = _skull_interior(brain)
    return interior, ndimage.distance_transform_edt(~interior), ndimage.distance_transform_edt(brain)


def _sella_in_slice(view: str) -> tuple[int, int]:
    """(row, col) of the sella in a slice of ``view``, in the rotated orientation of :func:`_slice`."""
    volume, _ = _template()
    x, y, z = SELLA_VOXEL
    nx, ny, nz = volume.shape
    # rot90 maps array (i, j) of an (A, B) slice to (B - 1 - j, i); sagittal slices are then mirrored
    return {"axial": (ny - 1 - y, x), "coronal": (nz - 1 - z, x), "sagittal": (nz - 1 - z, ny - 1 - y)}[view]


@functools.lru_cache(maxsize=None)
def _slice_range(view: str) -> tuple[int, int]:
    """Slices along ``view`` whose brain area is at least 35% of the largest (no near-empty edge slices)."""
    _, mask = _template()
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
    area = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    keep = np.flatnonzero(area >= 0.35 * area.max())
    return int(keep[0]), int(keep[-1])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise field (H, W); drawn at 1/4 size and upsampled (4x fewer pixels)."""
    small = (shape[0] // 4 + 2, shape[1] // 4 + 2)
    field = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma / 4)
    field = np.asarray(Image.fromarray(field).resize((small[1] * 4, small[0] * 4), Image.BILINEAR))[:shape[0], :shape[1]]
    return field / (field.std() + 1e-8)


def _skull_interior(brain: np.ndarray, radius: float = 14.0) -> np.ndarray:
    """The brain mask closed by a disc of ``radius`` and hole-filled: the smooth inner surface of the skull."""
    dilated = ndimage.distance_transform_edt(~brain) <= radius
    return ndimage.binary_fill_holes(ndimage.distance_transform_edt(dilated) > radius) | brain


def _add_head(image: np.ndarray, brain: np.ndarray, interior: np.ndarray, outside: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw CSF, skull and scalp around the brain (``outside``: distance to the skull's inner surface, mm).

    Returns:
        The image and the head mask, both (H, W).
    """
    wobble = 1.0 + 0.25 * _smooth_noise(rng, image.shape, 12)
    csf, bone, scalp = 1.5 * wobble, (1.5 + rng.uniform(4, 6)) * wobble, (5.5 + rng.uniform(4, 7)) * wobble
    head = image.copy()
    head[interior & ~brain] = 0.04  # CSF between brain and skull
    head[(outside > 0) & (outside <= csf)] = 0.04  # dura
    head[(outside > csf) & (outside <= bone)] = 0.02  # cortical bone is dark on T1
    scalp_band = (outside > bone) & (outside <= scalp)
    head[scalp_band] = 0.55 + 0.15 * np.clip(_smooth_noise(rng, image.shape, 4)[scalp_band], -2, 2)
    return head, outside <= scalp


def _disc(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    """Signed distance (in radii) from a circle: < 1 inside. (H, W)."""
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return np.hypot(rows - center[0], cols - center[1]) / radius


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(candidates)
    k = rng.integers(len(rows))
    return int(rows[k]), int(cols[k])


def _glioma(image, brain, depth, view, rng):
    """Irregular mass with a bright rim, dark necrotic core and dark oedema, inside one hemisphere."""
    midline = image.shape[1] / 2
    cols = np.arange(image.shape[1])[None, :]
    off_midline = np.abs(cols - midline) > 12 if view != "sagittal" else np.ones_like(brain)
    center = _pick(rng, (depth > 14) & off_midline)
    radius = rng.uniform(9, 15)
    shape_noise = 0.35 * _smooth_noise(rng, image.shape, 4)
    distance = _disc(image.shape, center, radius) + shape_noise  # irregular outline
    tumour, oedema = (distance < 1) & brain, (distance < 1.7) & brain
    core = distance < rng.uniform(0.4, 0.6)
    texture = 0.08 * _smooth_noise(rng, image.shape, 1.5)
    out = image.copy()
    out[oedema] *= 0.72
    out[tumour] = np.clip(0.85 + texture[tumour], 0, 1)
    out[core & tumour] = np.clip(0.25 + texture[core & tumour], 0, 1)
    return out, tumour


def _meningioma(image, brain, depth, view, rng):
    """Round, homogeneous, bright mass based on the inner skull surface."""
    radius = rng.uniform(8, 14)
    edge_point = _pick(rng, (depth > 1) & (depth < 3))
    # move the centre slightly inwards so the mass bulges from the skull into the brain
    row, col = edge_point
    window = depth[max(row - 4, 0):row + 5, max(col - 4, 0):col + 5]  # depth grows inwards
    gradient = np.array([g.mean() for g in np.gradient(window)])
    inward = gradient / (np.linalg.norm(gradient) + 1e-8)
    center = (edge_point[0] + inward[0] * radius * 0.5, edge_point[1] + inward[1] * radius * 0.5)
    distance = _disc(image.shape, center, radius)
    mass = distance < 1
    out = image.copy()
    out[mass] = 0.9 + 0.03 * _smooth_noise(rng, image.shape, 3)[mass]
    rim = (distance >= 1) & (distance < 1.15) & brain
    out[rim] *= 0.8  # thin CSF cleft around an extra-axial mass
    return out, mass


def _pituitary(image, brain, depth, view, rng):
    """Small bright round mass at the sella."""
    row, col = _sella_in_slice(view)
    center = (row + rng.uniform(-2, 2), col + rng.uniform(-2, 2))
    distance = _disc(image.shape, center, rng.uniform(7, 11)) + 0.1 * _smooth_noise(rng, image.shape, 3)
    out = image.copy()
    out[distance < 1] = 0.88
    return out, distance < 1


LESIONS = {"glioma": _glioma, "meningioma": _meningioma, "pituitary": _pituitary}


def _augment(image: np.ndarray, head: np.ndarray, lesion: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation (+-10 deg), scale (0.9-1.1), gain, gamma and noise; crop a square around the head.

    The lesion mask gets the same rotation, scale and crop (nearest neighbour). Returns (image, lesion mask)."""
    angle, scale = np.deg2rad(rng.uniform(-10, 10)), rng.uniform(0.9, 1.1)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    matrix = np.array([[cos, -sin], [sin, cos]])
    center = np.array(image.shape) / 2
    offset = center - matrix @ center
    image = ndimage.affine_transform(image, matrix, offset, order=1)
    head = ndimage.affine_transform(head.astype(np.float32), matrix, offset, order=0) > 0.5
    lesion = ndimage.affine_transform(lesion.astype(np.float32), matrix, offset, order=0) > 0.5
    rows, cols = np.nonzero(head)
    side = int(max(np.ptp(rows), np.ptp(cols)) * 1.12) + 1
    top, left = (rows.min() + rows.max() - side) // 2, (cols.min() + cols.max() - side) // 2
    padded = np.pad(image, side)
    crop = padded[top + side:top + 2 * side, left + side:left + 2 * side]  # (side, side)
    inside = np.pad(head, side)[top + side:top + 2 * side, left + side:left + 2 * side]
    lesion = np.pad(lesion, side)[top + side:top + 2 * side, left + side:left + 2 * side]
    gain, gamma = rng.uniform(0.85, 1.15), rng.uniform(0.75, 1.3)
    crop = np.clip(crop, 0, 1) ** gamma * gain
    noise = rng.uniform(0.005, 0.025)
    crop = np.hypot(crop + noise * rng.standard_normal(crop.shape), noise * rng.standard_normal(crop.shape))
    crop[~inside] = 0  # Rician noise inside the head only: the background stays black
    return np.clip(crop, 0, 1), lesion


def render_demo_image(label: str, rng: np.random.Generator, image_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One demo image of class ``label`` and its lesion mask.

    Args:
        label: one of ``DEMO_CLASSES``.
        rng: random source (view, slice, lesion and augmentation are all drawn from it).
        image_size: output side in pixels.
    Returns:
        ``(image, mask)``: uint8 arrays (image_size, image_size); the mask is 0 or 255 (all 0 for ``notumor``).
    """
    view = VIEWS[rng.choice(3, p=VIEW_WEIGHTS)]
    low, high = _slice_range(view)
    if label == "pituitary":  # only slices that cut the sella
        sella = SELLA_VOXEL[{"axial": 2, "coronal": 1, "sagittal": 0}[view]]
        low, high = sella - SELLA_HALF_RANGE, sella + SELLA_HALF_RANGE
    index = int(rng.integers(low, high + 1))
    image, brain = _slice(view, index)
    interior, outside, depth = _geometry(view, index)
    image, head = _add_head(image, brain, interior, outside, rng)
    lesion = np.zeros(image.shape, dtype=bool)
    if label in LESIONS:  # after the head: a pituitary mass sits below the brain, in the skull base
        image, lesion = LESIONS[label](image, brain, depth, view, rng)
    crop, lesion = _augment(image, head, lesion, rng)
    resized = Image.fromarray((crop * 255).astype(np.uint8)).resize((image_size, image_size), Image.LANCZOS)
    # area average + majority vote: the mask stays aligned with the antialiased image
    mask = Image.fromarray(lesion.astype(np.uint8) * 255).resize((image_size, image_size), Image.BOX)
    return np.asarray(resized), np.where(np.asarray(mask) > 127, 255, 0).astype(np.uint8)


def build_demo_dataset(root: str | Path, *, seed: int = 0, n_train_per_class: int = 150,
                       n_test_per_class: int = 30, image_size: int = 128) -> Path:
    """Write the demo set into ``root`` (``Training/<class>/*.png``, ``Testing/<class>/*.png``, each with its
    ``*_mask.png``, and ``README.txt``).

    Deterministic from ``seed``. Built in a temporary sibling folder and renamed into place, so an interrupted
    build never leaves a folder that looks complete; an existing complete build with the same parameters is
    returned as is.

    Args:
        root: destination folder.
        seed: random seed (same seed, same images).
        n_train_per_class: training images per class.
        n_test_per_class: test images per class.
        image_size: side of the square PNGs.
    Returns:
        ``root``.
    """
    root = Path(root)
    params = {"version": DEMO_VERSION, "seed": seed, "n_train_per_class": n_train_per_class,
              "n_test_per_class": n_test_per_class, "image_size": image_size}

    def write(staging: Path) -> None:
        for split, count in (("Training", n_train_per_class), ("Testing", n_test_per_class)):
            for class_index, label in enumerate(DEMO_CLASSES):
                folder = staging / split / label
                folder.mkdir(parents=True)
                # one stream per (split, class): adding a class or changing a count leaves the others unchanged
                rng = np.random.default_rng([seed, class_index, split == "Testing"])
                for index in range(count):
                    image, mask = render_demo_image(label, rng, image_size)
                    Image.fromarray(image).save(folder / f"{label}_{index:05d}.png")
                    Image.fromarray(mask).save(folder / f"{label}_{index:05d}{MASK_SUFFIX}.png")
        (staging / "README.txt").write_text(README.format(version=DEMO_VERSION, seed=seed))

    try:
        return _build_once(root, params, write)
    finally:
        _slice.cache_clear()  # ~200 MB of per-slice arrays: free them for the training that follows
        _geometry.cache_clear()


def _build_once(root: Path, params: dict, write: Callable[[Path], None]) -> Path:
    """``root`` as ``write`` fills a staging folder, unless a complete build with ``params`` is already there.

    The staging folder is renamed into place only when ``write`` finished (its ``.complete`` marker records
    ``params``), so an interrupted build never leaves a folder that looks complete.
    """
    marker = root / ".complete"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(staging)
        (staging / ".complete").write_text(json.dumps(params))
        _move_into_place(staging, root, params)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return root


def _move_into_place(staging: Path, root: Path, params: dict) -> None:
    """Rename ``staging`` to ``root``; an outdated build there is swapped out, never deleted while in place."""
    try:
        staging.rename(root)  # atomic; also replaces an empty folder
        return
    except OSError:
        marker = root / ".complete"
        if marker.is_file() and json.loads(marker.read_text()) == params:
            return  # a concurrent build of the same set finished first
    outdated = Path(tempfile.mkdtemp(prefix=f".{root.name}.old.", dir=root.parent))
    root.rename(outdated / root.name)
    staging.rename(root)
    shutil.rmtree(outdated, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ demo volumes

DEMO_VOLUMES_VERSION = 1  # bump when the generated volumes change


def demo_volumes_root(cache_dir: Path, seed: int = 0) -> Path:
    """Folder of the demo volume set built with ``seed`` inside the cache folder."""
    return Path(cache_dir) / f"demo-volumes-v{DEMO_VOLUMES_VERSION}-seed{seed}"


def build_demo_volumes(root: str | Path, *, seed: int = 0, n_per_class: int = 5) -> Path:
    """Write a small volume set: ``<class>/<subject>/{T1,seg,brainmask}.nii.gz`` for classes glioma and notumor.

    Every subject is the 2 mm MNI152 template with its own gain, bias field, noise and small shift; glioma subjects
    get a bright spherical-ish mass (their ``seg`` marks it; notumor ``seg`` volumes are empty). Half the subjects
    are stored in LPS voxel order (x and y reversed, as DICOM-derived files often are), so the reorientation to RAS
    is exercised offline. Deterministic from ``seed``; built in a staging folder and renamed into place.
    THIS IS A TEMPLATE-DERIVED DEMO, NOT PATIENT DATA.

    Args:
        root: destination folder.
        seed: random seed.
        n_per_class: subjects per class.
    Returns:
        ``root``.
    """
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    root = Path(root)
    params = {"version": DEMO_VOLUMES_VERSION, "seed": seed, "n_per_class": n_per_class}

    def write(staging: Path) -> None:
        template = load_mni152_template(resolution=2)
        volume = np.asarray(template.get_fdata(), np.float32)  # (x, y, z) RAS+, 2 mm
        brain = np.asarray(load_mni152_brain_mask(resolution=2).get_fdata()) > 0.5
        volume /= volume.max()
        for class_index, label in enumerate(("glioma", "notumor")):
            rng = np.random.default_rng([seed, class_index, 7])
            for n in range(n_per_class):
                image, lesion = _demo_subject(volume, brain, rng, with_lesion=label == "glioma")
                affine, stored = template.affine.copy(), [image, lesion.astype(np.uint8), brain.astype(np.uint8)]
                if n % 2:  # LPS storage: same anatomy, x and y reversed in the array
                    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
                    flip[:2, 3] = np.array(volume.shape[:2]) - 1
                    affine = affine @ flip
                    stored = [array[::-1, ::-1, :] for array in stored]
                folder = staging / label / f"{label}-{n:02d}"
                folder.mkdir(parents=True)
                for name, array in zip(("T1", "seg", "brainmask"), stored):
                    nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), folder / f"{name}.nii.gz")
        (staging / "README.txt").write_text("MedGAN demo volumes: the MNI152 2009 template (shipped with nilearn) "
                                            "with procedural lesions. THIS IS A TEMPLATE-DERIVED DEMO, NOT PATIENT "
                                            "DATA.\n")

    return _build_once(root, params, write)


def _demo_subject(volume: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                  with_lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """One subject: (int16 T1 volume 0..1000, boolean lesion volume), both (x, y, z)."""
    shift = rng.integers(-2, 3, size=3)
    image = np.roll(volume, shift, axis=(0, 1, 2))
    inside = np.roll(brain, shift, axis=(0, 1, 2))
    bias = ndimage.zoom(rng.uniform(0.85, 1.15, size=(3, 3, 3)), np.array(volume.shape) / 3, order=1)
    image = image * bias[:volume.shape[0], :volume.shape[1], :volume.shape[2]] * rng.uniform(0.8, 1.2)
    lesion = np.zeros(volume.shape, bool)
    if with_lesion:
        depth = ndimage.distance_transform_edt(inside)
        candidates = np.argwhere(depth > 8)
        centre = candidates[rng.integers(len(candidates))]
        grid = np.indices(volume.shape).transpose(1, 2, 3, 0) - centre  # (x, y, z, 3) offsets in voxels
        radius = rng.uniform(4, 7) * (1 + 0.15 * rng.standard_normal(3))
        lesion = ((grid / radius) ** 2).sum(-1) < 1
        image = np.where(lesion, 0.95 * image.max(), image)
    image = np.abs(image + rng.normal(0, 0.01, volume.shape)) * inside + 0.005 * rng.random(volume.shape) * ~inside
    return np.round(image / max(image.max(), 1e-6) * 1000).astype(np.int16), lesion
