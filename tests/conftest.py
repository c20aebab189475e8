"""Shared pytest fixtures.

Environment: offline hub, smoke mode, temporary cache and run folders (see below).
Data fixtures: a small image folder full of every kind of awkward file the loader must survive, and the real
MRI sets in ``../shared/data`` when that folder exists next to the repository.
"""
from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Set before any test (and inherited by nbval/papermill kernels): no hub retries, smoke-sized notebooks,
# and caches/runs in a temporary folder instead of ~/.cache and ./runs.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="medgan-tests-"))
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MEDGAN_SMOKE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
# One intra-op thread for the tests' tiny models (here and in notebook kernels and workers): with two, a tiny
# StyleGAN2 step took 10-30x longer whenever the other core was busy (threads waiting on each other).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MEDGAN_CACHE", str(_SESSION_TMP / "cache"))
os.environ.setdefault("MEDGAN_RUNS", str(_SESSION_TMP / "runs"))


@dataclass
class MessyDataset:
    """A ``root/Training/<class>/`` dataset full of awkward files; names are relative to ``root/Training``."""

    root: Path
    readable: set[str]
    unreadable: set[str]
    ignored: set[str]  # hidden and non-image files the loader must not even try


def _write_messy_dataset(root: Path) -> MessyDataset:
    rng = np.random.default_rng(0)
    gray = np.tile(np.linspace(0, 255, 30), (20, 1)).astype(np.uint8)  # (20, 30) ramp
    colour = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgba = np.dstack([colour, np.full((20, 30), 128, np.uint8)])
    odd = root / "Training" / "odd"
    plain = root / "Training" / "plain"
    odd.mkdir(parents=True)
    plain.mkdir()

    Image.fromarray(gray).save(odd / "gray.png")
    Image.fromarray(rgba, "RGBA").save(odd / "rgba.png")
    Image.fromarray(gray).convert("LA").save(odd / "la.png")
    Image.fromarray(colour).convert("P").save(odd / "palette.png")
    transparent = Image.fromarray(colour).convert("P")
    transparent.info["transparency"] = 0
    transparent.save(odd / "palette_transparent.png", transparency=0)
    Image.fromarray(colour).convert("CMYK").save(odd / "cmyk.jpg")
    Image.fromarray((gray.astype(np.uint16) * 16)).save(odd / "sixteen_bit.png")  # mode I;16, 12-bit range
    Image.new("L", (1, 1), 200).save(odd / "one_pixel.png")
    Image.fromarray(gray).save(odd / "ünïcødé (1).png")
    Image.fromarray(colour).save(odd / "with space (2).jpg")
    Image.fromarray(gray > 128).save(odd / "bilevel.bmp")  # mode 1
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    frames[0].save(odd / "frames.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(gray).save(odd / "scan.tif")
    Image.fromarray(colour).save(odd / "scan.webp")
    (odd / "notes.txt").write_text("not an image")
    (odd / "table.csv").write_text("a,b\n1,2\n")
    (odd / ".DS_Store").write_bytes(b"\x00\x01junk")
    (odd / ".hidden.png").write_bytes(b"junk that would fail to decode")

    for i in range(2):
        Image.fromarray(gray // (i + 1)).save(plain / f"good_{i}.png")
    (plain / "zero_bytes.png").write_bytes(b"")
    (plain / "text.png").write_text("this is text, not a PNG")
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(jpeg, format="JPEG", quality=95)
    (plain / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])

    unreadable = {"plain/zero_bytes.png", "plain/text.png", "plain/truncated.jpg"}
    ignored = {"odd/notes.txt", "odd/table.csv", "odd/.DS_Store", "odd/.hidden.png"}
    written = {path.relative_to(root / "Training").as_posix() for path in root.glob("Training/*/*")}
    readable = written - unreadable - ignored
    return MessyDataset(root, readable, unreadable, ignored)


@pytest.fixture
def messy_dataset(tmp_path: Path) -> MessyDataset:
    """Classes ``odd`` (every PIL mode, odd names, ignored files) and ``plain`` (two good files, three broken)."""
    return _write_messy_dataset(tmp_path / "messy")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository (real MRI sets); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MRI sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-tensor cache for the whole session, so real sets are decoded once."""
    return tmp_path_factory.mktemp("medgan-cache")


TINY_GAN = {"image_size": 32, "g_features": 4, "d_features": 4, "z_dim": 8}  # milliseconds per forward pass


@pytest.fixture(scope="module")
def conditional():
    """A tiny, untrained 3-class conditional DCGAN generator (32 px)."""
    from medgan_core.registry import build_model

    return build_model("cdcgan", **TINY_GAN, num_classes=3)[0]


@pytest.fixture(scope="module")
def unconditional():
    """A tiny, untrained DCGAN generator (32 px)."""
    from medgan_core.registry import build_model

    return build_model("dcgan", **TINY_GAN)[0]
