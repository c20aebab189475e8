"""Notebook hygiene, and the papermill batch path itself (nbval runs every notebook separately)."""
import ast
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from medgan_core.batch import grid_jobs, main, parse_value, profile_jobs, run_jobs

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
DCGAN = next(p for p in NOTEBOOKS if p.stem == "01_dcgan")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_there_is_a_notebook_per_profile_job():
    names = {p.stem for p in NOTEBOOKS}
    assert {job.notebook.stem for job in profile_jobs("demo")} <= names
    assert {"01_dcgan", "02_conditional_dcgan", "03_wgan_gp"} <= names
    assert {job.notebook.stem for job in profile_jobs("all")} == names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_thin_parameterised_and_committed_without_outputs(path):
    cells = _cells(path)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    tagged = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    index = tagged[0]
    assert index == 1 and 'os.environ.get("MEDGAN_SMOKE") == "1"' in "".join(code[0]["source"])
    parameters = ast.parse("".join(code[index]["source"]))
    assert all(isinstance(node, ast.Assign) for node in parameters.body), "parameters cell: plain assignments only"
    for cell in code:
        tree = ast.parse("".join(l for l in "".join(cell["source"]).splitlines(True) if not l.lstrip().startswith(("%", "!"))))
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.For, ast.While))]
        assert not defined, f"notebook cells define no classes, functions or loops: {ast.unparse(defined[0])[:80]}"


def test_parse_value_and_grid_naming(tmp_path):
    assert parse_value("64") == 64 and parse_value("1e-3") == 0.001 and parse_value("None") is None
    assert parse_value("../data/yes_no") == "../data/yes_no"
    jobs = grid_jobs([Path("nb/01_dcgan.ipynb")], {"epochs": 1}, {"image_size": [64, 128]})
    assert [j.name for j in jobs] == ["01_dcgan__image_size-64", "01_dcgan__image_size-128"]
    assert jobs[1].parameters == {"epochs": 1, "image_size": 128}


@pytest.mark.slow  # papermill runs a notebook
def test_batch_runs_a_notebook_grid_with_papermill_and_summarises(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # Jupyter's, so figures show
    out = tmp_path / "batch"
    code = main(["run", str(DCGAN), "--grid", "seed=0,1", "-p", "max_steps=1", "--out", str(out)])
    assert code == 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary["status"].tolist() == ["ok", "ok"]
    for job in summary["outputs"]:
        job_dir = Path(job)
        executed = json.loads((job_dir / DCGAN.name).read_text())
        injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert injected and "run_dir" in "".join(injected[0]["source"])
        assert (job_dir / "history.csv").is_file() and list((job_dir / "checkpoints").glob("step-*.safetensors"))
        assert (job_dir / "synthetic" / "manifest.json").is_file()
        # every figure cell shows its figure (plotting closes figures, so a cell must display them)
        for cell in executed["cells"]:
            if cell["cell_type"] == "code" and ("plot_" in "".join(cell["source"]) or
                                                "show_images(" in "".join(cell["source"])):
                shown = [o for o in cell["outputs"] if "image/png" in o.get("data", {})]
                assert shown, f"no figure shown by cell: {''.join(cell['source'])[:200]}"

    first = Path(summary["outputs"][0])  # a user-given run_dir resumes that run in place
    assert main(["run", str(DCGAN), "-p", "max_steps=2", "-p", f"run_dir={first}", "--out", str(tmp_path / "more")]) == 0
    assert pd.read_csv(tmp_path / "more" / "summary.csv")["outputs"].tolist() == [str(first)]
    assert pd.read_csv(first / "history.csv")["step"].tolist() == [1, 2]


@pytest.mark.slow  # papermill runs a notebook
def test_batch_records_a_failing_notebook_and_goes_on(tmp_path):
    jobs = grid_jobs([DCGAN], {"max_steps": 1}, {"image_size": [48, 64]})  # 48 px is impossible
    summary = run_jobs(jobs, tmp_path)
    assert summary["status"].tolist() == ["failed", "ok"]
    assert "image_size" in summary["error"][0]


@pytest.mark.slow  # papermill runs a notebook
def test_the_wgan_notebook_trains_the_conditional_variant_too(tmp_path):
    notebook = next(p for p in NOTEBOOKS if p.stem == "03_wgan_gp")
    summary = run_jobs(grid_jobs([notebook], {"max_steps": 1}, {"model": ["cwgan-gp"]}), tmp_path)
    assert summary["status"].tolist() == ["ok"], summary["error"].tolist()
    manifest = json.loads((Path(summary["outputs"][0]) / "synthetic" / "manifest.json").read_text())
    assert manifest["model"] == "cwgan-gp" and len(manifest["counts"]) == 4  # one folder per demo class


def test_every_registered_model_has_a_training_notebook():
    from medgan_core.batch import NOTEBOOK_FOR_MODEL
    from medgan_core.registry import list_models

    assert set(NOTEBOOK_FOR_MODEL) == set(list_models())
    assert {notebook for notebook, _ in NOTEBOOK_FOR_MODEL.values()} <= {p.stem for p in NOTEBOOKS}


@pytest.mark.slow  # papermill runs a notebook
def test_compare_trains_the_evaluator_and_models_then_ranks_the_finished_runs(tmp_path):
    from medgan_core.batch import run_compare

    summary = run_compare("demo", tmp_path, models=["dcgan", "cdcgan"], parameters={"image_size": 64},
                          compare_parameters={"n_samples": 16})
    assert summary["job"].tolist() == ["00_vit_evaluator", "dcgan", "cdcgan", "99_compare"]
    assert (summary["status"] == "ok").all(), summary["error"].tolist()
    board = pd.read_csv(tmp_path / "99_compare" / "leaderboard.csv").set_index("model")
    assert {"dcgan", "cdcgan", "real train images"} == set(board.index)
    assert board["class consistency"].notna().tolist() == [m == "cdcgan" for m in board.index]
    assert any(column.startswith("relative_fd [evaluator:") for column in board.columns)
    assert pd.read_csv(tmp_path / "summary.csv")["job"].tolist() == summary["job"].tolist()


@pytest.mark.slow  # papermill runs a notebook
def test_tuple_parameters_reach_the_notebook_as_sequences_not_strings(tmp_path):
    from medgan_core.batch import _for_papermill

    assert _for_papermill((0, 1), tmp_path) == [0, 1]
    assert _for_papermill(("{batch}/x",), tmp_path) == [f"{tmp_path}/x"]
    assert _for_papermill(3, tmp_path) == 3


def test_batch_jobs_look_for_evaluators_in_the_batch_folder_unless_a_runs_folder_is_set(tmp_path, monkeypatch):
    import papermill

    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: seen.append(os.environ.get("MEDGAN_RUNS")))
    monkeypatch.delenv("MEDGAN_RUNS", raising=False)
    run_jobs(grid_jobs([DCGAN], {}, {}), tmp_path / "batch")
    assert seen == [str((tmp_path / "batch").resolve())] and "MEDGAN_RUNS" not in os.environ, "restored after"
    monkeypatch.setenv("MEDGAN_RUNS", str(tmp_path / "mine"))
    run_jobs(grid_jobs([DCGAN], {}, {}), tmp_path / "batch2")
    assert seen[-1] == str(tmp_path / "mine"), "the user's choice wins"
