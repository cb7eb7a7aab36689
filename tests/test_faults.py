"""The fault suite: bad input, numerical faults, kills and concurrent jobs never lose or corrupt results."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from gpo_lab.errors import ConfigError
from gpo_lab.store.lock import RunDirectoryBusy, RunLock
from gpo_lab.store.records import read_metrics
from gpo_lab.store.redaction import redact_secrets
from tests.helpers import ROOT
from tests.helpers.cli import run_cli
from tests.helpers.runs import run_training

SMOKE = [
    "+experiment=smoke",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "callbacks.checkpoint.every_n_train_steps=2",
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def failing_run(tmp_path, overrides):
    with pytest.raises(ConfigError) as error:
        run_training(overrides, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and str(error.value) in summary["error"]
    return str(error.value)


@pytest.mark.parametrize(
    "override,expected",
    [
        ("optim.lr=0", "optim.lr must be a number > 0"),
        ("optim.lr=-1e-3", "optim.lr must be a number > 0"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("trainer.max_steps=0", "trainer.max_steps must be an integer >= 1"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval must be an integer >= 1"),
        ("data.max_prompt_length=96", "leaves no room for a response"),
        ("optim.warmup_steps=-2", "optim.warmup_steps must be an integer >= 0"),
        ("beta=-0.5", "beta must be a finite number > 0"),
    ],
)
def test_bad_values_fail_before_any_model_is_loaded(tmp_path, override, expected):
    assert expected in failing_run(tmp_path, ["+experiment=smoke", override])
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_misspelt_key_is_refused_by_hydra(tmp_path):
    result = run_cli(["+experiment=smoke", "bta=0.1", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode != 0 and "Key 'bta' is not in struct" in result.stderr


def data_overrides(path):
    return ["+experiment=smoke", "data=hf", f"data.dataset.path={path}", "data.dataset.split=train"]


def test_malformed_json_line_is_reported_with_its_number(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3)
    path.write_text(path.read_text() + '{"prompt": "p", "chosen": "a", "rejected": \n')
    assert "pairs.jsonl, line 4: not valid JSON" in failing_run(tmp_path, data_overrides(path))


def test_non_string_column(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": 1.5, "rejected": "b"}] * 4)
    message = failing_run(tmp_path, data_overrides(path))
    assert "row 1: column 'chosen' (chosen) holds float 1.5; expected text" in message


def test_empty_dataset(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert "at least 2 are needed" in failing_run(tmp_path, data_overrides(path))


def test_every_pair_dropped_by_truncation(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "", "rejected": "b"}] * 8)
    assert "Every train pair was dropped" in failing_run(tmp_path, data_overrides(path))


@pytest.mark.slow
def test_identical_pairs_are_counted(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "same", "rejected": "same" if i < 3 else "other"} for i in range(16)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    summary = run_training(data_overrides(path) + ["trainer.max_steps=2", "trainer.val_check_interval=2"], tmp_path)
    assert summary["data"]["train_identical"] + summary["data"]["validation_identical"] == 3


@pytest.mark.slow
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match="Non-finite loss at step 5"):
        run_training(
            SMOKE + ["+callbacks.poison._target_=tests.helpers.faults.PoisonWeightsAtStep", "+callbacks.poison.step=5"],
            tmp_path,
        )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "Non-finite loss at step 5" in summary["error"]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_second_process_on_a_busy_run_directory_is_refused(tmp_path):
    with RunLock(tmp_path):
        assert RunLock.is_held(tmp_path)
        with pytest.raises(RunDirectoryBusy, match="already training"):
            run_training(["+experiment=smoke"], tmp_path)
    assert not RunLock.is_held(tmp_path)


@pytest.mark.slow
def test_secrets_never_reach_the_saved_config(tmp_path):
    assert redact_secrets({"a": {"api_key": "abc", "token": None}, "b": [{"WANDB_API_KEY": "x"}]}) == {
        "a": {"api_key": "<redacted>", "token": None},
        "b": [{"WANDB_API_KEY": "<redacted>"}],
    }
    run_training(["+experiment=smoke", "trainer.max_steps=1", "+extra.api_key=s3cr3t-value"], tmp_path / "a")
    assert "s3cr3t-value" not in (tmp_path / "a" / "config.yaml").read_text()
    assert "s3cr3t-value" not in (tmp_path / "a" / "summary.json").read_text()
    # A key taken from the environment by interpolation is in no file of the run, Hydra's included.
    result = run_cli(
        [
            "+experiment=smoke",
            "trainer.max_steps=1",
            "+extra.token=${oc.env:GPO_TEST_TOKEN}",
            f"hydra.run.dir={tmp_path / 'b'}",
        ],
        cwd=ROOT,
        env={"GPO_TEST_TOKEN": "env-s3cr3t"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "env-s3cr3t" not in result.stdout + result.stderr
    for path in (tmp_path / "b").rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".jsonl", ".log"):
            assert "env-s3cr3t" not in path.read_text(), path


def final_metrics(run_dir):
    return json.loads((run_dir / "summary.json").read_text())["final"]


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_matches_the_uninterrupted_run(tmp_path):
    reference = tmp_path / "uninterrupted"
    assert run_cli(SMOKE + [f"hydra.run.dir={reference}"], cwd=ROOT).returncode == 0
    killed = tmp_path / "killed"
    steps = sorted(random.Random(7).sample(range(1, 12), 2))  # kills at checkpoint and non-checkpoint steps alike
    for step in steps:
        result = run_cli(
            SMOKE
            + [
                f"hydra.run.dir={killed}",
                "+callbacks.kill._target_=tests.helpers.faults.KillAtStep",
                f"+callbacks.kill.step={step}",
            ],
            cwd=ROOT,
        )
        assert result.returncode == -9, result.stderr[-2000:]
        assert json.loads((killed / "summary.json").read_text())["status"] == "running"
    result = run_cli(SMOKE + [f"hydra.run.dir={killed}"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Resuming from" in result.stderr
    expected, got = final_metrics(reference), final_metrics(killed)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    steps_logged = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if "train/loss" in r]
    assert steps_logged == list(range(12))  # no step lost or logged twice across the kills
    train_losses = lambda d: [r["train/loss"] for r in read_metrics(d / "metrics.jsonl") if "train/loss" in r]
    assert train_losses(killed) == pytest.approx(train_losses(reference), rel=1e-5)


TINY_SYNTHETIC = [
    "+experiment=synthetic",
    "synthetic.sft.steps=30",
    "synthetic.pairs.num_train_prompts=64",
    "synthetic.pairs.num_eval_prompts=16",
    "callbacks.sample_bank.num_prompts=16",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
]


@pytest.mark.slow
def test_four_jobs_at_once_share_one_empty_cache_and_one_output_root(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GPO_LAB_CACHE", str(cache))
    runs = [
        ["loss=logistic", "beta=0.1"],
        ["loss=hinge", "beta=0.1"],
        ["loss=logistic", "beta=1"],
        ["loss=savage", "beta=1"],
    ]
    env = {**os.environ, "GPO_LAB_CACHE": str(cache)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gpo_lab", *TINY_SYNTHETIC, *run],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in runs
    ]
    logs = [process.communicate(timeout=900)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], "\n".join(log[-2000:] for log in logs)
    assert len(list(cache.glob("sft-*"))) == 1 and len(list(cache.glob("pairs-*"))) == 1  # built once, shared
    assert sum("Training the SFT policy" in log for log in logs) == 1
    job_dir = lambda run: ",".join(sorted([*run, *TINY_SYNTHETIC[1:]]))  # named by the overrides
    assert sorted(p.name for p in (tmp_path / "outputs" / "synthetic").iterdir()) == sorted(map(job_dir, runs))
    for run in runs:
        alone = run_training([*TINY_SYNTHETIC, *run], tmp_path / "alone" / "_".join(run).replace("=", "-"))
        together = json.loads((tmp_path / "outputs" / "synthetic" / job_dir(run) / "summary.json").read_text())
        assert together["status"] == "completed"
        assert (together["loss"], together["beta"]) == (alone["loss"], alone["beta"])
        assert together["final"] == pytest.approx(alone["final"], rel=1e-5)
