"""Faults, round 2: nothing leaked into names or files, no directory shared by two configs, no step twice, no
damaged checkpoint that blocks a run, no nested or ambiguous directory names."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from gpo_lab.errors import ConfigError
from gpo_lab.status import sweep_status
from gpo_lab.store.records import read_metrics
from gpo_lab.store.redaction import redact_secrets
from tests.helpers import CONF_DIR, ROOT
from tests.helpers.cli import run_cli
from tests.helpers.runs import compose_config, run_training

SECRET = "s3cr3t-0123456789abcdef"
SMOKE = ["+experiment=smoke", "trainer.max_steps=6", "trainer.val_check_interval=3"]


def job_name(overrides):
    """The directory name a run with these overrides gets (the last part of hydra.run.dir)."""
    return compose_config(overrides).hydra.run.dir.split("/", 2)[2]  # outputs/<name>/<job name>


# 1. Secrets: by name (secret-looking keys only) and by value (a secret environment variable's value).


@pytest.mark.parametrize(
    "config",
    [
        {"model": {"tokenizer": {"_target_": "gpo_lab.models.tokenizers.byte_tokenizer"}}},
        {"callbacks": {"sample_bank": {"max_new_tokens": 64}}},
        {"data": {"sft_token_nll": 1.25, "sft_key": "ab12", "pad_token": "<pad>"}},
    ],
)
def test_ordinary_keys_that_mention_tokens_stay_readable(config):
    assert redact_secrets(config) == config


@pytest.mark.parametrize("variable", ["WANDB_API_KEY", "HF_TOKEN", "MY_SERVICE_PASSWORD"])
def test_a_secret_environment_value_is_redacted_under_any_key(monkeypatch, variable):
    monkeypatch.setenv(variable, SECRET)
    config = {"extra": {"foo": SECRET, "header": f"Bearer {SECRET}"}, "hf_token": "abc", "lr": 0.1}
    redacted = redact_secrets(config)
    assert SECRET not in json.dumps(redacted)
    assert redacted == {
        "extra": {"foo": "<redacted>", "header": "Bearer <redacted>"},
        "hf_token": "<redacted>",
        "lr": 0.1,
    }


@pytest.mark.parametrize(
    "override",
    ["+x.api_key=${oc.env:GPO_TEST_SECRET}", "+x.foo=${oc.env:GPO_TEST_SECRET}", f"+x.foo={SECRET}"],
)
def test_directory_names_never_hold_a_secret(monkeypatch, override):
    monkeypatch.setenv("GPO_TEST_SECRET", SECRET)  # a secret-looking variable name
    cfg = compose_config(["+experiment=smoke", override, "logger=wandb"])
    assert SECRET not in cfg.hydra.run.dir and SECRET not in cfg.hydra.sweep.subdir
    assert SECRET not in str(cfg.logger.wandb.name)
    assert cfg.hydra.run.dir.startswith("outputs/smoke/+x.")


@pytest.mark.slow
@pytest.mark.parametrize(
    "override",
    ["+extra.api_key=${oc.env:GPO_TEST_SECRET}", "+extra.foo=${oc.env:GPO_TEST_SECRET}", f"+extra.api_key={SECRET}"],
)
def test_a_secret_reaches_no_file_and_no_path_of_the_run(tmp_path, override):
    result = run_cli(
        ["+experiment=smoke", "trainer.max_steps=2", override, "logger=wandb"],
        cwd=tmp_path,
        env={"GPO_TEST_SECRET": SECRET, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert SECRET not in result.stdout + result.stderr
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "last.ckpt" for p in files) and any(p.parts[-3] == "wandb" for p in files)
    for path in [*files, *(tmp_path / "outputs").rglob("*")]:
        assert SECRET not in str(path)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


# 2. One directory, one config: a different resolved config is refused before anything is written.


def snapshot(run_dir):
    return {
        p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "second",
    [
        ["+experiment=bandit", "name=shared", "trainer.max_steps=2"],  # another experiment, same overrides
        ["+experiment=smoke", "name=shared", "trainer.max_steps=2", "data.batch_size=2"],  # another value
    ],
)
def test_a_completed_directory_is_not_reused_by_another_config(tmp_path, second):
    run_dir = tmp_path / "shared"
    first = run_training(["+experiment=smoke", "name=shared", "trainer.max_steps=2"], run_dir)
    assert first["status"] == "completed"
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="holds a run of another config") as error:
        run_training(second, run_dir)
    assert "name=" in str(error.value) and " -> " in str(error.value)  # the differing keys, and the fix
    assert snapshot(run_dir) == before  # nothing overwritten
    again = run_training(["+experiment=smoke", "name=shared", "trainer.max_steps=2"], run_dir)
    assert again["status"] == "completed" and again["final"] == first["final"]  # the same config is still skipped
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_directory_written_before_fingerprints_is_still_skipped_and_still_guarded(tmp_path):
    run_dir = tmp_path / "shared"
    smoke = ["+experiment=smoke", "name=shared", "trainer.max_steps=2"]
    run_training(smoke, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["config_fingerprint"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    before = snapshot(run_dir)
    assert run_training(smoke, run_dir)["final"] == summary["final"] and snapshot(run_dir) == before
    with pytest.raises(ConfigError, match=r"bandit.num_actions: \(absent\) -> 10"):
        run_training(["+experiment=bandit", "name=shared", "trainer.max_steps=2"], run_dir)
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_an_interrupted_directory_is_not_resumed_by_another_config(tmp_path):
    run_dir = tmp_path / "run"
    crash = ["+callbacks.crash._target_=tests.helpers.faults.RaiseAtStep", "+callbacks.crash.step=4"]
    with pytest.raises(RuntimeError, match="injected crash"):
        run_training(SMOKE + ["callbacks.checkpoint.every_n_train_steps=2"] + crash, run_dir)
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="optim.lr: 0.001 -> 0.002"):
        run_training(SMOKE + ["callbacks.checkpoint.every_n_train_steps=2", "optim.lr=2e-3"], run_dir)
    assert snapshot(run_dir) == before
    archived = run_training(
        SMOKE + ["callbacks.checkpoint.every_n_train_steps=2", "optim.lr=2e-3", "skip_completed=false"], run_dir
    )
    assert archived["status"] == "completed" and archived["lr"] == 2e-3
    previous = next(run_dir.glob("previous-*"))
    assert (previous / "metrics.jsonl").read_bytes() == before[Path("metrics.jsonl")]


# 3. Every step once in metrics.jsonl, whatever was killed when.


def train_steps(run_dir):
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_then_rerun_logs_every_step_once(tmp_path):
    run_dir = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.helpers.faults.KillAtStep", "+callbacks.kill.step=2"]
    args = SMOKE + ["callbacks.checkpoint.every_n_train_steps=4", f"hydra.run.dir={run_dir}"]
    assert run_cli(args + kill, cwd=ROOT).returncode == -9
    assert not (run_dir / "checkpoints" / "last.ckpt").exists() and train_steps(run_dir)
    result = run_cli(args, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert train_steps(run_dir) == list(range(6))
    assert "training from step 0" in result.stderr


@pytest.mark.slow
def test_a_removed_checkpoint_then_rerun_logs_every_step_once(tmp_path):
    run_dir = tmp_path / "run"
    crash = ["+callbacks.crash._target_=tests.helpers.faults.RaiseAtStep", "+callbacks.crash.step=5"]
    args = SMOKE + ["callbacks.checkpoint.every_n_train_steps=2"]
    with pytest.raises(RuntimeError, match="injected crash"):
        run_training(args + crash, run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    assert run_training(args, run_dir)["status"] == "completed"
    assert train_steps(run_dir) == list(range(6))
    vals = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "val/loss" in r]
    assert vals == sorted(set(vals))  # no validation twice either


# 4. A damaged checkpoint is named, moved aside and never blocks the run.


def damage_truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_garbage(path):
    path.write_bytes(os.urandom(4096))


def damage_not_a_checkpoint(path):
    torch.save({"weights": torch.zeros(3)}, path)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [damage_truncated, damage_garbage, damage_not_a_checkpoint])
def test_a_damaged_last_checkpoint_is_moved_aside_and_the_run_starts_over(tmp_path, caplog, damage):
    run_dir = tmp_path / "run"
    args = SMOKE + ["callbacks.checkpoint.every_n_train_steps=2"]
    with pytest.raises(RuntimeError, match="injected crash"):
        run_training(
            args + ["+callbacks.crash._target_=tests.helpers.faults.RaiseAtStep", "+callbacks.crash.step=3"], run_dir
        )
    last = run_dir / "checkpoints" / "last.ckpt"
    damage(last)
    damaged = last.read_bytes()
    assert run_training(args, run_dir)["status"] == "completed"
    aside = list((run_dir / "checkpoints").glob("last.ckpt.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept, byte for byte
    assert any(str(last) in r.getMessage() and "moved it to" in r.getMessage() for r in caplog.records)
    assert train_steps(run_dir) == list(range(6))


@pytest.mark.slow
def test_a_damaged_last_checkpoint_falls_back_to_an_older_good_one(tmp_path, caplog):
    run_dir = tmp_path / "run"
    args = SMOKE + ["callbacks.checkpoint.every_n_train_steps=2", "callbacks.checkpoint.save_top_k=-1"]
    with pytest.raises(RuntimeError, match="injected crash"):
        run_training(
            args + ["+callbacks.crash._target_=tests.helpers.faults.RaiseAtStep", "+callbacks.crash.step=5"], run_dir
        )
    damage_truncated(run_dir / "checkpoints" / "last.ckpt")
    caplog.set_level("INFO")
    assert run_training(args, run_dir)["status"] == "completed"
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Resuming from")]
    assert resumed and "step=4.ckpt" in resumed[0] and "(step 4)" in resumed[0]
    assert train_steps(run_dir) == list(range(6))


# 9. Flat, bounded, unambiguous names.


@pytest.mark.parametrize(
    "value", ["data/pairs.jsonl", "/abs/dir/pairs.jsonl", "../up/pairs.jsonl", "x" * 300, "a,b", "[1,2]"]
)
def test_a_directory_name_is_one_flat_bounded_component(value):
    name = job_name(["+experiment=smoke", f"+extra.value='{value}'" if value == "a,b" else f"+extra.value={value}"])
    assert "/" not in name and "\\" not in name and 0 < len(name) <= 240
    assert name.count(",") == 0  # one item: no separator inside a value


def test_same_base_name_in_two_folders_gets_two_names():
    names = {job_name(["+experiment=smoke", f"+extra.path={folder}/pairs.jsonl"]) for folder in ("a", "b", "/c")}
    assert len(names) == 3 and all(
        "pairs.jsonl" in n and Path(n).name == n for n in names
    )  # flat, so status tells them apart


def test_ordinary_overrides_keep_their_readable_names():
    assert job_name(["+experiment=smoke", "loss=hinge", "beta=0.1"]) == "beta=0.1,loss=hinge"
    assert job_name(["+experiment=smoke", "optim.lr=1e-3", "seed=1"]) == "optim.lr=1e-3,seed=1"
    assert job_name(["+experiment=smoke"]) == "default"


def test_a_run_written_before_fingerprints_is_compared_by_its_config_yaml():
    from gpo_lab.run.fingerprint import differences

    older = {"model": {"tokenizer": "<redacted>"}, "beta": 0.1}  # redacted by name then, readable now
    assert differences(older, {"model": {"tokenizer": {"_target_": "tok"}}, "beta": 0.1}) == []
    assert differences(older, {"model": {"tokenizer": {"_target_": "tok"}}, "beta": 0.2}) == ["beta: 0.1 -> 0.2"]


def test_the_names_left_out_of_directories_are_the_keys_left_out_of_fingerprints():
    from gpo_lab.run.fingerprint import NOT_IDENTIFYING

    excluded = yaml.safe_load((CONF_DIR / "hydra" / "gpo_lab.yaml").read_text())["job"]["config"]
    excluded = set(excluded["override_dirname"]["exclude_keys"]) - {"experiment"}
    hydra_only = {k for k in excluded if k.startswith("hydra")}
    assert excluded - hydra_only <= set(NOT_IDENTIFYING)


@pytest.mark.slow
def test_a_sweep_over_paths_gets_flat_distinct_directories_that_status_lists(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        rows = [{"prompt": f"q{i} {folder}", "chosen": "yes", "rejected": "no"} for i in range(8)]
        (tmp_path / folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli(
        ["-m", "+experiment=smoke", "data=hf", "data.dataset.path=a/pairs.jsonl,b/pairs.jsonl"]
        + ["data.dataset.split=train", "trainer.max_steps=1", "trainer.val_check_interval=1"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = tmp_path / "multirun" / "smoke"
    dirs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(dirs) == 2 and all((sweep / d / "summary.json").is_file() for d in dirs)
    jobs = sweep_status(sweep)
    assert sorted(job.dirname for job in jobs) == dirs and {job.state for job in jobs} == {"completed"}
    summaries = [json.loads((sweep / d / "summary.json").read_text()) for d in dirs]
    assert sorted(o for s in summaries for o in s["overrides"] if o.startswith("data.dataset.path")) == [
        "data.dataset.path=a/pairs.jsonl",
        "data.dataset.path=b/pairs.jsonl",
    ]
