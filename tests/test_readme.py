"""The README's Python examples run as written, in order, in one namespace (a later block may use an earlier one's
names and files). A block that needs data or the network is preceded by ``<!-- readme-test: skip REASON -->``."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s+(.+?)\s*-->")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(first line number, code, skip reason or None) of every ```python block."""
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index + 1
            end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
            before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            skip = SKIP.search(before)
            blocks.append((start + 1, "\n".join(lines[start:end]), skip.group(1) if skip else None))
            index = end
        index += 1
    return blocks


BLOCKS = python_blocks(README.read_text())
NAMESPACE: dict = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def test_the_readme_has_examples_that_run():
    assert len([block for block in BLOCKS if block[2] is None]) >= 2


@pytest.mark.slow  # trains a model for 20 steps and exports
@pytest.mark.parametrize("line, code, skip", BLOCKS, ids=[f"README.md:{line}" for line, _, _ in BLOCKS])
def test_readme_python_block_runs_as_written(line, code, skip, workdir, monkeypatch):
    if skip:
        pytest.skip(skip)
    monkeypatch.chdir(workdir)  # relative paths such as runs/... land in a temporary folder
    exec(compile(code, f"README.md:{line}", "exec"), NAMESPACE)
