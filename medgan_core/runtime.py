"""Where the code runs: platform (Kaggle, Colab, local), device, and where outputs go."""
from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

import torch


def detect_platform() -> str:
    """``"kaggle"``, ``"colab"`` or ``"local"``."""
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or Path("/kaggle/working").is_dir():
        return "kaggle"
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    return "local"


def output_root() -> Path:
    """Where runs are written: ``/kaggle/working/runs`` on Kaggle, ``$MEDGAN_RUNS`` or ``./runs`` elsewhere."""
    if detect_platform() == "kaggle":
        return Path("/kaggle/working/runs")
    return Path(os.environ.get("MEDGAN_RUNS", "runs"))


def new_run_dir(name: str, run_dir: str | Path | None = None) -> Path:
    """The folder for one run: ``run_dir`` when given, else ``<output_root>/<UTC timestamp>/<name>``.

    Args:
        name: notebook or model name (``"01_dcgan"``).
        run_dir: explicit folder (to resume a run, pass its folder).
    Returns:
        The folder (created).
    """
    if run_dir:
        path = Path(run_dir)
    else:
        path = output_root() / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe_runtime() -> dict[str, str]:
    """Print and return platform, Python/torch versions, device and GPU name.

    Returns:
        The same facts as a dict (notebooks record it next to their outputs).
    """
    facts = {
        "platform": detect_platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "cpu_threads": str(torch.get_num_threads()),
        "outputs": str(output_root().resolve()),
    }
    print("  ".join(f"{key}: {value}" for key, value in facts.items()))
    return facts
