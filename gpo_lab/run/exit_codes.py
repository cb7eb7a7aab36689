"""A sweep's exit code: a multirun with a failed job exits with code 1, after every other job has run.

Each job of a sweep catches its own failure (so the launcher goes on with the other jobs) and records
it in its ``summary.json``. Hydra then ends the multirun normally, which would hide the failure
from CI and schedulers; this Hydra callback looks at the jobs once the multirun is over, in the
launching process, whatever the launcher (in-process, local processes or SLURM), and exits with
code 1 naming them.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gpo_lab.run.records import SUMMARY_FILE
from gpo_lab.run.status import PROBLEM_STATES, expected_jobs, job_state

log = logging.getLogger("gpo_lab")
EXIT_FAILED_JOBS = 1


@dataclass(frozen=True)
class JobFailure:
    """What a failed job of a multirun returns to its launcher instead of raising."""

    run_dir: str
    message: str


class ExitOnFailedJobs(Callback):
    """Exit with code 1 at the end of a multirun in which a job failed (``conf/hydra/gpo_lab.yaml``)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.failures: dict[str, str] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
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
