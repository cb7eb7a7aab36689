"""A sweep's report: choose the metrics, aggregate seeds, draw what the data allows, write report.md.

What cannot be drawn (a metric no job logged) becomes a note in the report instead of an error,
so a sweep still running, one with failed jobs, or one whose jobs log no KL still gets a report.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gpo_lab.errors import ConfigError
from gpo_lab.report import figures
from gpo_lab.report.aggregate import aggregate, best_beta
from gpo_lab.report.axes import KL_CANDIDATES, QUALITY_CANDIDATES, REGULARIZER, Metric, MissingMetric, choose
from gpo_lab.report.claims import REPLICATES, Claims, judge
from gpo_lab.report.collect import COMPLETED, Sweep, collect
from gpo_lab.report.markdown import render

log = logging.getLogger(__name__)

FIGURES = {
    "tradeoff": "tradeoff.png",
    "beta": "beta.png",
    "kl_beta": "kl_beta.png",
    "regularizer_kl": "regularizer_kl.png",
    "dynamics": "dynamics.png",
    "loss_functions": "loss_functions.png",
}
MAX_DYNAMICS_JOBS = 8


@dataclass
class Report:
    sweep: Sweep
    x: Metric | None
    y: Metric | None
    value: str
    configs: pd.DataFrame
    best: pd.DataFrame
    dynamics_jobs: list[str]
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    path: Path | None = None
    claims: Claims | None = None


def make_report(
    sweep: str | Path | Sweep,
    out: str | Path | None = None,
    x: str | None = None,
    y: str | None = None,
    value: str = "final",
    jobs: list[str] | None = None,
) -> Report:
    """Write ``report.md`` and the figures into ``out`` (default: the sweep directory)."""
    sweep = sweep if isinstance(sweep, Sweep) else collect(sweep)
    if out is None and not Path(sweep.source).is_dir():
        raise ValueError(f"The sweep {sweep.source} has no directory to write into: pass out=DIRECTORY.")
    report = analyse(sweep, x=x, y=y, value=value, jobs=jobs)
    out = writable_output(Path(out if out is not None else sweep.source), default=out is None)
    drawers = {
        "tradeoff": lambda: figures.tradeoff(
            report.configs, _need(report.x, "KL", KL_CANDIDATES), _need(report.y, "quality", QUALITY_CANDIDATES)
        ),
        "beta": lambda: figures.quality_vs_beta(report.configs, _need(report.y, "quality", QUALITY_CANDIDATES)),
        "kl_beta": lambda: figures.quality_vs_beta(report.configs, _need(report.x, "KL", KL_CANDIDATES)),
        "regularizer_kl": lambda: figures.regularizer_vs_kl(histories(sweep, completed_jobs(sweep)), report.x),
        "dynamics": lambda: figures.dynamics(histories(sweep, report.dynamics_jobs), report.x),
        "loss_functions": lambda: figures.loss_functions(_losses(sweep)),
    }
    try:
        _write(report, drawers, out)
    except OSError as error:
        raise ConfigError(f"Cannot write the report into {out}: {error.strerror or error}. {_OUT_FIX}") from error
    return report


_OUT_FIX = "Pass --out DIRECTORY (out=...) to write it elsewhere; the sweep's files are only read."


def writable_output(out: Path, default: bool) -> Path:
    """``out``, created if need be, or a ConfigError saying where the report can go instead."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"Cannot create the report directory {out}: {error.strerror or error}. {_OUT_FIX}") from error
    if not os.access(out, os.W_OK | os.X_OK):
        where = "the sweep directory " if default else ""
        raise ConfigError(f"Cannot write the report into {where}{out}: it is read-only for this user. {_OUT_FIX}")
    return out


def _write(report: Report, drawers: dict, out: Path) -> None:
    for key, draw in drawers.items():
        try:
            figure = draw()
        except MissingMetric as missing:
            report.notes.append(f"Figure '{key}' not drawn: {missing}.")
            log.warning("Figure %s not drawn: %s", key, missing)
            continue
        report.figures[key] = figures.save(figure, out / FIGURES[key])
    for stale in set(FIGURES) - set(report.figures):  # a figure of an earlier report would mislead
        (out / FIGURES[stale]).unlink(missing_ok=True)
    report.path = out / "report.md"
    report.path.write_text(render(report))


