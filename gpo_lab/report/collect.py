"""Read a sweep directory into one table with a row per job, finished or not.

A sweep directory (``multirun/<name>/``) holds one directory per job, named by its overrides,
each with ``summary.json``, ``metrics.jsonl`` and ``config.yaml``. The jobs and their states are
the status command's (:mod:`gpo_lab.status`): the grid's jobs not started yet are counted, not
read. A job still running or interrupted contributes the latest values of its ``metrics.jsonl``,
marked ``partial``; a failed one keeps its error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gpo_lab.errors import ConfigError
from gpo_lab.losses.catalog import canonical_name
from gpo_lab.report.loss_shapes import LossShape, members_first, ratio_of, shape_of
from gpo_lab.status import (  # the job states, named here for the report's modules too
    COMPLETED,
    DAMAGED,  # noqa: F401
    FAILED,  # noqa: F401
    INTERRUPTED,
    NOT_STARTED,
    RUNNING,
    SweepState,
    experiments,
    job_dirs,
    job_state,
    mixed_experiments_message,
    sweep_state,
)
from gpo_lab.store.best_and_last import BestAndLast
from gpo_lab.store.directions import PREFIX, TEST_PREFIX, metric_mode
from gpo_lab.store.records import read_job_files
from gpo_lab.store.run_files import METRICS_FILE, SUMMARY_FILE, RunFiles

log = logging.getLogger(__name__)

UNFINISHED_READ = (RUNNING, INTERRUPTED)  # read from metrics.jsonl: their values may still change
SEED_KEYS = ("seed", "+seed", "++seed")
# What chooses a job's checkpoint for ``--value best``: the first of these its validations logged.
SELECTION_METRICS = ("val/win_rate", "val/reward", "val/rewards/accuracies", "val/loss")


@dataclass
class Sweep:
    """The jobs of one sweep, and a way to read each job's validation history."""

    name: str
    source: str
    jobs: pd.DataFrame
    read_history: Callable[[str], pd.DataFrame] = field(repr=False)
    loss_shapes: dict[str, LossShape] = field(default_factory=dict, repr=False)  # loss -> its shape, if known
    not_started: list[str] = field(default_factory=list)  # the grid's jobs without a directory of their own yet

    def history(self, job: str) -> pd.DataFrame:
        """Validation records of a job: a ``step`` column and one column per ``val/`` metric."""
        return self.read_history(job)

    @property
    def status_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.jobs["status"].value_counts().sort_index().items()}

    @property
    def state(self) -> SweepState:
        """The count of each job state, the grid's jobs not started included (as the status command counts)."""
        return sweep_state([*self.jobs["status"], *[NOT_STARTED] * len(self.not_started)])

    @property
    def partial(self) -> bool:
        """True while any job of the grid has not ended (running, interrupted, not started, damaged)."""
        return self.state.unfinished > 0

    def metrics(self) -> list[str]:
        """Validation metrics with a value in at least one job."""
        names = [c[len("final/") :] for c in self.jobs.columns if c.startswith("final/")]
        return sorted(n for n in names if self.jobs[f"final/{n}"].notna().any())


def locate(sweep_dir: str | Path) -> Path:
    """A relative sweep directory as a notebook means it: from the working directory, else from the nearest
    folder above it that holds it (Jupyter starts in ``notebooks/``, sweeps lie in the checkout's ``multirun/``)."""
    path = Path(sweep_dir).expanduser()
    if path.is_absolute() or path.exists():
        return path
    for folder in Path.cwd().resolve().parents:
        if (folder / path).is_dir():
            return folder / path
    return path  # collect() names it as missing


