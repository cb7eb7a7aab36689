"""Signals, exit codes and launching: SIGTERM and Ctrl-C end a run or a sweep as ``interrupted`` with the shell's
codes (143, 130), a pool sweep's workers end with it, a job another process trains is not a failure, and a SLURM
launcher where there is no SLURM is refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpo_lab.run import signals
from gpo_lab.run.exit_codes import refuse_missing_slurm
from gpo_lab.status import job_state
from tests.helpers import ROOT
from tests.helpers.cli import run_cli, wait_for
from tests.helpers.runs import compose_config

SMOKE = ["+experiment=smoke", "data.batch_size=8", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]
SLOW = ["+callbacks.slow._target_=tests.helpers.faults.SlowDown", "+callbacks.slow.seconds=0.4"]


@pytest.fixture
def fresh_signal_state(monkeypatch):
    """This module's process-wide record of signals, as a process starts with it."""
    for name in ("received", "launching_pid", "sweep_dir"):
        monkeypatch.setattr(signals._State, name, None)
    monkeypatch.setattr(signals._State, "in_fit", False)


class Started:
    """``python -m gpo_lab ARGS`` running in a subprocess, its output in files (a full pipe would stall it)."""

    def __init__(self, args: list[str], cwd: Path, tag: str = "cli", **kwargs):
        self.err_path = cwd / f"{tag}.stderr"
        with open(cwd / f"{tag}.stdout", "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gpo_lab", *args],
                cwd=cwd,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONPATH": str(ROOT)},  # the faults' callbacks, from any directory
                **kwargs,
            )
        self.pid = self.process.pid

    def wait_for(self, condition, timeout: float, what: str):
        """``condition()``'s first true value; fails at once, with the log, if the command ended before it."""

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"ended ({self.process.returncode}) before {what}: {self.stderr[-3000:]}")
            return condition()

        return wait_for(ready, timeout, what)

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float) -> tuple[int, str]:
        return self.process.wait(timeout=timeout), self.stderr

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


