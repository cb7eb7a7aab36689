"""The command line's exit codes that Hydra alone would not give.

A multirun with a failed job exits with code 1, after every other job has run: each job catches
its own failure (so the launcher goes on with the other jobs) and records it in its
``summary.json``; Hydra then ends the multirun normally, which would hide the failure from CI and
schedulers. This Hydra callback looks at the jobs once the multirun is over, in the launching
process, whatever the launcher (in-process, local processes or SLURM), and exits with code 1
naming them. An output directory that cannot be written exits with code 2 before Hydra writes there
(what else must hold before a job starts: :mod:`gpo_lab.run.preflight`). A job that another process
is training (the same sweep started twice) is neither failed nor done by this sweep: it is named as
running elsewhere. A signal ends the sweep
(:mod:`gpo_lab.run.signals`), with one line that counts its jobs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gpo_lab.run.fingerprint import refuse_another_experiment
from gpo_lab.run.signals import Interrupted, signal_name, unwatch_sweep, watch_sweep
from gpo_lab.status import PROBLEM_STATES, STATES, expected_jobs, job_state, sweep_status
from gpo_lab.store.run_files import SUMMARY_FILE

log = logging.getLogger("gpo_lab")
EXIT_FAILED_JOBS = 1
EXIT_USAGE = 2  # as for every other input the user must fix
SINFO_TIMEOUT_S = 20


@dataclass(frozen=True)
class JobFailure:
    """What a failed job of a multirun returns to its launcher instead of raising."""

    run_dir: str
    message: str


@dataclass(frozen=True)
class JobElsewhere:
    """What a job of a multirun returns when another process holds its directory (it trains it there)."""

    run_dir: str


class ExitOnFailedJobs(Callback):
    """Exit with code 1 at the end of a multirun in which a job failed; refuse an unwritable output directory.

    Registered in ``conf/hydra/gpo_lab.yaml``; it runs in the launching process.
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.failures: dict[str, str] = {}
        self.elsewhere: set[str] = set()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(Path(config.hydra.sweep.dir))
        refuse_another_experiment(config)  # SLURM, models and data: gpo_lab.run.preflight, the next callback
        self.started, self.failures, self.elsewhere = time.time(), {}, set()
        watch_sweep(Path(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        value = getattr(job_return, "_return_value", None)  # read without raising a failed job's error
        if isinstance(value, JobFailure):  # seen here when the job ran in this process
            self.failures[Path(value.run_dir).name] = value.message
        if isinstance(value, JobElsewhere):
            self.elsewhere.add(Path(value.run_dir).name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        unwatch_sweep()
        sweep_dir = Path(config.hydra.sweep.dir)
        report_elsewhere(sweep_dir, self.elsewhere)
        failures = {**self.failures, **failed_jobs(sweep_dir, since=self.started)}
        if not failures:
            return
        total = max(len(expected_jobs(sweep_dir)), len(failures))
        if len(failures) >= total:
            lines = [f"Every job of the sweep failed ({len(failures)}):"]
        else:
            lines = [f"{len(failures)} of the sweep's {total} jobs failed (the other jobs ran to the end):"]
        lines += [f"  {name}: {message}" for name, message in sorted(failures.items())]
        lines.append(f"python -m gpo_lab.status {config.hydra.sweep.dir} lists every job.")
        print("\n".join(lines), file=sys.stderr)
        sys.exit(EXIT_FAILED_JOBS)


def refuse_unwritable(directory: Path) -> None:
    """Exit with one message when Hydra could not write its own files (``.hydra/``, the log) into ``directory``.

    Hydra writes them before any gpo_lab code runs, and would fail with a traceback.
    """
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    print(
        f"Cannot write into {existing}: it is read-only for this user (or not a directory), so {directory} cannot "
        "hold the run's files. Make it writable, or choose another directory: hydra.run.dir=... for a run, "
        "hydra.sweep.dir=... for a sweep.",
        file=sys.stderr,
    )
    sys.exit(EXIT_USAGE)


def refuse_missing_slurm(config: DictConfig) -> None:
    """Exit with :func:`missing_slurm`'s message when it finds a problem."""
    problem = missing_slurm(config)
    if problem is not None:
        print(problem, file=sys.stderr)
        sys.exit(EXIT_USAGE)


def missing_slurm(config: DictConfig) -> str | None:
    """Why a sweep that goes to SLURM cannot: SLURM's commands missing, or ``sinfo`` unable to reach a
    controller (submitit would fail with a traceback at the first submission); None when it can or need not."""
    if not str(OmegaConf.select(config, "hydra.launcher._target_") or "").endswith("SlurmLauncher"):
        return None
    missing = [tool for tool in ("sbatch", "srun", "sinfo") if shutil.which(tool) is None]
    problem = f"this machine has no {' or '.join(missing)} on its PATH" if missing else _unreachable_controller()
    if problem is None:
        return None
    cluster = OmegaConf.select(config, "hydra.runtime.choices.cluster")
    option = f"cluster={cluster}" if cluster not in (None, "none") else "hydra/launcher=submitit_slurm"
    return (
        f"{option} submits the jobs to SLURM, but {problem}: run the sweep on a SLURM login node, or here "
        "without SLURM (leave out cluster=..., or cluster=local or cluster=pool to run its jobs in parallel on "
        "this machine)."
    )


def _unreachable_controller() -> str | None:
    """Why ``sinfo`` reaches no SLURM controller, or None when it does (or is too slow to tell: SLURM decides)."""
    try:
        result = subprocess.run(["sinfo", "--noheader"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    except OSError as error:
        return f"sinfo cannot run ({error.strerror or error})"
    if result.returncode == 0:
        return None
    last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    return f"sinfo reaches no SLURM controller ({last.strip()[:200]})"


def report_elsewhere(sweep_dir: Path, seen: set[str]) -> None:
    """Name the jobs that another process trains: neither failed nor done by this sweep."""
    names = set(seen) | {name for name in expected_jobs(sweep_dir) if job_state(sweep_dir / name).state == "running"}
    if names:
        print(
            f"{len(names)} job(s) of the sweep running in another process (not trained by this one): "
            f"{', '.join(sorted(names))}. python -m gpo_lab.status {sweep_dir} shows when they end.",
            file=sys.stderr,
        )


def stopped_line(stop: Interrupted, sweep_dir: Path) -> str:
    """The one line a sweep ends with when a signal stopped it: what happened, where its jobs stand, the fix."""
    counts = {state: 0 for state in STATES}
    try:
        for job in sweep_status(sweep_dir):
            counts[job.state] += 1
        where = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no job started"
    except OSError:
        where = "its jobs unreadable"
    return (
        f"The sweep was stopped by {signal_name(stop.signum)} ({where}); the same command resumes it "
        f"(python -m gpo_lab.status {sweep_dir} lists every job)."
    )


def failed_jobs(sweep_dir: Path, since: float) -> dict[str, str]:
    """Jobs of the sweep's grid that ended failed or damaged, and any job whose summary says failed since ``since``."""
    if not sweep_dir.is_dir():
        return {}
    names = set(expected_jobs(sweep_dir))
    for summary in sweep_dir.glob(f"*/{SUMMARY_FILE}"):
        try:
            if summary.stat().st_mtime >= since - 1:
                names.add(summary.parent.name)
        except OSError:
            continue
    found = {}
    for name in sorted(names):
        job = job_state(sweep_dir / name)
        if job.state in PROBLEM_STATES:
            found[name] = job.error or job.state
    return found
