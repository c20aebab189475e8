"""Run the notebooks headlessly with papermill: one job per parameter set, one folder per job, one summary.

Examples::

    python -m medgan_core.batch demo                       # both DCGAN notebooks on the demo set
    python -m medgan_core.batch run notebooks/01_dcgan.ipynb --grid dataset=demo,../shared/data/brain_tumor_yes_no \\
        -p image_size=64 -p epochs=5
    python -m medgan_core.batch compare --dataset ../shared/data/brain_tumor_mri_small -p max_minutes=10
                                                           # evaluator + every model, then the leaderboard
    python -m medgan_core.batch list                       # the named profiles
    medgan sample runs/<stamp>/01_dcgan -n 64 --out grid.png   # use a trained generator (see medgan_core.cli)
    medgan export runs/<stamp>/02_conditional_dcgan --per-class 500 --out synthetic/
    medgan info runs/<stamp>/01_dcgan

Each job writes its executed notebook and the run's outputs (samples, history.csv, checkpoints,
exports) under ``<out>/<job name>/``; ``<out>/summary.csv`` lists what ran, how long, and where.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .cli import add_commands
from .cli import run as run_command
from .fileio import atomic_write_text
from .registry import list_models
from .runtime import output_root

def _notebook_dir() -> Path:
    """The notebooks: a checkout's ``notebooks/`` (edited in place), else the copy inside the installed package."""
    checkout = Path(__file__).resolve().parents[1] / "notebooks"
    if (checkout / "01_dcgan.ipynb").is_file():
        return checkout
    return Path(__file__).resolve().parent / "notebooks"  # where the wheel puts them (pyproject.toml: package-dir)


NOTEBOOK_DIR = _notebook_dir()

# Demo: 4.5 minutes of CPU training per notebook (~2,500 steps on 2 cores), recognisable brains at 64 px, then the
# Evaluate section on 500 samples, so `make demo` stays within 15 minutes on a fresh machine, install included.
# Batch 32 and half-width nets: on CPU more, cheaper updates beat fewer, bigger ones in a fixed time.
_DEMO_COMMON = {"dataset": "demo", "image_size": 64, "batch_size": 32, "max_steps": 4000, "max_minutes": 4.5,
                "g_features": 32, "d_features": 32, "sample_every": 500, "checkpoint_every": 1000,
                "eval_samples": 500}
PROFILES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "demo": [
        # DCGAN stays the demo's model: at 5 CPU minutes on the demo set it gave the best-looking 64 px samples, and
        # no model (ProGAN, StyleGAN2 with or without DiffAugment) was ahead by relative FD beyond the CIs (README).
        # Its Evaluate section trains a 1-minute CNN evaluator in the batch folder, where 02 finds and reuses it.
        ("01_dcgan", {**_DEMO_COMMON, "train_evaluator_minutes": 1.0}),
        # the dementia-stage recipe's D lr (5e-5) left D at chance and G collapsed in short CPU runs: 2e-4 here
        ("02_conditional_dcgan", {**_DEMO_COMMON, "lr_d": 2e-4, "train_evaluator_minutes": 1.0}),
    ],
    # every notebook on the demo set, then the comparison: ~35 minutes on 2 CPU cores (27 measured before 05, 07)
    "all": [
        ("00_vit_evaluator", {"dataset": "demo", "image_size": 64, "max_minutes": 4.0}),
        ("01_dcgan", _DEMO_COMMON),
        ("02_conditional_dcgan", {**_DEMO_COMMON, "lr_d": 2e-4}),
        ("03_wgan_gp", {**_DEMO_COMMON, "max_steps": 1000}),
        ("04_progan", {"dataset": "demo", "image_size": 64, "base_features": 64, "epochs_per_stage": 20,
                       "max_minutes": 5.0, "sample_every": 500, "checkpoint_every": 1000}),
        ("05_stylegan2", {"dataset": "demo", "image_size": 64, "max_minutes": 5.0, "augment": "diffaugment",
                          "sample_every": 500, "checkpoint_every": 1000}),
        ("06_alpha_gan_gp", {"dataset": "demo", "image_size": 64, "max_minutes": 5.0, "sample_every": 500,
                             "checkpoint_every": 1000}),
        ("07_singan_seg", {"dataset": "demo", "image_size": 64, "iterations": 150}),  # one pair, ~3 minutes
        ("08_volumes", {"max_minutes": 3.0}),  # the demo volumes (its run is of another dataset: 99 leaves it out)
        ("99_compare", {"dataset": "demo", "runs_root": "{batch}", "n_samples": 500}),
    ],
    "smoke": [
        ("00_vit_evaluator", {}),
        ("01_dcgan", {"max_steps": 2}),
        ("02_conditional_dcgan", {"max_steps": 2}),
        ("03_wgan_gp", {"max_steps": 2}),
        ("04_progan", {}),
        ("05_stylegan2", {}),
        ("06_alpha_gan_gp", {}),
        ("07_singan_seg", {}),
        ("08_volumes", {}),
        ("99_compare", {"runs_root": "{batch}"}),
    ],
}


