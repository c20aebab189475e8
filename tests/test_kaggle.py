"""Kaggle: the offline-install bundle, one kernel folder per notebook, and the notebooks' setup cell."""
import json

import nbformat
import pytest

from medgan_core.batch import main
from medgan_core.kaggle import KERNEL_NOTEBOOKS, slugify, write_bundle, write_kernels

KERNEL_FIELDS = {"id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
                 "enable_internet", "dataset_sources", "competition_sources", "kernel_sources"}


def test_kernel_folders_hold_the_notebook_and_the_metadata_the_kaggle_cli_needs(tmp_path):
    folders = write_kernels(tmp_path, "alice", data="alice/brain-mri")
    assert [f.name for f in folders] == list(KERNEL_NOTEBOOKS)
    for folder in folders:
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert KERNEL_FIELDS <= set(meta)
        assert meta["id"] == f"alice/{slugify(meta['title'])}" and 5 <= len(meta["title"]) <= 50
        assert (meta["language"], meta["kernel_type"], meta["enable_gpu"], meta["enable_internet"]) == (
            "python", "notebook", True, False)
        assert meta["dataset_sources"] == ["alice/medgan-core-bundle", "alice/brain-mri"]
        notebook = nbformat.read(folder / meta["code_file"], as_version=4)
        nbformat.validate(notebook)
        tags = [cell.metadata.get("tags", []) for cell in notebook.cells]
        injected = tags.index(["injected-parameters"])
        assert "parameters" in tags[injected - 1]
        assert "dataset = '/kaggle/input/brain-mri'" in notebook.cells[injected].source


def test_bad_kaggle_ids_fail_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="owner must be your Kaggle user name"):
        write_kernels(tmp_path, "al ice")
    with pytest.raises(ValueError, match="a Kaggle dataset id is 'owner/slug'"):
        write_kernels(tmp_path, "alice", data="brain-mri")
    with pytest.raises(ValueError, match="no notebook '07_x'"):
        write_kernels(tmp_path, "alice", notebooks=("07_x",))
    assert main(["kaggle-kernels", "--out", str(tmp_path / "k"), "--owner", "bob", "--notebook", "01_dcgan",
                 "--no-gpu"]) == 0
    assert json.loads((tmp_path / "k" / "01_dcgan" / "kernel-metadata.json").read_text())["enable_gpu"] is False


@pytest.mark.slow  # builds the wheel
def test_the_bundle_holds_the_wheel_and_the_dataset_metadata(tmp_path):
    folder = write_bundle(tmp_path / "bundle", "alice", download=False)
    wheels = [p.name for p in folder.glob("*.whl")]
    assert len(wheels) == 1 and wheels[0].startswith("medgan_core-")
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/medgan-core-bundle" and meta["title"] and meta["licenses"] == [{"name": "MIT"}]
    assert wheels[0] in (folder / "README.md").read_text()


def test_every_notebook_installs_from_an_attached_bundle_or_a_given_source_and_nothing_else():
    from medgan_core.batch import NOTEBOOK_DIR

    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        setup = next(cell.source for cell in nbformat.read(path, as_version=4).cells
                     if "find_spec(\"medgan_core\")" in cell.source)
        assert '"--no-index", "--find-links"' in setup and "medgan_core-*.whl" in setup, path.name
        assert "http" not in setup and "git+" not in setup, path.name  # no placeholder URL