def logged_step(run_dir: Path) -> int:
    """The last step in a job's ``metrics.jsonl`` (0 before its first record)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return max([json.loads(line).get("step", 0) for line in lines if line.strip()] or [0])


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


# ----------------------------------------------------------------------------------------------- in process


def test_the_first_signal_interrupts_outside_the_trainer_and_waits_for_the_batch_inside(fresh_signal_state):
    with signals.stop_on_signals():
        with pytest.raises(signals.Interrupted) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises before this ends
        assert stop.value.exit_code == 143 and signals.received() == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # a second signal only noted: it does not break the first's recording
    signals._State.received = None
    with signals.stop_on_signals(), signals.trainer_running():
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning raises at the batch's end
        assert signals.received() == signal.SIGTERM
    with pytest.raises(signals.Interrupted):  # a process asked to stop starts no job
        signals.refuse_if_stopping()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_what_follows_a_signal_is_an_interruption_not_a_failure(fresh_signal_state):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    assert signals.stop_signal(SIGTERMException()) == signal.SIGTERM
    assert signals.stop_signal(KeyboardInterrupt()) == signal.SIGINT
    assert signals.stop_signal(RuntimeError("a bug")) is None
    signals._State.received = signal.SIGINT  # Lightning makes SystemExit(1) of Ctrl-C; a DataLoader worker dies
    assert signals.stop_signal(SystemExit(1)) == signals.stop_signal(RuntimeError("worker exited")) == signal.SIGINT


def test_a_summary_that_says_interrupted_is_interrupted_before_any_record(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted", "error": "stopped by SIGTERM"}))
    assert job_state(tmp_path).state == "interrupted"


def fake_tool(directory: Path, name: str, script: str = "exit 0") -> None:
    (directory / name).write_text(f"#!/bin/sh\n{script}\n")
    (directory / name).chmod(0o755)


@pytest.mark.parametrize("cluster", ["local_slurm", "example_site"])
def test_slurm_where_there_is_none_is_refused_in_one_line(cluster, tmp_path, monkeypatch, capsys):
    config = compose_config(["+experiment=smoke", f"cluster={cluster}"])
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun

    def refused() -> str:
        with pytest.raises(SystemExit) as exit_:
            refuse_missing_slurm(config)
        lines = [line for line in capsys.readouterr().err.splitlines() if "submits the jobs to SLURM" in line]
        assert exit_.value.code == 2 and len(lines) == 1, lines  # one line, whatever else a test left on stderr
        message = lines[0]
        assert f"cluster={cluster} submits the jobs to SLURM" in message and "cluster=local" in message  # the fix
        return message

    assert "no sbatch or srun or sinfo on its PATH" in refused()
    for tool in ("sbatch", "srun"):
        fake_tool(tmp_path, tool)
    fake_tool(tmp_path, "sinfo", "echo 'sinfo: error: Could not establish a configuration source' >&2; exit 1")
    assert "sinfo reaches no SLURM controller (sinfo: error: Could not establish a configuration source)" in refused()
    fake_tool(tmp_path, "sinfo")  # a machine with a SLURM controller: launched as before
    refuse_missing_slurm(config)
    refuse_missing_slurm(compose_config(["+experiment=smoke", "cluster=pool"]))  # not a SLURM launcher


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_ends_it_interrupted_with_the_shells_code_and_the_rerun_resumes(signum, code, tmp_path):
    args = [*SMOKE, *SLOW, "trainer.max_steps=12"]
    run = Started(args, tmp_path)
    run_dir = run.wait_for(lambda: next((tmp_path / "outputs" / "smoke").glob("*/metrics.jsonl"), None), 120, "a run")
    run.wait_for(lambda: logged_step(run_dir.parent) >= 4, 120, "step 4")
    run.send_signal(signum)
    returncode, stderr = run.finish(timeout=60)
    assert returncode == code, stderr[-3000:]
    summary = json.loads((run_dir.parent / "summary.json").read_text())
    assert summary["status"] == "interrupted" and signal.Signals(signum).name in summary["error"], summary
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "resumes it" in stderr
    assert "Traceback" not in stderr
    assert job_state(run_dir.parent).state == "interrupted"

    if signum == signal.SIGINT:  # resuming is the same after either signal: shown once
        return
    rerun = run_cli(args, tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming from" in rerun.stderr
    assert json.loads((run_dir.parent / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_sigterm_mid_sweep_stops_it_with_143_and_one_line(tmp_path):
    sweep_dir = tmp_path / "multirun" / "smoke"
    sweep = Started(["-m", *SMOKE, *SLOW, "trainer.max_steps=12", "loss=logistic,hinge", "beta=0.1,1"], tmp_path)
    first = sweep.wait_for(lambda: next(sweep_dir.glob("*/metrics.jsonl"), None), 120, "the first job").parent
    sweep.wait_for(lambda: logged_step(first) >= 2, 120, "step 2")
    sweep.send_signal(signal.SIGTERM)
    returncode, stderr = sweep.finish(timeout=60)
    assert returncode == 143, stderr[-3000:]
    assert "The sweep was stopped by SIGTERM (1 interrupted, 3 not started)" in stderr, stderr[-3000:]
    assert [s["status"] for s in summaries(sweep_dir).values()] == ["interrupted"]


def pool_workers(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (joblib's workers among them)."""
    children = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "to_group"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_ending_a_pool_sweep_ends_its_workers_and_no_job_starts_after(signum, code, to_group, tmp_path):
    sweep_dir = tmp_path / "multirun" / "smoke"
    grid = ["loss=logistic,hinge", "beta=0.1,1,3"]
    args = ["-m", "cluster=pool", "hydra.launcher.n_jobs=2", *SMOKE, *SLOW, "trainer.max_steps=30", *grid]
    sweep = Started(args, tmp_path, start_new_session=True)
    sweep.wait_for(lambda: len(list(sweep_dir.glob("*/metrics.jsonl"))) >= 2, 240, "two jobs training")
    workers = pool_workers(sweep.pid)
    if to_group:  # Ctrl-C: the terminal signals every process of the sweep
        os.killpg(sweep.pid, signum)
    else:  # kill, timeout, a scheduler: the sweep's own process only
        sweep.send_signal(signum)
    returncode, stderr = sweep.finish(timeout=60)
    assert returncode == code, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("The sweep was stopped by")]
    assert len(stopped) == 1 and signal.Signals(signum).name in stopped[0], stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    time.sleep(3)
    assert not [pid for pid in workers if alive(pid)], "workers outlived the sweep"
    ended = summaries(sweep_dir)
    assert sorted(s["status"] for s in ended.values()) == ["interrupted", "interrupted"], ended
    time.sleep(5)
    assert summaries(sweep_dir).keys() == ended.keys()  # no job started after the sweep ended


@pytest.mark.slow
def test_two_identical_sweeps_at_once_do_each_job_once_and_neither_fails(tmp_path):
    args = ["-m", *SMOKE, "trainer.max_steps=6", "loss=logistic,hinge", "beta=0.1"]
    first, second = Started(args, tmp_path, "first"), Started(args, tmp_path, "second")
    outputs = [first.finish(timeout=300), second.finish(timeout=300)]
    for returncode, stderr in outputs:
        assert returncode == 0, stderr[-3000:]
        assert "of the sweep's" not in stderr and "Every job of the sweep failed" not in stderr, stderr[-3000:]
    both = outputs[0][1] + outputs[1][1]
    assert "running in another process" in both
    ended = summaries(tmp_path / "multirun" / "smoke")
    assert len(ended) == 2 and {s["status"] for s in ended.values()} == {"completed"}, ended
