"""Everything a sweep's report shows except the figures: the metrics chosen, seeds aggregated, the
best beta of each loss, the claims judged, and the jobs whose training the dynamics figure follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gpo_lab.report.aggregate import aggregate, best_beta
from gpo_lab.report.axes import KL_CANDIDATES, QUALITY_CANDIDATES, REGULARIZER, Metric, choose
from gpo_lab.report.claims import REPLICATES, Claims, judge
from gpo_lab.report.collect import Sweep
from gpo_lab.report.frontier_test import MARGIN

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


def analyse(
    sweep: Sweep,
    x: str | None = None,
    y: str | None = None,
    value: str = "final",
    jobs: list[str] | None = None,
    replicates: int = REPLICATES,
    margin: float = MARGIN,
) -> Report:
    """Everything the report shows except the figures: metrics chosen, seeds aggregated, best beta;
    ``margin``: claim 1's equivalence margin, in the quality's units."""
    if value not in ("final", "best"):
        raise ValueError(f"value must be 'final' or 'best', got {value!r}")
    x_metric = choose(sweep.jobs, x, KL_CANDIDATES)
    y_metric = choose(sweep.jobs, y, QUALITY_CANDIDATES)
    notes = []
    for requested, metric in ((x, x_metric), (y, y_metric)):
        if requested and metric is not None and not metric.present(sweep.jobs):
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
        claims=judge(sweep.jobs, y_metric, x_metric, value, replicates=replicates, margin=margin),
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
