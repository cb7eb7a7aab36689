"""The notebooks run top to bottom on a small sweep, with their parameters set as a user would."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.sweeps import synthetic_sweep, write_job

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


def parameters_cell(notebook) -> nbformat.NotebookNode:
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook has exactly one cell tagged 'parameters'"
    return cells[0]


def execute(name: str, workdir: Path, **parameters) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = parameters_cell(notebook)
    cell.source += "\n" + "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook


def images(notebook) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.mark.parametrize("name", ["tradeoff.ipynb", "regularization_dynamics.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert "WANDB_PROJECT = None" in parameters_cell(notebook).source
    assert "SWEEP_DIR = " in parameters_cell(notebook).source
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("notebooks")
    return synthetic_sweep(
        root / "multirun" / "synthetic", losses=("logistic", "hinge", "squared"), betas=(0.1, 1.0), seeds=(0, 1)
    )


def test_tradeoff_notebook_runs(sweep):
    notebook = execute("tradeoff.ipynb", sweep.parent, SWEEP_DIR=str(sweep))
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "'completed': 12" in text and "quality: val/win_rate | divergence: val/kl_token" in text
    assert images(notebook) == 2  # the trade-off and the beta figures


def test_regularization_dynamics_notebook_runs(sweep):
    job = "beta=0.1,loss=hinge,optim.lr=1e-05,seed=1"
    notebook = execute("regularization_dynamics.ipynb", sweep.parent, SWEEP_DIR=str(sweep), JOBS=[job])
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert f"following: {job}" in text
    assert images(notebook) == 3  # dynamics, the end-of-training scatter, the loss functions


def test_the_notebooks_find_a_relative_sweep_from_notebooks_and_draw_what_a_sweep_without_kl_allows(tmp_path):
    """Jupyter starts in notebooks/: SWEEP_DIR = "multirun/NAME" is the checkout's; a sweep that logged no KL
    (the TL;DR command's jobs before any evaluation) gets a line saying what is not drawn, not a crash."""
    sweep = tmp_path / "multirun" / "no_kl"
    for loss in ("logistic", "squared"):
        write_job(sweep, loss=loss, beta=0.1, name="no_kl", history=[(10, {"val/win_rate": 0.6, "val/loss": 0.5})])
    (tmp_path / "notebooks").mkdir()
    for name in ("tradeoff.ipynb", "regularization_dynamics.ipynb"):
        notebook = execute(name, tmp_path / "notebooks", SWEEP_DIR="multirun/no_kl")
        text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
        assert "no_kl: " in text and "Not drawn: the" in text and "KL metric" in text
