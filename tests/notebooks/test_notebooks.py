"""The notebooks run top to bottom on a fresh checkout (fast mode), and are committed without outputs.

Each is executed for real by nbclient in a ``python3`` kernel that runs this interpreter (the project's venv),
with ``HOUSING_NOTEBOOK_FAST=1``: real training, a real MLflow store, real predictor processes and, for the
canary notebook, a real Prometheus when it is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from tests.conftest import ROOT, require_tool

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_exist():
    names = [path.name for path in NOTEBOOKS]
    assert names == [
        "01-explore-and-train.ipynb",
        "02-drift.ipynb",
        "03-canary.ipynb",
        "04-experiment.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_has_no_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs: strip them (pre-commit does)"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_has_a_fast_parameter_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].source.startswith("FAST = True")
    assert "HOUSING_NOTEBOOK_FAST" in notebook.cells[notebook.cells.index(parameters[0]) + 1].source


def test_python3_kernel_is_this_interpreter(tmp_path: Path):
    from nbclient import NotebookClient

    cell = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    notebook = nbformat.v4.new_notebook(cells=[cell])
    NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    assert notebook.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from nbclient import NotebookClient

    if path.name == "03-canary.ipynb":
        require_tool("prometheus")  # the notebook runs without it, but then skips its verdict
    monkeypatch.setenv("HOUSING_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's scratch folders (MLflow store, logs) go here
    notebook = nbformat.read(path, as_version=4)
    # Raises CellExecutionError, with the failing cell and its traceback, on the first error.
    NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
