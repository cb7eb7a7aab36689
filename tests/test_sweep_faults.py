"""What the report and status say of a sweep: one experiment per directory, honest states and exit codes.

A sweep directory holds one experiment (a second is refused at launch); the report counts the jobs of the
grid with the status command's states, says PARTIAL or FAILED and exits 3 unless the sweep is complete;
status shows a single run's directory, and both count a grid point typed twice once.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from gpo_lab.errors import ConfigError
from gpo_lab.report import collect
from gpo_lab.report.__main__ import EXIT_INCOMPLETE
from gpo_lab.report.__main__ import main as report_main
from gpo_lab.run.fingerprint import SweepDirectoryHoldsAnotherExperiment, check_same_experiment
from gpo_lab.status import main as status_main
from gpo_lab.status import sweep_status
from tests.helpers import CONF_DIR, ROOT
from tests.helpers.cli import run_cli
from tests.helpers.sweeps import write_job

HISTORY = [(10, {"val/win_rate": 0.6, "val/kl_token": 1.0, "val/offline_reg": 0.5})]


def multirun_config(overrides: list[str], sweep_file: str | None = None):
    """The config Hydra composes for ``python -m gpo_lab -m OVERRIDES`` (or ``--config-dir sweeps --config-name
    SWEEP_FILE``) and saves as the sweep's multirun.yaml."""
    config_dir = ROOT / "sweeps" if sweep_file else CONF_DIR
    search = [f"hydra.searchpath=[file://{CONF_DIR}]"] if sweep_file else []
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return loader.load_configuration(sweep_file or "config", search + overrides, run_mode=RunMode.MULTIRUN)


def swept_once(sweep, overrides: list[str], sweep_file: str | None = None):
    """A sweep directory as an earlier sweep left it: its multirun.yaml and one started job."""
    sweep.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(multirun_config(overrides, sweep_file), sweep / "multirun.yaml")
    (sweep / "beta=0.1").mkdir()
    (sweep / "beta=0.1" / "config.yaml").write_text("beta: 0.1\n")
    return sweep


def grid(sweep, task: list[str]):
    """A hand-written multirun.yaml whose grid is the product of ``task``'s sweep overrides."""
    hydra = {
        "sweeper": {"params": None},
        "overrides": {"task": task},
        "job": {"config": {"override_dirname": {"exclude_keys": []}}},
    }
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    return sweep


# 2. One experiment per sweep directory.


@pytest.mark.parametrize(
    "before, after",
    [
        (["+experiment=smoke", "beta=0.1,1"], ["+experiment=smoke", "beta=0.3,3"]),  # the grid extended
        (["+experiment=smoke", "loss=logistic", "beta=0.1,1"], ["+experiment=smoke", "loss=hinge", "beta=0.1,1"]),
        (["+experiment=smoke", "trainer.max_steps=4,10"], ["+experiment=smoke", "trainer.max_steps=20"]),
    ],
)
def test_a_sweep_that_extends_the_grid_is_accepted(tmp_path, before, after):
    check_same_experiment(swept_once(tmp_path, before), multirun_config(after))


def test_the_sweep_file_and_its_inline_grid_are_one_experiment(tmp_path):
    swept_once(tmp_path, [], sweep_file="smoke")  # python -m gpo_lab -m --config-dir sweeps --config-name smoke
    check_same_experiment(tmp_path, multirun_config(["+experiment=smoke", "loss=logistic,hinge", "beta=0.1,1"]))


@pytest.mark.parametrize(
    "after, named",
    [
        (["+experiment=bandit", "beta=0.3,3"], "builder: "),
        (["beta=0.3,3"], "trainer.max_steps: 10 -> "),  # the default study, not the smoke experiment
        (["+experiment=smoke", "beta=0.3,3", "trainer.max_steps=20"], "trainer.max_steps: 10 -> 20"),
    ],
)
def test_a_sweep_of_another_experiment_is_refused(tmp_path, after, named):
    swept_once(tmp_path, ["+experiment=smoke", "beta=0.1,1"])
    with pytest.raises(SweepDirectoryHoldsAnotherExperiment) as refused:
        check_same_experiment(tmp_path, multirun_config(after))
    message = str(refused.value)
    assert named in message and "another experiment" in message and "name=..." in message


@pytest.mark.slow
def test_the_second_experiment_is_refused_at_launch_and_nothing_is_written(tmp_path):
    sweep = swept_once(tmp_path / "mixed", ["+experiment=smoke", "beta=0.1,1"])
    before = (sweep / "multirun.yaml").read_text()
    result = run_cli(["-m", "+experiment=bandit", "beta=0.3,3", f"hydra.sweep.dir={sweep}"], cwd=ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "holds the jobs of another experiment" in result.stderr and "builder: " in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["beta=0.1", "multirun.yaml"]
    assert (sweep / "multirun.yaml").read_text() == before


def test_a_directory_already_mixed_is_refused_by_the_report_and_flagged_by_status(tmp_path, capsys):
    sweep = tmp_path / "mixed"
    for loss, beta, experiment in (("logistic", 0.1, "smoke"), ("logistic", 1.0, "smoke"), ("squared", 0.3, "bandit")):
        job = write_job(sweep, loss=loss, beta=beta, history=HISTORY)
        (job / ".hydra").mkdir()
        choices = {"hydra": {"runtime": {"choices": {"experiment": experiment}}}}
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(choices))
    assert report_main([str(sweep), "--wandb", "off"]) == 2
    err = capsys.readouterr().err
    assert "2 experiments" in err and "experiment=smoke: 2 job(s)" in err and "experiment=bandit: 1 job(s)" in err
    assert not (sweep / "report.md").exists()
    assert status_main([str(sweep)]) == 0
    assert "warning: " in capsys.readouterr().err
    one = tmp_path / "one"  # control: one experiment
    write_job(one, loss="logistic", beta=0.1, history=HISTORY)
    assert len(collect(one).jobs) == 1


