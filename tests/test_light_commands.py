"""The status and report commands run without torch or Lightning, and the report draws each loss's
function from what the run recorded (summary.json's ``loss_function``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest

from gpo_lab.losses.catalog import Derivatives
from gpo_lab.report import collect, make_report
from gpo_lab.report.loss_figure import loss_functions
from gpo_lab.report.loss_shapes import LossShape
from gpo_lab.run.summary import loss_function_record
from tests.helpers import ROOT
from tests.helpers.runs import run_training
from tests.helpers.sweeps import synthetic_sweep, write_job

HEAVY = ("torch", "lightning", "pytorch_lightning", "lightning_fabric")
PNGS = ("tradeoff.png", "beta.png", "kl_beta.png", "regularizer_kl.png", "dynamics.png", "loss_functions.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Runs a command's module as ``python -m`` does, then prints the modules it loaded.
RUN_AND_LIST_MODULES = """
import json, runpy, sys
code, module = 0, sys.argv.pop(1)
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as leaving:
    code = leaving.code or 0
print("LOADED " + json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def run_command(module: str, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("LOADED ")]
    assert lines, result.stderr[-3000:]
    return result, set(json.loads(lines[-1].removeprefix("LOADED ")))


def heavy(loaded: set[str]) -> set[str]:
    return {name for name in loaded if name.split(".")[0] in HEAVY}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return synthetic_sweep(tmp_path_factory.mktemp("light") / "sweep", losses=("logistic", "hinge", "squared"))


def test_status_loads_neither_torch_nor_lightning(sweep):
    result, loaded = run_command("gpo_lab.status", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "30 completed" in result.stdout
    assert heavy(loaded) == set()


def test_report_loads_neither_torch_nor_lightning_and_draws_every_figure(sweep):
    result, loaded = run_command("gpo_lab.report", str(sweep), "--wandb", "off")
    assert result.returncode == 0, result.stderr[-3000:]
    assert heavy(loaded) == set()
    assert "gpo_lab.report.bandit" not in loaded  # the bandit figures are their own command
    assert "## The paper's claims" in (sweep / "report.md").read_text()
    for png in PNGS:
        assert (sweep / png).read_bytes().startswith(PNG_SIGNATURE), png


def test_the_loss_figure_draws_the_recorded_curves(tmp_path):
    sweep = tmp_path / "sweep"
    history = [(10, {"val/win_rate": 0.6, "val/kl_token": 1.0})]
    write_job(sweep, loss="hinge", beta=0.1, history=history)
    write_job(sweep, loss="logistic", beta=0.1, history=history)
    figure = loss_functions(collect(sweep).loss_shapes)
    raw, scaled = figure.axes
    curves = {line.get_label(): line for line in raw.get_lines() if not line.get_label().startswith("_")}
    assert list(curves) == ["logistic", "hinge"]  # the paper's order, whatever the jobs' order
    hinge = curves["hinge"]
    assert hinge.get_xdata()[0] == -3 and hinge.get_xdata()[-1] == 3 and len(hinge.get_xdata()) == 61
    assert hinge.get_ydata()[0] == pytest.approx(4.0) and hinge.get_ydata()[-1] == 0  # max(0, 1 - z)
    labels = [line.get_label() for line in scaled.get_lines()]
    assert "logistic: f''(0)/|f'(0)| = 0.5" in labels and "hinge: f''(0)/|f'(0)| = 0" in labels
    # Rescaled: (f(z) - f(0)) / |f'(0)|; logistic at z = -3: (log(1 + e^3) - log 2) / (1/2).
    rescaled = next(line for line in scaled.get_lines() if line.get_label().startswith("logistic"))
    assert rescaled.get_ydata()[0] == pytest.approx((math.log1p(math.exp(3)) - math.log(2)) / 0.5)


def test_a_summary_without_the_record_still_gets_the_members_ratio(tmp_path):
    """Summaries written before runs recorded their loss function: exact ratios for the members, no curve."""
    sweep = tmp_path / "sweep"
    for loss in ("logistic", "squared"):
        for beta in (0.1, 1.0):
            history = [(10, {"val/win_rate": 0.6 + beta / 10, "val/kl_token": 1 / beta})]
            write_job(sweep, loss=loss, beta=beta, history=history, loss_function=False)
    report = make_report(sweep)
    assert report.best.set_index("loss")["ratio"].to_dict() == {"logistic": 0.5, "squared": 1.0}
    assert "loss_functions" not in report.figures
    assert any("Figure 'loss_functions' not drawn: no job recorded its loss function" in n for n in report.notes)


def test_a_loss_that_is_not_f_of_beta_rho_has_no_ratio(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep, loss="simpo", beta=2.0, history=[(10, {"val/win_rate": 0.6, "val/kl_token": 1.0})])
    (job,) = collect(sweep).jobs.to_dict("records")
    assert math.isnan(job["ratio"])  # its summary records null: no f''(0)


def test_a_record_is_f_and_its_derivatives_at_zero():
    """The recording itself, on a stand-in loss f(z) = (z - 1)^2 (squared: f(0) = 1, f'(0) = -2, f''(0) = 2)."""
    squared = SimpleNamespace(
        derivatives=Derivatives(1.0, -2.0, 2.0), per_example=lambda rho, beta: (beta * rho - 1) ** 2
    )
    record = loss_function_record(squared)
    assert (record["f0"], record["d1"], record["d2"], record["regularization_ratio"]) == (1.0, -2.0, 2.0, 1.0)
    assert record["z"][0] == -3 and record["z"][30] == 0 and record["z"][-1] == 3 and len(record["z"]) == 61
    assert record["f"] == pytest.approx([(z - 1) ** 2 for z in record["z"]])
    assert loss_function_record(SimpleNamespace(derivatives=None)) is None  # not f(beta * rho)


@pytest.mark.slow
def test_a_real_run_records_its_loss_function(tmp_path):
    summary = run_training(["+experiment=smoke", "trainer.max_steps=2", "trainer.val_check_interval=2"], tmp_path)
    record = summary["loss_function"]  # the smoke run's loss: logistic, log(1 + exp(-z))
    assert (record["f0"], record["d1"], record["d2"]) == pytest.approx((math.log(2), -0.5, 0.25))
    assert record["f"] == pytest.approx([math.log1p(math.exp(-z)) for z in record["z"]])
    shape = LossShape(record["f0"], record["d1"], record["d2"], tuple(record["z"]), tuple(record["f"]))
    assert shape.has_curve and shape.regularization_ratio == pytest.approx(0.5)