def collect(sweep_dir: str | Path) -> Sweep:
    """Every started job of a sweep directory as a row (see :func:`read_job`); those not started, by name."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(
            f"Sweep directory {str(sweep_dir)!r} does not exist. Pass the folder a multirun "
            "wrote, e.g. multirun/<name>/."
        )
    states = {path: job_state(path).state for path in job_dirs(sweep_dir)}
    jobs = [path for path, state in states.items() if state != NOT_STARTED]
    if not jobs:
        raise ConfigError(
            f"{str(sweep_dir)!r} holds no job directories with results (none has a {SUMMARY_FILE} or "
            f"{METRICS_FILE}{f'; none of the {len(states)} jobs of its grid has started' if states else ''}). "
            "Pass the folder a multirun wrote, e.g. multirun/<name>/, once a job has started."
        )
    groups = experiments(jobs)
    if len(groups) > 1:
        raise ConfigError(mixed_experiments_message(sweep_dir, groups))
    read = [job_and_shape(path, states[path]) for path in jobs]
    rows = [row for row, _ in read]
    frame = pd.DataFrame(rows)
    names = frame["name"].dropna().unique()
    name = str(names[0]) if len(names) == 1 else sweep_dir.name
    paths = {row["job"]: Path(row["path"]) for row in rows}
    return Sweep(
        name=name,
        source=str(sweep_dir),
        jobs=frame,
        read_history=lambda job: validation_history(read_job_files(paths[job]).records),
        loss_shapes=pick_shapes(read),
        not_started=[path.name for path, state in states.items() if state == NOT_STARTED],
    )


def pick_shapes(read: list[tuple[dict[str, Any], LossShape | None]]) -> dict[str, LossShape]:
    """One shape per loss, members first: a recorded curve before the exact fallback, a completed job first."""
    ranked = sorted(read, key=lambda pair: (pair[1] is None or not pair[1].has_curve, pair[0]["status"] != COMPLETED))
    shapes: dict[str, LossShape] = {}
    for row, shape in ranked:
        if shape is not None and isinstance(row["loss"], str):
            shapes.setdefault(row["loss"], shape)
    return {loss: shapes[loss] for loss in members_first(list(shapes))}


def validation_history(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per validation step (the last record wins at a repeated step)."""
    rows: dict[int, dict[str, float]] = {}
    for record in records:
        values = {k: v for k, v in record.items() if k.startswith("val/")}
        if values and record.get("step") is not None:
            rows.setdefault(int(record["step"]), {}).update(values)
    frame = pd.DataFrame([{"step": step, **values} for step, values in sorted(rows.items())])
    return frame if not frame.empty else pd.DataFrame({"step": pd.Series(dtype="int64")})


