"""Run the notebooks headlessly with papermill: one job per parameter set, one folder per job, one summary.

Examples::

    python -m medgan_core.batch demo                       # both DCGAN notebooks on the demo set
    python -m medgan_core.batch run notebooks/01_dcgan.ipynb --grid dataset=demo,../shared/data/brain_tumor_yes_no \\
        -p image_size=64 -p epochs=5
    python -m medgan_core.batch list                       # the named profiles

Each job writes its executed notebook and the run's outputs (samples, history.csv, checkpoints,
exports) under ``<out>/<job name>/``; ``<out>/summary.csv`` lists what ran, how long, and where.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .fileio import atomic_write_text
from .runtime import output_root

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

# Demo: <= 5 minutes of CPU training per notebook (~3,300 steps on 2 cores), recognisable brains at 64 px.
# Batch 32 and half-width nets: on CPU more, cheaper updates beat fewer, bigger ones in a fixed time.
_DEMO_COMMON = {"dataset": "demo", "image_size": 64, "batch_size": 32, "max_steps": 4000, "max_minutes": 5.0,
                "g_features": 32, "d_features": 32, "sample_every": 500, "checkpoint_every": 1000}
PROFILES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "demo": [
        ("01_dcgan", _DEMO_COMMON),
        # S1's D learning rate (5e-5) left D at chance and G collapsed in short CPU runs: use 2e-4 here
        ("02_conditional_dcgan", {**_DEMO_COMMON, "lr_d": 2e-4}),
    ],
    # every notebook on the demo set, ~25 minutes on 2 CPU cores
    "all": [
        ("00_vit_evaluator", {"dataset": "demo", "image_size": 64, "max_minutes": 4.0}),
        ("01_dcgan", _DEMO_COMMON),
        ("02_conditional_dcgan", {**_DEMO_COMMON, "lr_d": 2e-4}),
        ("03_wgan_gp", {**_DEMO_COMMON, "max_steps": 1000}),
        ("04_progan", {"dataset": "demo", "image_size": 64, "base_features": 64, "epochs_per_stage": 20,
                       "max_minutes": 5.0, "sample_every": 500, "checkpoint_every": 1000}),
    ],
    "smoke": [
        ("00_vit_evaluator", {}),
        ("01_dcgan", {"max_steps": 2}),
        ("02_conditional_dcgan", {"max_steps": 2}),
        ("03_wgan_gp", {"max_steps": 2}),
        ("04_progan", {}),
    ],
}


@dataclass
class Job:
    """One notebook execution."""

    name: str  # output sub-folder
    notebook: Path
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_value(text: str) -> Any:
    """``"64"`` -> 64, ``"1e-3"`` -> 0.001, ``"None"`` -> None, ``"[1, 2]"`` -> list; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def grid_jobs(notebooks: list[Path], fixed: dict[str, Any], grid: dict[str, list[Any]]) -> list[Job]:
    """Every notebook crossed with every combination of ``grid`` values, on top of ``fixed`` parameters.

    Args:
        notebooks: notebook paths.
        fixed: parameters shared by all jobs.
        grid: parameter name -> values to sweep.
    Returns:
        Jobs with readable, unique names (``01_dcgan__image_size-128``).
    """
    keys = list(grid)
    jobs = []
    for notebook in notebooks:
        for values in itertools.product(*(grid[k] for k in keys)):
            swept = dict(zip(keys, values))
            suffix = "__".join(f"{k}-{_slug(v)}" for k, v in swept.items())
            name = notebook.stem + (f"__{suffix}" if suffix else "")
            jobs.append(Job(name, notebook, {**fixed, **swept}))
    return jobs


def _slug(value: Any) -> str:
    text = Path(str(value)).name or str(value)
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)[:40]


