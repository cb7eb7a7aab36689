"""``python -m gpo_lab.status SWEEP_DIR``: every job of a sweep with its state, last step and key metrics.

The jobs are expanded from the sweep's own ``multirun.yaml`` with Hydra's override parser, so
jobs that have not started yet are listed too, under the directory name they will get. Two names
of one grid point (``beta=0.1`` and ``beta=1e-1``) are one job. The report reads its jobs and their
states here too (:func:`job_dirs`, :func:`job_state`, :func:`sweep_state`), so both count alike.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gpo_lab.run.dirnames import job_dirname
from gpo_lab.store.lock import RunLock
from gpo_lab.store.records import read_job_files
from gpo_lab.store.run_files import CONFIG_FILE, HYDRA_DIR, METRICS_FILE, SUMMARY_FILE

MULTIRUN_FILE = "multirun.yaml"
JOB_MARKERS = (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, HYDRA_DIR)  # any of them makes a directory a job's

KEY_METRICS = ("val/win_rate", "val/kl_token", "val/kl_seq", "val/kl", "val/offline_reg", "val/loss")
COMPLETED, RUNNING, INTERRUPTED, FAILED, DAMAGED, NOT_STARTED = STATES = (
    "completed",
    "running",
    "interrupted",
    "failed",
    "damaged",
    "not started",
)
PROBLEM_STATES = (FAILED, DAMAGED)  # any of them makes the command exit with code 1
UNFINISHED = (RUNNING, INTERRUPTED, NOT_STARTED)  # a sweep with any of them is not complete


@dataclass
class Job:
    dirname: str
    state: str
    last_step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def expected_jobs(sweep_dir: Path) -> list[str]:
    """Directory names of every job of the sweep, in launch order, from ``multirun.yaml``."""
    path = sweep_dir / MULTIRUN_FILE
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
    elif status in ("running", "interrupted") or records or os.path.exists(run_dir / METRICS_FILE):
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


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is one run's own directory (``outputs/<name>/<overrides>/``) rather than a sweep's."""
    return not (path / MULTIRUN_FILE).exists() and any(os.path.lexists(path / marker) for marker in JOB_MARKERS)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory of a sweep, one per grid point: the grid in launch order, then earlier grids' jobs.

    A single run's directory is its own one job. A job is a directory holding any of ``JOB_MARKERS``,
    or one this user cannot look into (shown as damaged, not hidden).
    """
    sweep_dir = Path(sweep_dir)
    if is_run_dir(sweep_dir):
        return [sweep_dir]
    present = sorted(path.name for path in sweep_dir.iterdir() if _is_job(path))
    kept: dict[tuple, str] = {}
    for name in [*expected_jobs(sweep_dir), *present]:
        point = grid_point(name)
        if point not in kept or (name in present and kept[point] not in present):  # a started name wins
            kept[point] = name
    return [sweep_dir / name for name in kept.values()]


def grid_point(name: str) -> tuple:
    """A job's overrides as values, so that ``beta=0.1``, ``beta=1e-1`` and ``beta=0.10`` are one grid point."""
    items = []
    for item in name.split(","):  # directory names never hold a comma inside a value (gpo_lab.run.dirnames)
        key, _, value = item.partition("=")
        try:
            items.append((key.lstrip("+"), float(value)))
        except ValueError:
            items.append((key.lstrip("+"), value))
    return tuple(sorted(items, key=repr))


def _is_job(path: Path) -> bool:
    if path.name.startswith(".") or not path.is_dir():
        return False
    if not os.access(path, os.R_OK | os.X_OK):
        return True
    return any(os.path.lexists(path / marker) for marker in JOB_MARKERS)


def sweep_status(sweep_dir: Path) -> list[Job]:
    return [job_state(path) for path in job_dirs(Path(sweep_dir))]


def experiments(paths: list[Path]) -> dict[str, list[str]]:
    """The jobs of each experiment among ``paths``: Hydra's ``experiment`` choice and the task's builder.

    A sweep directory holds one experiment (a second is refused at launch: gpo_lab.run.fingerprint);
    more than one here is a directory written before that check, or jobs copied in by hand.
    """
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in paths:
        choices = _select(_load_yaml(path / HYDRA_DIR / "hydra.yaml"), "hydra", "runtime", "choices")
        builder = _select(_load_yaml(path / CONFIG_FILE), "builder")
        experiment = choices.get("experiment") if isinstance(choices, dict) else None
        found[(str(experiment or "none"), str(builder or "unknown"))].append(path.name)
    experiment_names = [experiment for experiment, _ in found]
    return {
        f"experiment={experiment}" + (f" (builder {builder})" if experiment_names.count(experiment) > 1 else ""): names
        for (experiment, builder), names in found.items()
    }


def mixed_experiments_message(sweep_dir: Path, groups: dict[str, list[str]]) -> str:
    listed = "; ".join(f"{label}: {len(names)} job(s), e.g. {names[0]}" for label, names in groups.items())
    return (
        f"{sweep_dir} holds the jobs of {len(groups)} experiments ({listed}), so one report or best beta over them "
        "would mix them. Move each experiment's job directories into a directory of its own (one sweep "
        "directory per experiment: name=... or hydra.sweep.dir=... when launching)."
    )


def _load_yaml(path: Path):
    try:
        return yaml.load(path.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None


def _select(node, *keys):
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


@dataclass
class SweepState:
    """How far a sweep got, as the status and report commands both say it."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        return sum(self.counts.get(state, 0) for state in (*UNFINISHED, DAMAGED))

    @property
    def complete(self) -> bool:
        """Every job of the grid ended (completed or failed) and at least one completed."""
        return self.unfinished == 0 and self.counts.get(COMPLETED, 0) > 0

    @property
    def all_failed(self) -> bool:
        return self.total > 0 and self.counts.get(FAILED, 0) == self.total

    def describe(self) -> str:
        """``1 completed, 2 interrupted, 1 not started``: the count of each state, in STATES order."""
        return ", ".join(f"{n} {state}" for state, n in self.counts.items() if n) or "no jobs"


def sweep_state(states: list[str]) -> SweepState:
    return SweepState({state: sum(s == state for s in states) for state in STATES})


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
    lines.append(sweep_state([job.state for job in jobs]).describe())
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
        paths = job_dirs(args.sweep_dir)
        jobs = [job_state(path) for path in paths]
    except OSError as error:
        print(f"Cannot read the sweep directory {args.sweep_dir}: {error.strerror or error}", file=sys.stderr)
        return 2
    if is_run_dir(args.sweep_dir) and not args.json:
        print(f"{args.sweep_dir} is a single run's directory, not a sweep; its state:")
    groups = experiments([path for path, job in zip(paths, jobs) if job.state != NOT_STARTED])
    if len(groups) > 1:
        print(f"warning: {mixed_experiments_message(args.sweep_dir, groups)}", file=sys.stderr)
    print("\n".join(json.dumps(asdict(job)) for job in jobs) if args.json else format_table(jobs))
    return 1 if any(job.state in PROBLEM_STATES for job in jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
