"""Sweeps: directory naming, failures that do not stop the others, skipping completed jobs, status."""

import json
import shutil

import pytest

from gpo_lab.status import expected_jobs, format_table, main, sweep_status
from gpo_lab.store.lock import RunLock
from tests.helpers import ROOT
from tests.helpers.cli import run_cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2 x 2 smoke sweep in which the beta=-1 jobs fail at start-up."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        [
            "-m",
            "+experiment=smoke",
            "loss=logistic,hinge",
            "beta=0.5,-1",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr[-3000:]  # the beta=-1 jobs failed, once every job had run
    return sweep_dir


def summary(path):
    return json.loads((path / "summary.json").read_text())


@pytest.mark.slow
def test_job_directories_are_named_by_their_overrides(sweep):
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    rest = "trainer.max_steps=4,trainer.val_check_interval=2"
    assert jobs == [
        f"beta=-1,loss=hinge,{rest}",
        f"beta=-1,loss=logistic,{rest}",
        f"beta=0.5,loss=hinge,{rest}",
        f"beta=0.5,loss=logistic,{rest}",
    ]


@pytest.mark.slow
def test_a_failing_job_never_stops_the_others(sweep):
    states = {p.name: summary(p) for p in sweep.iterdir() if p.is_dir()}
    failed = {name for name, s in states.items() if s["status"] == "failed"}
    completed = {name for name, s in states.items() if s["status"] == "completed"}
    assert failed == {n for n in states if n.startswith("beta=-1")}
    assert completed == {n for n in states if n.startswith("beta=0.5")}
    assert all("beta must be a finite number > 0" in states[n]["error"] for n in failed)


@pytest.mark.slow
def test_rerunning_the_sweep_skips_completed_jobs(sweep):
    done = [p for p in sweep.iterdir() if p.is_dir() and summary(p)["status"] == "completed"]
    before = {
        p: ((p / "metrics.jsonl").read_text(), (p / "checkpoints" / "last.ckpt").stat().st_mtime_ns) for p in done
    }
    result = run_cli(
        [
            "-m",
            "+experiment=smoke",
            "loss=logistic,hinge",
            "beta=0.5,-1",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
    )
    assert result.returncode == 1  # the beta=-1 jobs fail again
    assert result.stderr.count("already completed; skipping") == 2
    for path, (metrics, mtime) in before.items():
        assert (path / "metrics.jsonl").read_text() == metrics
        assert (path / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_status_lists_every_state(sweep, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    jobs = sorted(p.name for p in copy.iterdir() if p.is_dir())
    completed = [j for j in jobs if j.startswith("beta=0.5")]
    shutil.rmtree(copy / completed[0])  # not started yet
    interrupted = copy / completed[1]
    data = summary(interrupted) | {"status": "running"}  # killed mid-run
    (interrupted / "summary.json").write_text(json.dumps(data))
    running = [j for j in jobs if j.startswith("beta=-1")][0]
    with RunLock(copy / running):
        states = {job.dirname: job for job in sweep_status(copy)}
    assert set(states) == set(jobs) and expected_jobs(copy) == [
        "beta=0.5,loss=logistic,trainer.max_steps=4,trainer.val_check_interval=2",
        "beta=-1,loss=logistic,trainer.max_steps=4,trainer.val_check_interval=2",
        "beta=0.5,loss=hinge,trainer.max_steps=4,trainer.val_check_interval=2",
        "beta=-1,loss=hinge,trainer.max_steps=4,trainer.val_check_interval=2",
    ]
    assert states[completed[0]].state == "not started" and states[completed[0]].last_step is None
    assert states[completed[1]].state == "interrupted" and states[completed[1]].last_step == 4
    assert states[running].state == "running"
    other_failed = [j for j in jobs if j.startswith("beta=-1") and j != running][0]
    assert states[other_failed].state == "failed" and "beta must be" in states[other_failed].error
    table = format_table(list(states.values()))
    assert "1 running, 1 interrupted, 1 failed, 1 not started" in table
    assert main([str(sweep)]) == 1  # failed jobs: exit code 1
    printed = capsys.readouterr().out
    assert "2 completed, 2 failed" in printed and "val/loss" in printed