def run_jobs(jobs: list[Job], out_dir: str | Path, *, kernel_name: str = "python3", progress: bool = False) -> pd.DataFrame:
    """Execute jobs one after the other with papermill; failures are recorded, not raised.

    Args:
        jobs: what to run.
        out_dir: parent folder; each job gets ``out_dir/<job.name>/`` and the notebook parameter ``run_dir``.
        kernel_name: Jupyter kernel to use.
        progress: show papermill's per-cell progress bar.
    Returns:
        Summary table (also written to ``out_dir/summary.csv`` and ``summary.md``).
    """
    import papermill  # only the batch path needs it

    out_dir = Path(out_dir).resolve()
    rows = []
    for job in jobs:
        job_dir = out_dir / job.name
        job_dir.mkdir(parents=True, exist_ok=True)
        parameters = {**job.parameters, "run_dir": str(job_dir)}
        started = time.monotonic()
        status, error = "ok", ""
        print(f"[batch] {job.name}: {job.notebook.name} {job.parameters}", flush=True)
        try:
            papermill.execute_notebook(str(job.notebook), str(job_dir / job.notebook.name), parameters=parameters,
                                       kernel_name=kernel_name, progress_bar=progress, cwd=str(job.notebook.parent))
        except Exception as exc:  # a failed notebook must not stop the other jobs
            status, error = "failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        seconds = round(time.monotonic() - started, 1)
        print(f"[batch] {job.name}: {status} in {seconds:.0f} s -> {job_dir}", flush=True)
        rows.append({"job": job.name, "notebook": job.notebook.name, "status": status, "seconds": seconds,
                     "outputs": str(job_dir), "parameters": repr(job.parameters), "error": error})
    summary = pd.DataFrame(rows)
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out_dir / "summary.md", _markdown_table(summary))
    return summary


def _markdown_table(frame: pd.DataFrame) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def profile_jobs(profile: str, overrides: dict[str, Any] | None = None) -> list[Job]:
    """Jobs of a named profile from ``PROFILES``, with parameter overrides applied to each.

    Raises:
        KeyError: listing the profiles.
    """
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; profiles: {sorted(PROFILES)}")
    return [Job(name, NOTEBOOK_DIR / f"{name}.ipynb", {**params, **(overrides or {})})
            for name, params in PROFILES[profile]]


def _key_values(pairs: list[str], flag: str) -> list[tuple[str, str]]:
    parsed = []
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"{flag} expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        parsed.append((key.strip(), value))
    return parsed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m medgan_core.batch`` / ``medgan``)."""
    parser = argparse.ArgumentParser(prog="medgan", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in PROFILES:
        p = sub.add_parser(name, help=f"run the {name!r} profile: " + ", ".join(n for n, _ in PROFILES[name]))
        p.add_argument("-p", "--param", action="append", default=[], help="override a parameter: key=value")
        p.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    run = sub.add_parser("run", help="run notebooks over a parameter grid")
    run.add_argument("notebooks", nargs="+", type=Path)
    run.add_argument("-p", "--param", action="append", default=[], help="fixed parameter: key=value")
    run.add_argument("--grid", action="append", default=[], help="swept parameter: key=v1,v2,...")
    run.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    sub.add_parser("list", help="list the profiles")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, jobs in PROFILES.items():
            print(f"{name}: " + "; ".join(f"{n} {p}" for n, p in jobs))
        return 0
    fixed = {k: parse_value(v) for k, v in _key_values(args.param, "-p")}
    if args.command == "run":
        missing = [str(n) for n in args.notebooks if not n.is_file()]
        if missing:
            raise SystemExit(f"notebook(s) not found: {missing}")
        grid = {k: [parse_value(v) for v in values.split(",")] for k, values in _key_values(args.grid, "--grid")}
        jobs = grid_jobs([n.resolve() for n in args.notebooks], fixed, grid)
    else:
        jobs = profile_jobs(args.command, fixed)
    out_dir = Path(args.out) if args.out else output_root() / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    summary = run_jobs(jobs, out_dir)
    print()
    print(summary[["job", "status", "seconds", "outputs"]].to_string(index=False))
    print(f"\n{len(summary)} job(s) in {time.monotonic() - started:.0f} s; outputs in {out_dir.resolve()}")
    return 0 if (summary["status"] == "ok").all() else 1


if __name__ == "__main__":
    sys.exit(main())