# 3. The report's states are the status command's; PARTIAL, FAILED and their exit code.


def four_point_grid(sweep):
    return grid(sweep, ["loss=logistic,hinge", "beta=0.1,1.0", "optim.lr=1e-05"])


def test_half_a_grid_is_partial_and_exits_3(tmp_path, capsys):
    sweep = four_point_grid(tmp_path / "half")
    for loss in ("logistic", "hinge"):
        write_job(sweep, loss=loss, beta=0.1, history=HISTORY)
    assert report_main([str(sweep), "--wandb", "off"]) == EXIT_INCOMPLETE == 3
    captured = capsys.readouterr()
    text = (sweep / "report.md").read_text()
    assert "**Status: PARTIAL.** 2 of 4 jobs have not ended (2 not started)" in text
    assert "Jobs: 4 (2 completed, 2 not started)." in text and "complete" not in text.split("\n\n")[1]
    assert "PARTIAL: 2 completed, 2 not started" in captured.out and "exit code 3" in captured.err.lower()
    assert status_main([str(sweep)]) == 0
    assert "2 completed, 2 not started" in capsys.readouterr().out


def test_a_killed_job_is_interrupted_not_running(tmp_path, capsys):
    sweep = tmp_path / "killed"
    write_job(sweep, loss="logistic", beta=0.1, history=HISTORY)
    write_job(sweep, loss="logistic", beta=1.0, status="running", history=HISTORY)  # no live process holds it
    assert report_main([str(sweep), "--wandb", "off"]) == 3
    text = (sweep / "report.md").read_text()
    assert "1 of 2 jobs have not ended (1 interrupted)" in text and "still running" not in text
    assert "interrupted (partial)" in text
    assert [job.state for job in sweep_status(sweep)] == ["completed", "interrupted"]


def test_an_all_failed_sweep_is_failed_and_exits_3(tmp_path, capsys):
    sweep = tmp_path / "failed"
    for beta in (0.1, 1.0):
        write_job(sweep, loss="logistic", beta=beta, status="failed", error="NonFiniteError: loss is nan")
    assert report_main([str(sweep), "--wandb", "off"]) == 3
    text = (sweep / "report.md").read_text()
    assert "**Status: FAILED.** All 2 jobs failed" in text and "Status: complete" not in text
    out = capsys.readouterr().out
    assert "FAILED: 2 failed" in out
    # The failures, not missing metrics, are why there is no figure of results; the loss shapes are still drawn.
    assert "no KL metric" not in text + out and "not drawn" not in text + out and "was logged" not in text
    assert "note: Every job failed, so no figure of results was drawn (tradeoff, beta," in out
    assert (sweep / "loss_functions.png").exists() and not (sweep / "tradeoff.png").exists()


def test_a_complete_sweep_exits_0_even_with_a_failed_job(tmp_path, capsys):
    sweep = four_point_grid(tmp_path / "done")
    for loss in ("logistic", "hinge"):
        write_job(sweep, loss=loss, beta=0.1, history=HISTORY)
        write_job(sweep, loss=loss, beta=1.0, history=HISTORY, status="failed" if loss == "hinge" else "completed")
    assert report_main([str(sweep), "--wandb", "off"]) == 0
    assert "**Status: complete.** All 4 jobs have ended. 1 failed" in (sweep / "report.md").read_text()


# 16. A single run's directory; a grid point typed twice.


def test_status_shows_a_single_runs_directory(tmp_path, capsys):
    run = write_job(tmp_path / "outputs" / "smoke", loss="hinge", beta=0.5, history=HISTORY)
    assert status_main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "single run's directory, not a sweep" in out and run.name in out and "1 completed" in out
    assert "no jobs" not in out
    assert status_main([str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "completed"


@pytest.mark.parametrize("betas", ["0.1,0.1,1.0", "0.1,1e-1,1.0", "0.1,0.10,1.0"])
def test_a_grid_point_typed_twice_counts_once_in_status_and_report(tmp_path, capsys, betas):
    sweep = grid(tmp_path / "twice", ["loss=logistic", f"beta={betas}", "optim.lr=1e-05"])
    write_job(sweep, loss="logistic", beta=0.1, history=HISTORY)
    write_job(sweep, loss="logistic", beta=1.0, history=HISTORY)
    if "1e-1" in betas:  # Hydra ran the second spelling into a directory of its own
        write_job(sweep, loss="logistic", beta="1e-1", history=HISTORY)
    assert [job.state for job in sweep_status(sweep)] == ["completed", "completed"]
    assert status_main([str(sweep)]) == 0
    assert "\n2 completed" in capsys.readouterr().out
    assert report_main([str(sweep), "--wandb", "off"]) == 0
    assert "Jobs: 2 (2 completed)." in (sweep / "report.md").read_text()


def test_a_sweep_with_no_started_job_is_refused_by_the_report(tmp_path, capsys):
    sweep = four_point_grid(tmp_path / "unstarted")
    with pytest.raises(ConfigError, match="none of the 4 jobs of its grid has started"):
        collect(sweep)
