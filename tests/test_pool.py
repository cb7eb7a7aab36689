"""cluster=pool: a job run by a worker process that has run other jobs before computes exactly what
the same job computes alone."""

import json
from pathlib import Path

import pytest

from gpo_lab.store.records import read_metrics
from tests.helpers.cli import run_cli
from tests.helpers.runs import TINY_STUDY


def job_dir(sweep: Path, *parts: str) -> Path:
    (found,) = [d for d in sweep.iterdir() if d.is_dir() and all(p in d.name.split(",") for p in parts)]
    return found


@pytest.mark.slow
def test_a_pooled_job_equals_the_same_run_alone(tmp_path):
    common = [
        *TINY_STUDY,
        f"synthetic.cache_dir={tmp_path / 'cache'}",
        f"reference_cache.dir={tmp_path / 'reference_logps'}",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=2",
    ]
    # One worker runs the four jobs one after another; (squared, beta=2) comes last.
    sweep = run_cli(
        ["-m", "cluster=pool", "hydra.launcher.n_jobs=1", *common, "loss=logistic,squared", "beta=0.5,2"], tmp_path
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    alone = run_cli([*common, "loss=squared", "beta=2"], tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    # The workers share one terminal: no sampling bars there (a run alone shows them).
    assert "sampling policy" not in sweep.stderr and "sampling policy" in alone.stderr

    pooled_dir = job_dir(tmp_path / "multirun" / "synthetic", "loss=squared", "beta=2")
    alone_dir = job_dir(tmp_path / "outputs" / "synthetic", "loss=squared", "beta=2")
    pooled, single = (json.loads((d / "summary.json").read_text()) for d in (pooled_dir, alone_dir))
    assert pooled["status"] == single["status"] == "completed"
    assert pooled["final"] == single["final"] and pooled["best"] == single["best"]  # bit for bit
    assert {"val/win_rate", "val/kl_seq", "val/kl_token", "val/offline_reg"} <= set(pooled["final"])
    assert read_metrics(pooled_dir / "metrics.jsonl") == read_metrics(alone_dir / "metrics.jsonl")
    assert [r["step"] for r in read_metrics(pooled_dir / "metrics.jsonl") if "train/loss" in r] == [1, 3, 5]
