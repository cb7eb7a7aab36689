"""Loggers of the ``logger`` group: wandb (offline without a key, read back from its files), CSV
and TensorBoard. None of these tests touches the network."""

from __future__ import annotations

import json
import logging
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpo_lab.errors import ConfigError
from gpo_lab.run.wandb_mode import has_credentials, resolve_mode
from gpo_lab.run.wandb_names import job_overrides, number, override_columns, short_name, sweep_group, swept_keys
from gpo_lab.store.records import read_metrics
from tests.helpers.runs import run_training
from tests.helpers.sweeps import synthetic_sweep

TINY = ["+experiment=smoke", "trainer.max_steps=4", "trainer.val_check_interval=2"]


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    """A machine where wandb was never logged in: no key in the environment, netrc or settings."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    return home


def read_wandb_records(path: Path):
    """The records of a ``.wandb`` transaction log, as wandb's protobuf ``Record`` messages.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks
    of chunks, each with a 7-byte header (CRC32, length, type: full/first/middle/last).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # block trailer too short for a header: padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        position += 7
        if position + length > len(data):  # a chunk still being written
            break
        chunk, position = data[position : position + length], position + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def offline_run(run_dir: Path, timeout: float = 60.0, attempt: int | None = None) -> dict:
    """Run metadata, config, history rows and metric definitions of the one offline run in run_dir
    (``attempt``: the one of that index, in order of their start, where a resumed job left several).

    wandb's service process may still be writing the log when ``finish()`` returns: wait for
    the run's exit record.
    """
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    if attempt is None:
        assert len(files) == 1, files
    else:
        files = [files[attempt]]
    deadline = time.monotonic() + timeout
    while True:
        records = list(read_wandb_records(files[0]))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    run, config, history, metrics, charts = None, {}, [], {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({item.key: json.loads(item.value_json) for item in run.config.update})
        elif kind == "config":
            for item in record.config.update:
                if list(item.nested_key[:2]) == ["_wandb", "visualize"]:  # a custom chart's spec
                    charts[item.nested_key[2]] = json.loads(item.value_json)["panel_config"]
                elif item.key:
                    config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            history.append(
                {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "metric" and record.metric.name:
            metrics[record.metric.name] = record.metric
    return {
        "file": files[0],
        "run": run,
        "config": config,
        "history": history,
        "metrics": metrics,
        "charts": charts,
        "exited": any(r.WhichOneof("record_type") == "exit" for r in records),
    }


def test_mode_is_offline_without_a_key_and_online_with_one(no_wandb_key, monkeypatch):
    assert not has_credentials() and resolve_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert has_credentials() and resolve_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode() == "offline"  # an explicit mode wins
    assert resolve_mode("disabled") == "disabled"
    with pytest.raises(ConfigError, match="Unknown wandb mode 'sometimes'"):
        resolve_mode("sometimes")


def test_a_key_stored_by_wandb_login_counts(no_wandb_key):
    from urllib.parse import urlsplit

    from wandb.sdk import wandb_setup

    host = urlsplit(wandb_setup.singleton().settings.base_url).netloc
    (no_wandb_key / ".netrc").write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    (no_wandb_key / ".netrc").chmod(0o600)
    assert has_credentials() and resolve_mode() == "online"


@pytest.mark.slow
def test_wandb_without_a_key_writes_an_offline_run_with_metrics_and_config(tmp_path, no_wandb_key, caplog):
    import wandb

    caplog.set_level(logging.INFO, logger="gpo_lab.run.wandb_logging")
    run_dir = tmp_path / "run"
    overrides = [*TINY, "logger=wandb", "beta=0.25", "seed=3"]
    summary = run_training(overrides, run_dir)
    wandb.finish()  # what the end of the process does for the last run
    assert summary["status"] == "completed"

    found = offline_run(run_dir)
    assert found["exited"], "the offline run was not closed"
    sync_dir = found["file"].parent
    assert f"wandb sync {sync_dir}" in caplog.text and "wandb is offline (no API key configured)" in caplog.text

    run = found["run"]
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    assert run.run_group == f"smoke-{run_id}"  # a single run is a group of its own
    assert run.display_name == "logistic-b0.25-lr0.001-s3"
    assert set(run.tags) == {"logistic", "beta=0.25", "lr=0.001", "seed=3"}
    config = found["config"]
    assert (config["loss"], config["beta"], config["lr"], config["seed"]) == ("logistic", 0.25, 0.001, 3)
    assert config["config"]["trainer"]["max_steps"] == 4 and config["config"]["loss"]["fn"] == "logistic"
    assert (config["trainer.max_steps"], config["trainer.val_check_interval"]) == (4, 2)  # overrides: columns
    saved = sync_dir / "files" / "run_config.yaml"
    assert saved.read_text() == (run_dir / "config.yaml").read_text()

    # Validation metrics plot against trainer/global_step, at the same steps and values as metrics.jsonl.
    definition = found["metrics"]["val/loss"]
    assert definition.step_metric == "trainer/global_step" and definition.summary.min and definition.summary.last
    local = [r for r in read_metrics(run_dir / "metrics.jsonl") if "val/loss" in r]
    logged = [row for row in found["history"] if "val/loss" in row]
    assert [row["trainer/global_step"] for row in logged] == [r["step"] for r in local] == [2, 4]
    assert [row["val/loss"] for row in logged] == pytest.approx([r["val/loss"] for r in local])
    train = [row["trainer/global_step"] for row in found["history"] if "train/loss" in row]
    assert train == [0, 1, 2, 3]
    assert found["metrics"]["train/loss"].step_metric == "trainer/global_step"
    assert found["metrics"]["val/rewards/accuracies"].summary.max  # a best where one is better

    # `wandb sync` recognises the run (a dry run: the upload itself needs the network).
    sync = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", str(sync_dir)], capture_output=True, text=True, timeout=120
    )
    assert sync.returncode == 0 and "Would sync 1 run(s)" in sync.stdout + sync.stderr
    # Local records are written whatever the logger.
    assert (run_dir / "summary.json").is_file() and local


@pytest.mark.slow
def test_a_resumed_job_continues_its_wandb_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="preempted at step 3"):
        run_training(
            [*TINY, "logger=wandb", "+callbacks.stop._target_=tests.helpers.faults.StopAt", "+callbacks.stop.step=3"],
            run_dir,
        )
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()  # saved at step 2
    second = run_training([*TINY, "logger=wandb"], run_dir)
    wandb.finish()
    assert second["status"] == "completed" and second["steps"] == 4
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    # offline-run-<date>_<time>-<id>, and "-1" after it when the second start falls in the same second
    ids = {re.fullmatch(r"offline-run-\d{8}_\d{6}-([a-z0-9]+)(?:-\d+)?", path.name).group(1) for path in runs}
    assert len(runs) == 2 and ids == {(run_dir / "wandb" / "run_id").read_text().strip()}


@pytest.mark.slow
def test_the_api_key_is_never_written(tmp_path, no_wandb_key, monkeypatch):
    import wandb

    secret = "s3cr3t" * 7
    monkeypatch.setenv("WANDB_API_KEY", secret)
    run_dir = tmp_path / "run"
    run_training([*TINY, "logger=wandb", "logger.wandb.mode=offline"], run_dir)
    wandb.finish()
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.slow
def test_csv_and_tensorboard_loggers_through_the_same_group(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard logger needs the tensorboard package ([dev] extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    summary = run_training([*TINY, "logger=[csv,tensorboard]"], run_dir)
    assert summary["status"] == "completed"
    csv_file = run_dir / "csv" / "version_0" / "metrics.csv"
    header = csv_file.read_text().splitlines()[0].split(",")
    assert {"step", "train/loss", "val/loss", "val/offline_reg"} <= set(header)
    events = EventAccumulator(str(next((run_dir / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert {"train/loss", "val/loss", "val/offline_reg"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val/loss")) == 2


def test_short_names_groups_and_columns_of_a_sweep(tmp_path):
    assert [number(x) for x in (0.1, 1e-05, 3e-4, 2, 1.0, "logistic")] == [
        "0.1",
        "1e-5",
        "0.0003",
        "2",
        "1",
        "logistic",
    ]
    sweep = tmp_path / "multirun" / "tldr"
    job = sweep / "beta=0.1,data.batch_size=8,loss=hinge"
    job.mkdir(parents=True)
    assert sweep_group(job, sweep) is None  # no multirun.yaml: not a job of a multirun
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [+experiment=tldr, 'loss=hinge,logistic', beta=0.1, data.batch_size=8]\n"
        "  sweeper:\n    params: {data.batch_size: '8,16'}\n"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime((sweep / "multirun.yaml").stat().st_mtime))
    assert sweep_group(job, sweep) == f"tldr-{stamp}"
    assert sweep_group(tmp_path / "outputs" / "x", sweep) is None  # a single run elsewhere
    assert swept_keys(sweep) == {"loss", "data.batch_size"}

    typed = job_overrides(["+experiment=tldr", "loss=hinge", "beta=0.1", "data.batch_size=8"], ["experiment"])
    assert typed == [("beta", "beta=0.1"), ("data.batch_size", "data.batch_size=8"), ("loss", "loss=hinge")]
    columns = {"loss": "hinge", "beta": 0.1, "lr": 1e-05, "seed": 0}
    assert short_name(columns, typed, swept_keys(sweep)) == "hinge-b0.1-lr1e-5-s0-data.batch_size=8"
    assert short_name(columns, typed) == "hinge-b0.1-lr1e-5-s0"  # nothing else swept
    full = {"loss": {"fn": "hinge"}, "beta": 0.1, "data": {"batch_size": 8}}
    assert override_columns(full, typed) == {"beta": 0.1, "data.batch_size": 8, "loss": "hinge"}


def logged_tables(found: dict, key: str) -> dict[int | None, dict]:
    """Step -> the table logged under ``key`` at it (columns, column types, rows), read from the run's files."""
    tables = {}
    for row in found["history"]:
        if f"{key}/path" in row:  # a logged table's record, flattened
            path = found["file"].parent / "files" / row[f"{key}/path"]
            tables[row.get("trainer/global_step")] = json.loads(path.read_text())
    return tables


@pytest.mark.slow
def test_the_report_logs_a_sweep_summary_run_with_native_charts_and_typed_tables(
    tmp_path, no_wandb_key, monkeypatch, caplog
):
    import yaml

    from gpo_lab.report.__main__ import main as report_main

    caplog.set_level(logging.INFO, logger="gpo_lab.report.wandb_io")
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = synthetic_sweep(tmp_path / "sweep", losses=("logistic", "squared"), betas=(0.1, 1.0), seeds=(0,))
    for job in (p for p in sweep.iterdir() if (p / "config.yaml").is_file()):  # as jobs that logged to wandb
        config = yaml.safe_load((job / "config.yaml").read_text())
        config["logger"] = {"wandb": {"project": "gpo_lab", "entity": None, "group": None, "mode": None}}
        (job / "config.yaml").write_text(yaml.safe_dump(config))
        (job / "wandb").mkdir()
        (job / "wandb" / "group").write_text("sweep-20261207-101500\n")
    assert report_main([str(sweep), "--wandb"]) == 0
    assert "no API key" not in caplog.text and "wandb is offline (WANDB_MODE=offline)" in caplog.text
    assert "wandb sync " + str(sweep / "wandb") in caplog.text

    found = offline_run(sweep)
    assert found["exited"] and found["run"].job_type == "report"
    assert found["run"].run_group == "sweep-20261207-101500"  # beside the jobs' runs
    charts = {key: chart["fieldSettings"] for key, chart in found["charts"].items()}
    assert charts == {
        "report/tradeoff": {"x": "kl_token", "y": "win_rate", "stroke": "loss"},
        "report/beta": {"x": "beta", "y": "win_rate", "stroke": "loss"},
        "report/kl_beta": {"x": "beta", "y": "kl_token", "stroke": "loss"},
    }
    points = logged_tables(found, "report/tradeoff_table")[None]
    rows = [dict(zip(points["columns"], row)) for row in points["data"]]
    assert {(r["loss"], r["beta"]) for r in rows} == {
        (loss, beta) for loss in ("logistic", "squared") for beta in (0.1, 1)
    }
    final = {}
    for job in (p for p in sweep.iterdir() if (p / "summary.json").is_file()):
        summary = json.loads((job / "summary.json").read_text())
        last = [r["val/win_rate"] for r in read_metrics(job / "metrics.jsonl") if "val/win_rate" in r][-1]
        final[summary["loss"], summary["beta"]] = last
    assert all(r["win_rate"] == pytest.approx(final[r["loss"], r["beta"]]) for r in rows)  # one seed: its own value
    best = logged_tables(found, "report/best_beta")[None]
    best_rows = [dict(zip(best["columns"], row)) for row in best["data"]]
    assert {r["loss"] for r in best_rows} == {"logistic", "squared"}
    assert all(isinstance(r["beta"], float) and isinstance(r["n"], int) for r in best_rows)  # numbers, not text
    claims = logged_tables(found, "report/claims")[None]
    assert claims["columns"][:4] == ["claim", "subject", "verdict", "value"]
    assert [row[0] for row in claims["data"]][:2] == ["claim_1", "claim_2"]
    assert {row[1] for row in claims["data"] if row[0] == "best_beta"} == {"logistic", "squared"}
