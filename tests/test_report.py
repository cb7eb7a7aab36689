"""The sweep report: tables checked against hand-written summaries, figures for partial and
failed sweeps, and a real (tiny) multirun end to end."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpo_lab.report.wandb_io as wandb_io
from gpo_lab.report import analyse, collect, figures, make_report
from gpo_lab.report.__main__ import main as report_main
from gpo_lab.report.aggregate import aggregate, pareto_frontier
from gpo_lab.report.axes import KL_CANDIDATES, QUALITY_CANDIDATES, Metric, choose
from gpo_lab.report.wandb_io import attach_to_wandb
from gpo_lab.store.lock import RunLock
from tests.helpers.cli import run_cli
from tests.helpers.sweeps import synthetic_sweep, write_job

PNGS = ("tradeoff.png", "beta.png", "kl_beta.png", "regularizer_kl.png", "dynamics.png", "loss_functions.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (loss, beta, seed) -> (final win rate, final token KL, final offline regularizer), chosen by hand.
FINALS = {
    ("logistic", 0.1, 0): (0.60, 2.0, 1.0),
    ("logistic", 0.1, 1): (0.70, 4.0, 3.0),
    ("logistic", 1.0, 0): (0.50, 0.5, 0.25),
    ("logistic", 1.0, 1): (0.54, 0.7, 0.35),
    ("hinge", 0.1, 0): (0.58, 6.0, 5.0),
    ("hinge", 0.1, 1): (0.62, 8.0, 7.0),
    ("hinge", 1.0, 0): (0.64, 3.0, 2.0),
    ("hinge", 1.0, 1): (0.66, 5.0, 4.0),
}


def fabricated_sweep(root: Path) -> Path:
    sweep = root / "multirun" / "handmade"
    for (loss, beta, seed), (win, kl, reg) in FINALS.items():
        history = [
            (0, {"val/win_rate": 0.5, "val/kl_token": 0.0, "val/offline_reg": 0.0}),
            (10, {"val/win_rate": win, "val/win_rate_se": 0.01, "val/kl_token": kl, "val/offline_reg": reg}),
        ]
        write_job(sweep, loss=loss, beta=beta, seed=seed, seeded=True, history=history)
    return sweep


def table_rows(markdown: str, first_cell: str, section: str | None = None) -> list[list[str]]:
    """Rows of the tables whose first cell is ``first_cell`` (under the heading ``section`` only, if given)."""
    rows = []
    if section is not None:
        markdown = markdown.split(section, 1)[1].split("\n## ", 1)[0]
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == first_cell:
            rows.append(cells)
    return rows


def test_collect_reads_every_summary_exactly(tmp_path):
    sweep = collect(fabricated_sweep(tmp_path))
    assert len(sweep.jobs) == len(FINALS)
    assert sweep.status_counts == {"completed": 8} and not sweep.partial
    for _, job in sweep.jobs.iterrows():
        summary = json.loads((Path(job["path"]) / "summary.json").read_text())
        win, kl, reg = FINALS[(job["loss"], job["beta"], job["seed"])]
        assert job["final/val/win_rate"] == summary["final"]["val/win_rate"] == win
        assert job["final/val/kl_token"] == kl and job["final/val/offline_reg"] == reg
        assert job["best/val/win_rate"] == summary["best"]["val/win_rate"]["value"]
        assert job["steps"] == 10 and job["lr"] == 1e-5
        assert job["config"] == f"beta={job['beta']},loss={job['loss']},optim.lr=1e-05"


def test_report_table_matches_the_summaries(tmp_path):
    report = make_report(fabricated_sweep(tmp_path))
    text = report.path.read_text()
    assert report.x == Metric("val/kl_token") and report.y == Metric("val/win_rate")
    assert "**Status: complete.** All 8 jobs have ended." in text

    # Best beta per loss by mean win rate over two seeds, worked out by hand:
    # logistic: beta 0.1 -> (0.60 + 0.70)/2 = 0.65, sd = 0.0707107; beta 1 -> 0.52. Best 0.1.
    # hinge:    beta 0.1 -> 0.60;  beta 1 -> (0.64 + 0.66)/2 = 0.65, sd = 0.0141421. Best 1.
    best = report.best.set_index("loss")
    assert best.loc["logistic", "beta"] == 0.1 and best.loc["hinge", "beta"] == 1.0
    assert best.loc["logistic", "mean"] == pytest.approx(0.65)
    assert best.loc["logistic", "sd"] == pytest.approx(math.sqrt(2 * 0.05**2))
    assert best.loc["hinge", "sd"] == pytest.approx(math.sqrt(2 * 0.01**2))
    # f''(0)/|f'(0)| of the paper's table: logistic 1/2, hinge 0.
    assert best.loc["logistic", "scaled_beta"] == pytest.approx(0.05) and best.loc["hinge", "scaled_beta"] == 0
    sec = "\n## Best β per loss\n"
    assert table_rows(text, "logistic", sec) == [
        ["logistic", "0.1", "1e-05", "0.65 ± 0.07071 (sd)", "2", "0.5", "0.05", "only 2 β with a value: no fit"]
    ]
    assert table_rows(text, "hinge", sec) == [
        ["hinge", "1", "1e-05", "0.65 ± 0.01414 (sd)", "2", "0", "0", "only 2 β with a value: no fit"]
    ]

    # Every job is listed with its own final values.
    for (loss, beta, seed), (win, kl, reg) in FINALS.items():
        name = f"`beta={beta},loss={loss},optim.lr=1e-05,seed={seed}`"
        assert table_rows(text, name) == [
            [name, "completed", loss, f"{beta:g}", "1e-05", str(seed), "10", f"{win:.4g}", f"{kl:.4g}", f"{reg:.4g}"]
        ]
    for png in PNGS:
        assert (report.path.parent / png).read_bytes().startswith(PNG_SIGNATURE)
        assert f"]({png})" in text


def test_best_values_and_a_lower_is_better_metric(tmp_path):
    sweep = tmp_path / "sweep"
    # The win rate peaks at step 5 (0.8) and ends at 0.6 for beta=0.1; beta=1 ends at 0.7 and peaks there.
    write_job(
        sweep,
        loss="squared",
        beta=0.1,
        history=[(5, {"val/win_rate": 0.8, "val/loss": 0.3}), (10, {"val/win_rate": 0.6, "val/loss": 0.2})],
    )
    write_job(
        sweep,
        loss="squared",
        beta=1.0,
        history=[(5, {"val/win_rate": 0.65, "val/loss": 0.5}), (10, {"val/win_rate": 0.7, "val/loss": 0.4})],
    )
    data = collect(sweep)
    assert analyse(data, value="final").best.iloc[0]["beta"] == 1.0
    assert analyse(data, value="best").best.iloc[0]["beta"] == 0.1
    # -val/loss: higher is better after negation, so the lowest loss (0.2, beta 0.1) wins.
    negated = analyse(data, y="-val/loss")
    assert negated.y.higher_is_better and negated.best.iloc[0]["beta"] == 0.1
    assert negated.best.iloc[0]["mean"] == pytest.approx(-0.2)
    # A single seed: the error is the evaluation's own standard error, when logged (here it is not).
    assert negated.best.iloc[0]["err_kind"] == ""


def test_single_seed_error_bars_use_the_evaluation_standard_error(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(
        sweep,
        loss="logistic",
        beta=0.1,
        history=[(10, {"val/win_rate": 0.7, "val/win_rate_se": 0.03, "val/kl_seq": 1.5})],
    )
    configs = aggregate(collect(sweep).jobs, [Metric("val/win_rate"), Metric("val/kl_seq")])
    row = configs.iloc[0]
    assert row["n"] == 1 and math.isnan(row["val/win_rate sd"])
    assert row["val/win_rate err"] == 0.03 and row["val/win_rate err_kind"] == "evaluation SE"
    assert math.isnan(row["val/kl_seq err"])


def test_pareto_frontier_by_hand():
    kl = np.array([1.0, 2.0, 3.0, 0.5, 4.0, 2.0])
    win = np.array([0.5, 0.7, 0.6, 0.55, 0.9, 0.65])
    # (1, .5) loses to (.5, .55); (3, .6) and (2, .65) lose to (2, .7).
    assert pareto_frontier(kl, win).tolist() == [3, 1, 4]
    # Lower is better on y (e.g. a loss): (.5, .55), then (1, .5) lower still; nothing lower after.
    assert pareto_frontier(kl, win, higher_is_better=False).tolist() == [3, 0]
    assert pareto_frontier([1.0, np.nan], [0.5, 0.9]).tolist() == [0]


def test_tradeoff_figure_draws_each_frontier_and_reads_clearly(tmp_path):
    report = analyse(collect(fabricated_sweep(tmp_path)))
    figure = figures.tradeoff(report.configs, report.x, report.y)
    ax = figure.axes[0]
    assert "KL" in ax.get_xlabel() and "[nats]" in ax.get_xlabel() and "val/kl_token" in ax.get_xlabel()
    assert "win rate" in ax.get_ylabel() and "val/win_rate" in ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    # Means over seeds: logistic (KL 3, .65) at beta .1 and (.6, .52) at beta 1, neither beats the other.
    assert lines["logistic"].get_xdata().tolist() == pytest.approx([0.6, 3.0])
    assert lines["logistic"].get_ydata().tolist() == pytest.approx([0.52, 0.65])
    # hinge: (4, .65) at beta 1 beats (7, .60) at beta .1, so its frontier is one point.
    assert lines["hinge"].get_xdata().tolist() == pytest.approx([4.0])
    legends = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert {"logistic", "hinge", "β=0.1", "β=1"} <= set(legends)
    assert any("sd over seeds" in text for text in legends)


def test_beta_figure_rescales_by_the_regularization_ratio(tmp_path):
    report = analyse(collect(fabricated_sweep(tmp_path)))
    figure = figures.quality_vs_beta(report.configs, report.y)
    raw, scaled = figure.axes
    assert raw.get_xscale() == scaled.get_xscale() == "log"
    x_scaled = sorted(x for container in scaled.containers for x in container.lines[0].get_xdata())
    assert x_scaled == pytest.approx([0.05, 0.5])  # logistic only: hinge has f''(0) = 0
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert any("not in the right panel" in text and "hinge: f''(0) = 0" in text for text in legend)


def test_metric_choice_prefers_token_kl_and_says_which(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(
        sweep, loss="logistic", beta=0.1, history=[(4, {"val/kl_seq": 1.0, "val/kl_token": 0.9, "val/reward": 2.0})]
    )
    jobs = collect(sweep).jobs
    assert choose(jobs, None, KL_CANDIDATES) == Metric("val/kl_token")
    assert choose(jobs, None, QUALITY_CANDIDATES) == Metric("val/reward")
    assert choose(jobs, "val/kl_seq", KL_CANDIDATES) == Metric("val/kl_seq")
    tabular = tmp_path / "tabular"
    write_job(tabular, loss="savage", beta=0.1, history=[(4, {"val/kl": 0.2, "val/win_rate": 0.6})])
    kl = choose(collect(tabular).jobs, None, KL_CANDIDATES)
    assert kl == Metric("val/kl") and "exact" in kl.label and "[nats]" in kl.label


def test_partial_sweep_is_reported_and_drawn(tmp_path):
    sweep = synthetic_sweep(tmp_path / "partial", losses=("logistic", "squared"), betas=(0.1, 1.0), seeds=(0,))
    # A running job of squared that already beats every completed one, and a job with no summary yet.
    live = [
        write_job(
            sweep,
            loss="squared",
            beta=0.3,
            status="running",
            history=[(25, {"val/win_rate": 0.95, "val/kl_token": 1.0, "val/offline_reg": 0.5})],
        ),
        write_job(
            sweep,
            loss="logistic",
            beta=0.3,
            status=None,
            history=[(25, {"val/win_rate": 0.55, "val/kl_token": 2.0, "val/offline_reg": 1.0})],
        ),
        write_job(sweep, loss="hinge", beta=0.1, status=None),  # just started: nothing logged yet
    ]
    with RunLock(live[0]), RunLock(live[1]), RunLock(live[2]):  # live processes train there
        report = make_report(sweep)
    text = report.path.read_text()
    assert report.sweep.partial and report.sweep.status_counts == {"completed": 4, "running": 3}
    assert "**Status: PARTIAL.** 3 of 7 jobs have not ended (3 running)" in text
    assert table_rows(text, "hinge") == [["hinge"] + ["—"] * 6 + ["1 unfinished"]]
    assert set(report.figures) == {"tradeoff", "beta", "kl_beta", "regularizer_kl", "dynamics", "loss_functions"}
    for png in PNGS:
        assert (sweep / png).read_bytes().startswith(PNG_SIGNATURE)
    running = table_rows(text, "`beta=0.3,loss=squared,optim.lr=1e-05`")
    assert running[0][1] == "running (partial)" and running[0][7] == "0.95" and running[0][6] == "25"
    # The best beta counts completed jobs only, and says that one configuration is still running.
    squared = table_rows(text, "squared")[0]
    assert squared[1] != "0.3" and squared[-1] == "only 2 β with a value: no fit; 1 unfinished"
    assert report.configs.set_index("config").loc["beta=0.3,loss=squared,optim.lr=1e-05", "partial"]


def test_failed_job_is_listed_with_its_error_and_the_rest_is_drawn(tmp_path):
    sweep = synthetic_sweep(tmp_path / "failed", losses=("logistic", "hinge"), betas=(0.1, 1.0), seeds=(0,))
    write_job(
        sweep,
        loss="hinge",
        beta=3.0,
        status="failed",
        error="RuntimeError: CUDA out of memory | at step 3",
        history=[(0, {"val/win_rate": 0.5, "val/kl_token": 0.0})],
    )
    report = make_report(sweep)
    text = report.path.read_text()
    assert "**Status: complete.** All 5 jobs have ended." in text and "1 failed" in text
    assert "## Failed jobs" in text
    assert (
        "- `beta=3.0,loss=hinge,optim.lr=1e-05` (after 0 steps): RuntimeError: CUDA out of memory \\| at step 3" in text
    )
    assert "beta=3.0,loss=hinge,optim.lr=1e-05" not in set(report.configs["config"])  # not averaged in
    for png in PNGS:
        assert (sweep / png).read_bytes().startswith(PNG_SIGNATURE)


def test_report_cli_errors_name_the_problem(tmp_path, capsys):
    assert report_main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "holds no job directories" in capsys.readouterr().err


def test_figures_are_not_attached_to_wandb_disabled(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    caplog.set_level(logging.INFO)
    sweep = fabricated_sweep(tmp_path)
    report = make_report(sweep)
    assert attach_to_wandb(report) is False
    assert "did not log to wandb" in caplog.text
    config = sweep / "beta=0.1,loss=hinge,optim.lr=1e-05,seed=0" / "config.yaml"
    config.write_text(
        config.read_text() + "logger:\n  wandb: {project: p, entity: null, group: handmade, mode: null}\n"
    )
    caplog.clear()
    assert attach_to_wandb(make_report(sweep)) is False
    assert "wandb is disabled (WANDB_MODE=disabled)" in caplog.text and "local only" in caplog.text


@pytest.mark.slow
def test_report_on_a_real_smoke_sweep(tmp_path):
    """A real multirun whose jobs log no win rate or KL: the report draws what it can and says why."""
    result = run_cli(["-m", "+experiment=smoke", "loss=logistic,hinge", "beta=0.1,1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "multirun" / "smoke"
    report = subprocess.run(
        [sys.executable, "-m", "gpo_lab.report", str(sweep)], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "figures: beta.png, dynamics.png, loss_functions.png" in report.stdout
    text = (sweep / "report.md").read_text()
    assert "Figure 'tradeoff' not drawn: no KL metric was logged" in text
    assert "val/win_rate was not logged; the quality axis uses val/rewards/accuracies instead." in text
    assert not (sweep / "tradeoff.png").exists()
    for png in ("beta.png", "dynamics.png", "loss_functions.png"):
        assert (sweep / png).read_bytes().startswith(PNG_SIGNATURE)
    for job in ("beta=0.1,loss=hinge", "beta=0.1,loss=logistic", "beta=1,loss=hinge", "beta=1,loss=logistic"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        row = table_rows(text, f"`{job}`")[0]
        assert row[1] == "completed" and row[6] == str(summary["steps"])
        assert row[7] == f"{summary['final']['val/rewards/accuracies']:.4g}"
        assert row[8] == f"{summary['final']['val/offline_reg']:.4g}"


def test_figures_are_attached_to_the_sweeps_wandb_group_when_online(tmp_path, monkeypatch):
    """The online path, with wandb.init replaced: what would be sent, and to which group."""
    import wandb

    class Run:
        url = "https://wandb.example/run"
        settings = type("Settings", (), {"sync_dir": "unused"})

        def __init__(self, **kwargs):
            self.init, self.logged, self.summary, self.finished = kwargs, {}, {}, False

        def log(self, values):
            self.logged.update(values)

        def finish(self):
            self.finished = True

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: runs.append(Run(**kwargs)) or runs[-1])
    monkeypatch.setattr(wandb_io, "reachable_mode", lambda mode: (mode, None))  # no network asked
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    sweep = fabricated_sweep(tmp_path)
    for config in sweep.glob("*/config.yaml"):
        config.write_text(
            config.read_text() + "logger:\n  wandb: {project: gpo, entity: team, group: handmade, mode: null}\n"
        )
    assert attach_to_wandb(make_report(sweep)) is True
    (run,) = runs
    assert (run.init["project"], run.init["entity"], run.init["group"], run.init["job_type"]) == (
        "gpo",
        "team",
        "handmade",
        "report",
    )
    assert run.init["mode"] == "online"
    assert {key for key, value in run.logged.items() if isinstance(value, wandb.Image)} == {
        "report/figures/tradeoff",
        "report/figures/beta",
        "report/figures/kl_beta",
        "report/figures/regularizer_kl",
        "report/figures/dynamics",
        "report/figures/loss_functions",
    }
    charts = {key for key, value in run.logged.items() if isinstance(value, wandb.plot.CustomChart)}
    assert charts == {"report/tradeoff", "report/beta", "report/kl_beta"}
    assert isinstance(run.logged["report/jobs"], wandb.Table) and run.summary["report/partial"] is False
    assert run.finished
