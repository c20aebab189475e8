"""Sampling, grids, interpolation and synthetic-dataset export."""
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from medgan_core.sampling import (export_dataset, fixed_labels, interpolate, make_grid, resolve_labels, sample,
                                  save_grid)


def test_sample_is_reproducible_and_independent_of_batch_size(unconditional):
    a = sample(unconditional, 10, seed=3, batch_size=4)
    b = sample(unconditional, 10, seed=3, batch_size=10)
    assert a.shape == (10, 1, 32, 32)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, sample(unconditional, 10, seed=4))


def test_labels_for_conditional_and_unconditional_generators(conditional, unconditional):
    assert resolve_labels(conditional, 6, None).tolist() == [0, 0, 1, 1, 2, 2]
    assert resolve_labels(conditional, 3, 2).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        sample(conditional, 2, labels=[0, 3])
    with pytest.raises(ValueError, match="one label per sample"):
        sample(conditional, 3, labels=[0, 1])
    with pytest.raises(ValueError, match="unconditional"):
        sample(unconditional, 2, labels=1)
    with pytest.raises(ValueError, match="unconditional"):
        interpolate(unconditional, 0, 1, label=1)
    assert fixed_labels(64, 4).bincount().tolist() == [16, 16, 16, 16]


def test_interpolation_ends_at_the_two_seeds(conditional):
    strip = interpolate(conditional, 5, 9, steps=5, label=1)
    assert strip.shape == (5, 1, 32, 32)
    torch.testing.assert_close(strip[0], sample(conditional, 1, labels=1, seed=5)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(strip[-1], sample(conditional, 1, labels=1, seed=9)[0], atol=1e-5, rtol=0)


def test_grid_layout_and_png(tmp_path):
    images = torch.linspace(-1, 1, 5)[:, None, None, None].expand(5, 3, 4, 6)
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (3 * 5 + 1, 2 * 7 + 1, 3) and grid.dtype == np.uint8
    assert (grid[1, 1, 0], grid[1 + 5, 1 + 7, 0], grid[1 + 10, 1, 0]) == (0, 191, 255)  # tiles 0, 3 and 4
    path = save_grid(images[:, :1], tmp_path / "g.png", nrow=5)
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (5 * (6 + 2) + 2, 4 + 2 * 2)  # default padding 2


def test_export_writes_the_real_layout_a_manifest_and_a_zip(conditional, tmp_path):
    out = export_dataset(conditional, tmp_path / "synthetic", 3, class_names=["CN", "MCI", "AD"], seed=7,
                         model_name="cdcgan", checkpoint="runs/x/step-00000010.safetensors")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [f"Training/{c}/{c}_0000{i}.png" for c in ["AD", "CN", "MCI"] for i in range(3)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "cdcgan" and manifest["seed"] == 7 and manifest["counts"]["MCI"] == 3
    assert manifest["seeds"] == {"CN": 7, "MCI": 8, "AD": 9} and "created" in manifest
    # the exported pixels are the samples of that class and seed
    expected = sample(conditional, 3, labels=2, seed=9)
    saved = np.asarray(Image.open(out / "Training/AD/AD_00001.png"))
    assert np.abs(saved.astype(int) - ((expected[1, 0].numpy() + 1) * 127.5).round().astype(int)).max() <= 1
    with zipfile.ZipFile(out.with_suffix(".zip")) as archive:
        assert "Training/CN/CN_00000.png" in archive.namelist() and "manifest.json" in archive.namelist()
    with pytest.raises(FileExistsError, match="not empty"):
        export_dataset(conditional, out, 1)
    assert export_dataset(conditional, out, 1, class_names=["CN", "MCI", "AD"], replace=True) == out  # resumed run
    assert sorted(p.name for p in out.rglob("*.png")) == ["AD_00000.png", "CN_00000.png", "MCI_00000.png"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    with zipfile.ZipFile(out.with_suffix(".zip")) as archive:
        assert "Training/CN/CN_00001.png" not in archive.namelist()


def test_unconditional_export_goes_to_one_folder(unconditional, tmp_path):
    out = export_dataset(unconditional, tmp_path / "s", 2, make_zip=False)
    assert sorted(p.name for p in (out / "Training" / "synthetic").iterdir()) == ["synthetic_00000.png",
                                                                                  "synthetic_00001.png"]
    assert not out.with_suffix(".zip").exists()


@pytest.fixture(scope="module")
def stylegan2():
    """A tiny, untrained StyleGAN2 generator (32 px) with a non-zero truncation centre."""
    from medgan_core.registry import build_model

    torch.manual_seed(0)
    G = build_model("stylegan2", image_size=32, z_dim=8, w_dim=8, channel_base=128, channel_max=8)[0]
    G.w_avg.normal_()
    return G.eval()


def test_truncation_psi_zero_gives_the_average_image_and_is_refused_without_a_mapping(stylegan2, unconditional):
    images = sample(stylegan2, 3, seed=0, truncation_psi=0.0)
    torch.testing.assert_close(images[0], images[2])
    assert not torch.allclose(sample(stylegan2, 3, seed=0)[0], sample(stylegan2, 3, seed=0)[2])
    with pytest.raises(ValueError, match="truncation_psi=0.5 needs a generator with a mapping network"):
        sample(unconditional, 2, truncation_psi=0.5)


def test_style_mixing_grid_keeps_the_row_and_column_images(stylegan2):
    from medgan_core.sampling import style_mix

    grid = style_mix(stylegan2, row_seeds=[0, 1], col_seeds=[5, 6, 7], cutoff=stylegan2.num_ws)
    assert grid.shape == (3 * 4, 1, 32, 32)  # (1 + rows) x (1 + columns)
    assert torch.equal(grid[0], torch.full_like(grid[0], -1.0))  # black corner
    column_images = torch.cat([sample(stylegan2, 1, seed=seed) for seed in (5, 6, 7)])
    torch.testing.assert_close(grid[1:4], column_images)  # the top row is the columns' own images
    # cutoff = num_ws keeps every style of the row image: each mix equals its row image
    torch.testing.assert_close(grid[5:8], grid[4:5].expand(3, -1, -1, -1))
    torch.testing.assert_close(grid[9:12], grid[8:9].expand(3, -1, -1, -1))
    # cutoff = 0 takes every style from the column: each mix equals its column image
    grid = style_mix(stylegan2, row_seeds=[0], col_seeds=[5, 6], cutoff=0)
    torch.testing.assert_close(grid[4:6], grid[1:3])
    with pytest.raises(ValueError, match="cutoff must be in"):
        style_mix(stylegan2, [0], [1], cutoff=stylegan2.num_ws + 1)


def test_export_records_the_truncation(stylegan2, tmp_path):
    out = export_dataset(stylegan2, tmp_path / "synthetic", 2, seed=0, truncation_psi=0.7, make_zip=False)
    assert json.loads((out / "manifest.json").read_text())["truncation_psi"] == 0.7