# Which notebook trains each registered model (and with which fixed parameters): `compare` trains them all.
NOTEBOOK_FOR_MODEL: dict[str, tuple[str, dict[str, Any]]] = {
    "dcgan": ("01_dcgan", {}),
    "cdcgan": ("02_conditional_dcgan", {}),
    "wgan-gp": ("03_wgan_gp", {"model": "wgan-gp"}),
    "cwgan-gp": ("03_wgan_gp", {"model": "cwgan-gp"}),
    "progan": ("04_progan", {}),
    "stylegan2": ("05_stylegan2", {"model": "stylegan2"}),
    "cstylegan2": ("05_stylegan2", {"model": "cstylegan2"}),
    # images only in a comparison: it judges images, and most datasets have no masks
    "alpha-gan-gp": ("06_alpha_gan_gp", {"model": "alpha-gan-gp", "masks": False}),
    "calpha-gan-gp": ("06_alpha_gan_gp", {"model": "calpha-gan-gp", "masks": False}),
    # one pyramid of one pair (images only here too): what a comparison against a whole dataset shows is its limit
    "singan-seg": ("07_singan_seg", {"masks": False}),
}
EVALUATOR_NOTEBOOK = "00_vit_evaluator"
BATCH_PLACEHOLDER = "{batch}"  # in a string parameter, replaced by the batch's output folder
COMPARE_NOTEBOOK = "99_compare"


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
        out_dir: parent folder; each job gets ``out_dir/<job.name>/`` as its notebook parameter ``run_dir``, unless
            the job sets ``run_dir`` itself (an earlier run to resume: outputs and the executed notebook go there).
        kernel_name: Jupyter kernel to use.
        progress: show papermill's per-cell progress bar.
    Returns:
        Summary table (also written to ``out_dir/summary.csv`` and ``summary.md``).
    """
    import papermill  # only the batch path needs it

    out_dir = Path(out_dir).resolve()
    rows = []
    # the jobs' runs folder (unless the user chose one): a notebook then finds the evaluator an earlier job of the
    # batch trained (00_vit_evaluator, or the small one of the first model notebook) instead of training its own
    user_runs = os.environ.get("MEDGAN_RUNS")
    if user_runs is None:
        os.environ["MEDGAN_RUNS"] = str(out_dir)  # inherited by the notebook kernels
    try:
        for job in jobs:
            rows.append(_run_job(job, out_dir, papermill, kernel_name, progress))
    finally:
        if user_runs is None:
            os.environ.pop("MEDGAN_RUNS", None)
    summary = pd.DataFrame(rows)
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out_dir / "summary.md", _markdown_table(summary))
    return summary


def _run_job(job: Job, out_dir: Path, papermill: Any, kernel_name: str, progress: bool) -> dict[str, Any]:
    """Execute one job; returns its summary row (a failure is recorded, not raised)."""
    # a run_dir given by the user resumes that run there; otherwise each job gets a fresh folder
    job_dir = Path(_for_papermill(job.parameters.get("run_dir") or str(out_dir / job.name), out_dir)).resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    parameters = {key: _for_papermill(value, out_dir) for key, value in {**job.parameters, "run_dir": str(job_dir)}.items()}
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
    return {"job": job.name, "notebook": job.notebook.name, "status": status, "seconds": seconds,
            "outputs": str(job_dir), "parameters": repr(job.parameters), "error": error}


def _for_papermill(value: Any, out_dir: Path) -> Any:
    """A parameter as papermill can inject it: tuples become lists (papermill would quote them as strings) and
    ``{batch}`` in strings becomes the batch folder."""
    if isinstance(value, tuple):
        return [_for_papermill(item, out_dir) for item in value]
    return value.replace(BATCH_PLACEHOLDER, str(out_dir)) if isinstance(value, str) else value


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


def run_compare(dataset: str, out_dir: str | Path, *, models: list[str] | None = None,
                parameters: dict[str, Any] | None = None, compare_parameters: dict[str, Any] | None = None) -> pd.DataFrame:
    """Train the evaluator and every model on ``dataset``, then compare the runs that finished, as one batch.

    Jobs: ``00_vit_evaluator``, one training notebook per model (see ``NOTEBOOK_FOR_MODEL``), then ``99_compare``
    pointed at the successful runs and the new evaluator. A failed training job is recorded and left out of the
    comparison rather than stopping it.

    Args:
        dataset: data spec for every job ("demo", "kaggle:...", or a folder with a test split).
        out_dir: batch folder; each job gets a sub-folder named after it.
        models: registered model names (default: every registered model).
        parameters: given to every job (e.g. ``image_size``, ``max_minutes``); all models must share one image size.
        compare_parameters: given to the comparison notebook only (e.g. ``n_samples``).
    Returns:
        The summary of all jobs (also in ``out_dir/summary.csv``).
    Raises:
        KeyError: for a model without a training notebook.
    """
    models = models or sorted(list_models())
    unknown = [m for m in models if m not in NOTEBOOK_FOR_MODEL]
    if unknown:
        raise KeyError(f"no training notebook for model(s) {unknown}; known: {sorted(NOTEBOOK_FOR_MODEL)}")
    out_dir = Path(out_dir).resolve()
    common = {"dataset": dataset, **(parameters or {})}
    jobs = [Job(EVALUATOR_NOTEBOOK, NOTEBOOK_DIR / f"{EVALUATOR_NOTEBOOK}.ipynb", common)]
    for model in models:
        notebook, fixed = NOTEBOOK_FOR_MODEL[model]
        jobs.append(Job(model, NOTEBOOK_DIR / f"{notebook}.ipynb", {**common, **fixed}))
    training = run_jobs(jobs, out_dir)
    finished = training[training["status"] == "ok"]
    runs = [out for job, out in zip(finished["job"], finished["outputs"]) if job != EVALUATOR_NOTEBOOK]
    evaluator = out_dir / EVALUATOR_NOTEBOOK / "evaluator.safetensors"
    compare = Job(COMPARE_NOTEBOOK, NOTEBOOK_DIR / f"{COMPARE_NOTEBOOK}.ipynb",
                  {**common, "runs": runs, "evaluator_path": str(evaluator) if evaluator.is_file() else None,
                   **(compare_parameters or {})})
    # run_jobs rewrites summary.csv for its own jobs: keep the training rows in the final summary
    summary = pd.concat([training, run_jobs([compare], out_dir)], ignore_index=True)
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out_dir / "summary.md", _markdown_table(summary))
    return summary


def find_notebook(name: str | Path) -> Path:
    """A notebook path, or the name of a shipped notebook (``01_dcgan`` or ``01_dcgan.ipynb``).

    Raises:
        SystemExit: naming the shipped notebooks when it is neither.
    """
    path = Path(name)
    if path.is_file():
        return path.resolve()
    shipped = NOTEBOOK_DIR / f"{path.name.removesuffix('.ipynb')}.ipynb"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    raise SystemExit(f"notebook {str(name)!r} not found: pass a notebook file or one of the shipped notebooks {names}")


def parse_parameters(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["lr=1e-3", "betas=(0.5, 0.9)"]`` -> ``{"lr": 0.001, "betas": (0.5, 0.9)}`` (see :func:`parse_value`)."""
    return {key: parse_value(value) for key, value in _key_values(pairs, flag)}


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
    run.add_argument("notebooks", nargs="+", help="notebook files, or names of the shipped ones (01_dcgan, ...)")
    run.add_argument("-p", "--param", action="append", default=[], help="fixed parameter: key=value")
    run.add_argument("--grid", action="append", default=[], help="swept parameter: key=v1,v2,...")
    run.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    compare = sub.add_parser("compare", help="train the evaluator and every model on a dataset, then compare them")
    compare.add_argument("--dataset", required=True, help='"demo", "kaggle:..." or a folder with a test split')
    compare.add_argument("--models", help=f"comma-separated subset of {sorted(NOTEBOOK_FOR_MODEL)} (default: all)")
    compare.add_argument("-p", "--param", action="append", default=[],
                         help="parameter for every job, key=value (default image_size=64)")
    compare.add_argument("-c", "--compare-param", action="append", default=[],
                         help="parameter for the comparison notebook only, key=value")
    compare.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    sub.add_parser("list", help="list the profiles")
    add_commands(sub)
    args = parser.parse_args(argv)
    if hasattr(args, "handler"):  # sample / export / info
        return run_command(args)

    if args.command == "list":
        for name, jobs in PROFILES.items():
            print(f"{name}: " + "; ".join(f"{n} {p}" for n, p in jobs))
        return 0
    fixed = parse_parameters(args.param, "-p")
    out_dir = Path(args.out) if args.out else output_root() / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    if args.command == "compare":
        compare_only = parse_parameters(args.compare_param, "-c")
        models = args.models.split(",") if args.models else None
        summary = run_compare(args.dataset, out_dir, models=models, parameters={"image_size": 64, **fixed},
                              compare_parameters=compare_only)
        return _report(summary, out_dir, started)
    if args.command == "run":
        notebooks = [find_notebook(n) for n in args.notebooks]
        grid = {k: [parse_value(v) for v in values.split(",")] for k, values in _key_values(args.grid, "--grid")}
        jobs = grid_jobs(notebooks, fixed, grid)
    else:
        jobs = profile_jobs(args.command, fixed)
    return _report(run_jobs(jobs, out_dir), out_dir, started)


def _report(summary: pd.DataFrame, out_dir: Path, started: float) -> int:
    print()
    print(summary[["job", "status", "seconds", "outputs"]].to_string(index=False))
    print(f"\n{len(summary)} job(s) in {time.monotonic() - started:.0f} s; outputs in {out_dir.resolve()}")
    return 0 if (summary["status"] == "ok").all() else 1


if __name__ == "__main__":
    sys.exit(main())
