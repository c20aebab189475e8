"""The wheel: it holds the package and the notebooks, declares every dependency the code imports, and `medgan` works
from it with no checkout around."""
import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    return next(out.glob("medgan_core-*.whl"))


def _requirements(wheel_path: Path) -> tuple[set[str], set[str]]:
    """(distribution names required, extras) from the wheel's METADATA, names normalised."""
    with zipfile.ZipFile(wheel_path) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    required = {re.split(r"[ ;<>=!~\[]", line.split(":", 1)[1].strip())[0].lower().replace("_", "-")
                for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    return required, extras


@pytest.mark.slow
def test_the_wheel_ships_the_notebooks_and_declares_what_the_code_imports(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    shipped = {Path(n).name for n in names if n.startswith("medgan_core/notebooks/")}
    assert shipped == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    required, extras = _requirements(wheel)
    assert {"metrics", "test"} <= extras
    imported = set()
    for path in (ROOT / "medgan_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "medgan_core"}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in third_party:
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not distributions & required:
            undeclared[module] = sorted(distributions)
    assert not undeclared, f"imported but not in the wheel's dependencies: {undeclared}"


@pytest.mark.slow
def test_medgan_runs_a_shipped_notebook_from_the_wheel_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site), "MEDGAN_SMOKE": "1"}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def medgan(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "medgan_core.batch", *args], cwd=work, env=env,
                              capture_output=True, text=True)

    where = subprocess.run([sys.executable, "-c", "import medgan_core.batch as b; print(b.__file__, b.NOTEBOOK_DIR)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(part.startswith(str(site)) for part in where)  # the installed copy, not the checkout
    listed = medgan("list")
    assert listed.returncode == 0 and "demo: 01_dcgan" in listed.stdout
    ran = medgan("run", "01_dcgan", "-p", "max_steps=1", "-p", "train_evaluator_minutes=0", "--out", str(work / "out"))
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert (work / "out" / "01_dcgan" / "01_dcgan.ipynb").is_file()
    missing = medgan("run", "07_nothing")
    assert missing.returncode != 0 and "shipped notebooks ['00_vit_evaluator', '01_dcgan'" in missing.stderr
