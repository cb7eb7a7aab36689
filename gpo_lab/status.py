"""``python -m gpo_lab.status SWEEP_DIR``: every job of a sweep with its state, last step and key metrics.

The jobs are expanded from the sweep's own ``multirun.yaml`` with Hydra's override parser, so
jobs that have not started yet are listed too, under the directory name they will get.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gpo_lab.run.dirnames import job_dirname
from gpo_lab.store.lock import RunLock
from gpo_lab.store.records import read_job_files
from gpo_lab.store.run_files import METRICS_FILE, SUMMARY_FILE

KEY_METRICS = ("val/win_rate", "val/kl_token", "val/kl_seq", "val/kl", "val/offline_reg", "val/loss")
STATES = ("completed", "running", "interrupted", "failed", "damaged", "not started")
PROBLEM_STATES = ("failed", "damaged")  # any of them makes the command exit with code 1


@dataclass
class Job:
    dirname: str
    state: str
    last_step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def expected_jobs(sweep_dir: Path) -> list[str]:
    """Directory names of every job of the sweep, in launch order, from ``multirun.yaml``."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return []
    try:
        hydra_cfg = OmegaConf.load(path).hydra
    except Exception as error:  # a damaged multirun.yaml: the job directories present are still listed
        print(
            f"warning: cannot read the grid of {path} ({type(error).__name__}); listing the jobs found", file=sys.stderr
        )
        return []
    params = hydra_cfg.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(hydra_cfg.overrides.task)
    parser = OverridesParser.create()
    grid = []
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        values = (
            override.sweep_string_iterator() if override.is_sweep_override() else [override.get_value_element_as_str()]
        )
        grid.append([f"{key}={value}" for value in values])
    exclude_keys = list(hydra_cfg.job.config.override_dirname.exclude_keys)
    return [job_dirname(job, exclude_keys) for job in itertools.product(*grid)]  # the names the jobs get


def job_state(run_dir: Path) -> Job:
    files = read_job_files(run_dir)
    summary, records = files.summary, files.records
    status = summary.get("status")
    if _lock_held(run_dir):
        state = "running"
    elif files.problem is not None:
        state = "damaged"
    elif status in ("completed", "failed"):
        state = status
    elif status == "running" or records or os.path.exists(run_dir / METRICS_FILE):
        state = "interrupted"  # killed or preempted; the same command resumes it
    else:
        state = "not started"
    steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
    final = summary.get("final")
    values = dict(final) if isinstance(final, dict) else {}
    for record in records:  # a job still training has no final metrics yet: show its latest
        values.update({k: v for k, v in record.items() if k.startswith("val/")} if state != "completed" else {})
    return Job(
        run_dir.name,
        state,
        max(steps) if steps else summary.get("steps"),
        {k: values[k] for k in KEY_METRICS if _is_number(values.get(k))},
        files.problem or _text(summary.get("error")),
    )


def _lock_held(run_dir: Path) -> bool:
    """Whether a live process trains in ``run_dir``; a lock file this user cannot open counts as not held."""
    try:
        return RunLock.is_held(run_dir)
    except OSError:
        return False


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value) -> str | None:
    return None if value is None else str(value)


def sweep_status(sweep_dir: Path) -> list[Job]:
    sweep_dir = Path(sweep_dir)
    names = expected_jobs(sweep_dir)
    present = sorted({p.parent.name for p in sweep_dir.glob(f"*/{SUMMARY_FILE}")} | _unreadable_dirs(sweep_dir))
    names += [n for n in present if n not in names]  # jobs of earlier grids in the same directory
    return [job_state(sweep_dir / name) for name in names]


def _unreadable_dirs(sweep_dir: Path) -> set[str]:
    """Job-like directories this user cannot list (another user's private job): shown as damaged, not hidden."""
    names = set()
    for path in sweep_dir.iterdir():
        if path.is_dir() and not path.name.startswith(".") and not os.access(path, os.R_OK | os.X_OK):
            names.add(path.name)
    return names


def format_table(jobs: list[Job]) -> str:
    metric_names = [m for m in KEY_METRICS if any(m in job.metrics for job in jobs)]
    header = ["job", "state", "step", *metric_names]
    rows = [
        [
            job.dirname,
            job.state,
            "" if job.last_step is None else str(job.last_step),
            *[f"{job.metrics[m]:.4g}" if m in job.metrics else "" for m in metric_names],
        ]
        for job in jobs
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    counts = {state: sum(job.state == state for job in jobs) for state in STATES}
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no jobs")
    lines += [f"{job.dirname}: {job.error}" for job in jobs if job.error]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpo_lab.status", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory, e.g. multirun/smoke")
    parser.add_argument("--json", action="store_true", help="one JSON object per job instead of a table")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"No sweep directory {args.sweep_dir}", file=sys.stderr)
        return 2
    try:
        jobs = sweep_status(args.sweep_dir)
    except OSError as error:
        print(f"Cannot read the sweep directory {args.sweep_dir}: {error.strerror or error}", file=sys.stderr)
        return 2
    print("\n".join(json.dumps(asdict(job)) for job in jobs) if args.json else format_table(jobs))
    return 1 if any(job.state in PROBLEM_STATES for job in jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