def analyse(
    sweep: Sweep,
    x: str | None = None,
    y: str | None = None,
    value: str = "final",
    jobs: list[str] | None = None,
    replicates: int = REPLICATES,
) -> Report:
    """Everything the report shows except the figures: metrics chosen, seeds aggregated, best beta."""
    if value not in ("final", "best"):
        raise ValueError(f"value must be 'final' or 'best', got {value!r}")
    x_metric = choose(sweep.jobs, x, KL_CANDIDATES)
    y_metric = choose(sweep.jobs, y, QUALITY_CANDIDATES)
    notes = []
    for requested, metric in ((x, x_metric), (y, y_metric)):
        if requested and not metric.present(sweep.jobs):
            notes.append(
                f"The requested metric {metric.name} was not logged by any job; "
                f"logged: {', '.join(sweep.metrics()) or 'none'}."
            )
    if y_metric is not None and not y and y_metric.name != "val/win_rate":
        notes.append(f"val/win_rate was not logged; the quality axis uses {y_metric.spec} instead.")
    metrics = [m for m in (x_metric, y_metric, Metric(REGULARIZER)) if m is not None]
    metrics = list(dict.fromkeys(metrics))
    configs = aggregate(sweep.jobs, metrics, value)
    best = (
        best_beta(configs, y_metric, sweep.jobs)
        if y_metric is not None
        else pd.DataFrame(columns=["loss", "beta", "lr"])
    )
    chosen = jobs or default_dynamics_jobs(sweep, configs, y_metric)
    unknown = [job for job in chosen if job not in set(sweep.jobs["job"])]
    if unknown:
        raise ValueError(f"Unknown job(s) {', '.join(unknown)}; jobs of this sweep: {', '.join(sweep.jobs['job'])}")
    return Report(
        sweep=sweep,
        x=x_metric,
        y=y_metric,
        value=value,
        configs=configs,
        best=best,
        dynamics_jobs=chosen,
        notes=notes,
        claims=judge(sweep.jobs, y_metric, x_metric, value, replicates=replicates),
    )


def default_dynamics_jobs(sweep: Sweep, configs: pd.DataFrame, y: Metric | None) -> list[str]:
    """For each loss, a job of its best configuration (or its first job without a quality metric)."""
    chosen = []
    if y is not None and not configs.empty:
        best = best_beta(configs, y).dropna(subset=["beta"])
        for _, row in best.iterrows():
            match = configs[
                (configs["loss"] == row["loss"])
                & (configs["beta"] == row["beta"])
                & ((configs["lr"] == row["lr"]) | configs["lr"].isna())
            ]
            if not match.empty:
                chosen.append(match.iloc[0]["jobs"][0])
    if not chosen:
        usable = sweep.jobs[sweep.jobs["status"] != "failed"]
        chosen = usable.groupby("loss", sort=True)["job"].first().tolist() or usable["job"].tolist()
    return chosen[:MAX_DYNAMICS_JOBS]


def completed_jobs(sweep: Sweep) -> list[str]:
    return sweep.jobs[sweep.jobs["status"] == COMPLETED]["job"].tolist()


def histories(sweep: Sweep, jobs: list[str]) -> dict[str, tuple[str, pd.DataFrame]]:
    losses = sweep.jobs.set_index("job")["loss"]
    return {job: (str(losses[job]), sweep.history(job)) for job in jobs}


def _losses(sweep: Sweep) -> list[str]:
    completed_first = pd.concat([sweep.jobs[sweep.jobs["status"] == COMPLETED], sweep.jobs])
    known = [loss for loss in figures.PAPER_LOSSES if loss in set(completed_first["loss"])]
    custom = [loss for loss in completed_first["loss"].dropna().unique() if loss not in figures.PAPER_LOSSES]
    return known + custom


def _need(metric: Metric | None, kind: str, candidates: tuple[str, ...]) -> Metric:
    if metric is None:
        raise MissingMetric(f"no {kind} metric was logged (looked for {', '.join(candidates)})")
    return metric
