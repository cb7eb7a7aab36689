"""The command line's exit codes that Hydra alone would not give.

A multirun with a failed job exits with code 1, after every other job has run: each job catches
its own failure (so the launcher goes on with the other jobs) and records it in its
``summary.json``; Hydra then ends the multirun normally, which would hide the failure from CI and
schedulers. This Hydra callback looks at the jobs once the multirun is over, in the launching
process, whatever the launcher (in-process, local processes or SLURM), and exits with code 1
naming them. An output directory that cannot be written exits with code 2 before Hydra writes there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gpo_lab.run.fingerprint import refuse_another_experiment
from gpo_lab.status import PROBLEM_STATES, expected_jobs, job_state
from gpo_lab.store.run_files import SUMMARY_FILE

log = logging.getLogger("gpo_lab")
EXIT_FAILED_JOBS = 1
EXIT_USAGE = 2  # as for every other input the user must fix


@dataclass(frozen=True)
class JobFailure:
    """What a failed job of a multirun returns to its launcher instead of raising."""

    run_dir: str
    message: str


class ExitOnFailedJobs(Callback):
    """Exit with code 1 at the end of a multirun in which a job failed; refuse an unwritable output directory.

    Registered in ``conf/hydra/gpo_lab.yaml``; it runs in the launching process.
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.failures: dict[str, str] = {}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(Path(config.hydra.sweep.dir))
        refuse_another_experiment(config)
        self.started, self.failures = time.time(), {}

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        value = getattr(job_return, "_return_value", None)  # read without raising a failed job's error
        if isinstance(value, JobFailure):  # seen here when the job ran in this process
            self.failures[Path(value.run_dir).name] = value.message

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = {**self.failures, **failed_jobs(Path(config.hydra.sweep.dir), since=self.started)}
        if not failures:
            return
        lines = [f"{len(failures)} job(s) of the sweep failed (the other jobs ran to the end):"]
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
