"""Online wandb logging for real, over the loopback: a run logs to a local wandb-protocol server
(``openwandb``), which stores what it received in SQLite; a resumed run continues the same run.

``openwandb`` is a test-only tool (licence CC-BY-NC-4.0: never a dependency of gpo_lab). CI installs it
into a virtual environment of its own and names its command in ``GPO_LAB_OPENWANDB``; without it
these tests skip. Its public-API queries do not work, so the run is read from its database; nor
does it tell a resuming client where the run's history stopped, so a resumed run's rows start again at
wandb's step 0 there and replace the first attempt's (wandb.ai continues them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gpo_lab.store.records import read_metrics
from tests.helpers import ROOT

OPENWANDB = os.environ.get("GPO_LAB_OPENWANDB") or shutil.which("openwandb")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        OPENWANDB is None,
        reason="openwandb (a local wandb server, test-only) is not installed: python3 -m venv VENV && "
        "VENV/bin/pip install openwandb==0.5.25, then set GPO_LAB_OPENWANDB=VENV/bin/openwandb (as .ci/run does)",
    ),
]
TINY = ["+experiment=smoke", "trainer.max_steps=4", "trainer.val_check_interval=2", "callbacks.progress=null"]
TINY += ["reference_cache.enabled=false"]  # no batch-dependence probe: seconds saved per process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A local wandb server: its URL, its API key (as it prints it) and its SQLite database."""
    port, data = free_port(), tmp_path / "server"
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [OPENWANDB, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"openwandb did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        key = re.search(r"WANDB_API_KEY=(\S+)", (tmp_path / "server.log").read_text())
        assert key, "openwandb printed no API key"
        yield {"url": url, "key": key.group(1), "db": data / "openwandb.db"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def run_online(server: dict, home: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # CI sets WANDB_MODE=offline
    env.update(
        HOME=str(home), WANDB_CONFIG_DIR=str(home / "wandb"), WANDB_BASE_URL=server["url"], WANDB_API_KEY=server["key"]
    )
    args = [*TINY, "logger=wandb", "beta=0.25", *extra, f"hydra.run.dir={run_dir}"]
    return subprocess.run(
        [sys.executable, "-m", "gpo_lab", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def stored(db: Path) -> list[dict]:
    """Each run the server stored: id, name, state, config, summary, history rows by wandb step, files."""
    connection = sqlite3.connect(db)
    runs = []
    for run_id, name, state, config, summary in connection.execute(
        "select run_id, display_name, state, config_json, summary_json from runs"
    ):
        history: dict[int, dict] = {}
        for key, step, value in connection.execute("select key, step, value from metrics where run_id = ?", (run_id,)):
            history.setdefault(step, {})[key] = value
        files = {name for (name,) in connection.execute("select name from files where run_id = ?", (run_id,))}
        config = {k: v["value"] for k, v in json.loads(config).items() if isinstance(v, dict) and "value" in v}
        runs.append(
            {"id": run_id, "name": name, "state": state, "config": config, "summary": json.loads(summary or "{}")}
            | {"history": [history[s] for s in sorted(history)], "files": files}
        )
    connection.close()
    return runs


def val_losses(run: dict) -> dict[int, float]:
    return {int(row["trainer/global_step"]): row["val/loss"] for row in run["history"] if "val/loss" in row}


def test_a_run_logs_online_and_a_resumed_run_continues_it(server, tmp_path):
    run_dir, home = tmp_path / "run", tmp_path / "home"
    first = run_online(
        server, home, run_dir, "+callbacks.stop._target_=tests.helpers.faults.StopAt", "+callbacks.stop.step=3"
    )
    assert first.returncode == 1 and "preempted at step 3" in first.stderr, first.stderr[-3000:]
    assert "OFFLINE" not in first.stderr and f"View run at {server['url']}" in first.stderr
    (run,) = stored(server["db"])
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    assert run["id"] == run_id and run["name"] == "logistic-b0.25-lr0.001-s0"
    assert (run["config"]["loss"], run["config"]["beta"], run["config"]["trainer.max_steps"]) == ("logistic", 0.25, 4)
    assert run["config"]["config"]["trainer"]["val_check_interval"] == 2  # the whole run config
    assert "run_config.yaml" in run["files"]
    local = {r["step"]: r["val/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "val/loss" in r}
    assert local.keys() == {2} and val_losses(run) == pytest.approx(local)

    second = run_online(server, home, run_dir)  # the same command: resumes from the checkpoint at step 2
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stderr
    (run,) = stored(server["db"])  # still one run: the same id, continued
    assert run["id"] == run_id and run["state"] == "finished"
    local = {r["step"]: r["val/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "val/loss" in r}
    assert local.keys() == {2, 4} and val_losses(run)[4] == pytest.approx(local[4])
    assert run["summary"].get("trainer/global_step") == 4
    debug = (run_dir / "wandb" / "latest-run" / "logs" / "debug.log").read_text()
    assert "Traceback" not in debug
