"""Sweeps on a real SLURM cluster through hydra-submitit-launcher (see .ci/slurm-cluster)."""

import json
import subprocess
from pathlib import Path

import pytest

from gpo_lab.store.records import read_metrics
from tests.helpers import ROOT
from tests.helpers.cli import run_cli, wait_for
from tests.helpers.runs import run_training

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

GRID = ["-m", "cluster=local_slurm", "+experiment=smoke", "loss=logistic,hinge", "beta=0.5,1"]


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def test_grid_completes_and_a_rerun_trains_nothing(slurm_cluster, tmp_path):
    sweep = tmp_path / "grid"
    result = run_cli([*GRID, f"hydra.sweep.dir={sweep}"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    done = summaries(sweep)
    assert sorted(done) == [
        "beta=0.5,loss=hinge",
        "beta=0.5,loss=logistic",
        "beta=1,loss=hinge",
        "beta=1,loss=logistic",
    ]
    assert all(s["status"] == "completed" and s["steps"] == 10 and "val/loss" in s["final"] for s in done.values())
    stamps = {name: (sweep / name / "checkpoints" / "last.ckpt").stat().st_mtime_ns for name in done}

    again = run_cli([*GRID, f"hydra.sweep.dir={sweep}"], cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert summaries(sweep) == done
    assert {name: (sweep / name / "checkpoints" / "last.ckpt").stat().st_mtime_ns for name in done} == stamps
    logs = "".join(p.read_text() for p in sweep.rglob("*_log.err"))
    assert logs.count("already completed; skipping") == 4


def test_one_failing_job_leaves_the_other_three_complete(slurm_cluster, tmp_path):
    sweep = tmp_path / "failing"
    fail = [
        "+callbacks.fail._target_=tests.helpers.faults.FailFor",
        "+callbacks.fail.loss=hinge",
        "+callbacks.fail.beta=1",
        "+callbacks.fail.run_loss=${loss.fn}",
        "+callbacks.fail.run_beta=${beta}",
    ]
    result = run_cli([*GRID, *fail, f"hydra.sweep.dir={sweep}"], cwd=ROOT)
    assert result.returncode == 1, result.stderr[-3000:]  # the failed job is reported once all four have run
    states = {(s["loss"], s["beta"]): s for s in summaries(sweep).values()}
    assert sorted(states) == [("hinge", 0.5), ("hinge", 1), ("logistic", 0.5), ("logistic", 1)]
    assert states["hinge", 1]["status"] == "failed" and "injected failure" in states["hinge", 1]["error"]
    assert [k for k, s in states.items() if s["status"] == "completed"] == [k for k in states if k != ("hinge", 1)]


def test_requeued_job_resumes_and_matches_an_uninterrupted_run(slurm_cluster, tmp_path):
    overrides = [
        "+experiment=smoke",
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "callbacks.checkpoint.every_n_train_steps=5",
    ]
    slow = ["+callbacks.slow._target_=tests.helpers.faults.SlowDown", "+callbacks.slow.seconds=0.4"]
    sweep = tmp_path / "requeue"
    launch = subprocess.Popen(
        ["python", "-m", "gpo_lab", "-m", "cluster=local_slurm", *overrides, *slow, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        checkpoint = wait_for(lambda: next(sweep.glob("*/checkpoints/last.ckpt"), None), 180, "a first checkpoint")
        job_id = wait_for(
            lambda: subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split(),
            30,
            "the job in squeue",
        )[0]
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        _, stderr = launch.communicate(timeout=300)
    finally:
        launch.kill()
    assert launch.returncode == 0, stderr[-3000:]
    run_dir = checkpoint.parent.parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 30
    logs = "".join(p.read_text() for p in sweep.rglob("*_log.err"))
    assert "Resuming from" in logs
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]
    assert steps == list(range(30))

    uninterrupted = run_training(overrides, tmp_path / "uninterrupted")
    assert summary["final"].keys() == uninterrupted["final"].keys()
    for key, value in uninterrupted["final"].items():
        assert summary["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