def canonical_loss(name: Any) -> str | None:
    """The table name of a loss given by name or alias (a dotted path of a custom loss stays as is)."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return None
    return canonical_name(str(name))


def read_job(job_dir: Path) -> dict[str, Any]:
    """One job's row.

    Columns: ``job`` (directory name), ``path``, ``status``, ``partial`` (values read from a
    running job's metrics), ``name``, ``loss``, ``beta``, ``lr``, ``seed``, ``config`` (the job's
    name without its seed: jobs that differ only by seed share it), ``steps`` (optimizer
    updates done), ``wall_time_s``, ``error``, ``ratio`` (the loss's f''(0)/|f'(0)|, NaN if
    unknown), and per validation metric M: ``final/M``, ``best/M``, ``best_step/M``, ``best_se/M``.
    ``best`` is one checkpoint (:func:`chosen_step`): every metric's value at one step, not each its own best.
    """
    return job_and_shape(job_dir)[0]


def job_and_shape(job_dir: Path, status: str | None = None) -> tuple[dict[str, Any], LossShape | None]:
    """A job's row (:func:`read_job`) and its loss's shape (:mod:`~gpo_lab.report.loss_shapes`).

    ``status`` is the job's state as :func:`gpo_lab.status.job_state` finds it (read here when not given).
    """
    files = read_job_files(job_dir)
    if files.problem is not None:
        log.warning("%s", files.problem)
    summary, records = files.summary, files.records
    config = _read_config(job_dir)
    status = status or job_state(job_dir).state
    unfinished = status in UNFINISHED_READ
    named = dict(item.split("=", 1) for item in job_dir.name.split(",") if "=" in item)  # last resort
    row: dict[str, Any] = {
        "job": job_dir.name,
        "path": str(job_dir),
        "status": status,
        "partial": unfinished,
        "name": summary.get("name", config.get("name")),
        "loss": canonical_loss(
            _first(summary.get("loss"), _select(config, "loss.name"), _select(config, "loss.fn"), named.get("loss"))
        ),
        "beta": _number(_first(summary.get("beta"), config.get("beta"), named.get("beta"))),
        "lr": _number(_first(summary.get("lr"), _select(config, "optim.lr"), named.get("optim.lr"))),
        "seed": _integer(_first(summary.get("seed"), config.get("seed"), named.get("seed"))),
        "config": config_key(job_dir.name),
        "steps": summary.get("steps") if not unfinished else _last_step(records),
        "wall_time_s": summary.get("wall_time_s"),
        "error": files.problem or _text(summary.get("error")),
    }
    shape = shape_of(summary.get("loss_function"), row["loss"])
    row["ratio"] = ratio_of(shape)
    final, best = _mapping(summary.get("final")), _mapping(summary.get("best"))
    if unfinished or (not final and records):
        final, best = _from_records(records)
    best = chosen_step(records) or best
    for metric, value in final.items():
        row[f"final/{metric}"] = _number(value)
    for metric, entry in best.items():
        entry = _mapping(entry)
        row[f"best/{metric}"] = _number(entry.get("value"))
        row[f"best_step/{metric}"] = entry.get("step")
        row[f"best_se/{metric}"] = _number(entry.get("se"))
    return row, shape


def chosen_step(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every directed ``val/`` metric at the one step whose validation is best by the first logged of
    :data:`SELECTION_METRICS` (the first such step on a tie), as ``{"value", "step", "se"}``.

    A metric also logged on the test prompts (``test/X`` beside ``val/X``) takes its test value: the
    step was chosen on the validation prompts, so its value there is biased upwards by the choice.
    Empty when no record has a selection metric (the summary's best then stands).
    """
    for selector in SELECTION_METRICS:
        scored = [r for r in records if isinstance(r.get(selector), (int, float)) and math.isfinite(r[selector])]
        if scored:
            break
    else:
        return {}
    sign = -1 if metric_mode(selector) == "min" else 1
    record = max(scored, key=lambda r: sign * r[selector])  # max() keeps the first of equals
    chosen = {}
    for name in record:
        if not name.startswith(PREFIX) or metric_mode(name) is None:
            continue
        twin = TEST_PREFIX + name[len(PREFIX) :]
        source = twin if record.get(twin) is not None else name
        chosen[name] = {"value": record[source], "step": record.get("step"), "se": record.get(f"{source}_se")}
    return chosen


def config_key(job_name: str) -> str:
    """A job's directory name (its overrides) without the seed: seeds of one configuration share it.

    Splitting on the separator and joining again keeps list values such as ``a=[1,2]`` intact.
    """
    kept = [item for item in job_name.split(",") if item.split("=", 1)[0] not in SEED_KEYS]
    return ",".join(kept) or "default"


def _from_records(records: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Latest and best value of each ``val/`` metric in the records written so far."""
    values = BestAndLast().replay(records)
    return values.final, values.best


def _last_step(records: list[dict[str, Any]]) -> int | None:
    steps = [r["step"] for r in records if r.get("step") is not None]
    return max(steps) if steps else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_config(job_dir: Path) -> dict[str, Any]:
    """The job's config for its identifying values; an unreadable or damaged one is skipped (the summary has them)."""
    for path in (RunFiles(job_dir).config, RunFiles(job_dir).hydra_config):
        try:
            config = yaml.safe_load(path.read_bytes().decode("utf-8", errors="replace"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(config, dict):
            return config
    return {}


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
