"""From jobs to comparisons: seeds averaged per configuration, the best beta of each loss, and
each loss's trade-off frontier.

Spread over seeds is the sample standard deviation (n - 1 in the denominator). A configuration
run with a single seed has no spread over seeds; its error bar is then the evaluation's own
standard error (``<metric>_se``) when the metric logs one. ``err_kind`` says which applies.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gpo_lab.report.axes import Metric
from gpo_lab.report.collect import COMPLETED

SEED_SD = "sd over seeds"
EVAL_SE = "evaluation SE"


def aggregate(jobs: pd.DataFrame, metrics: list[Metric], value: str = "final") -> pd.DataFrame:
    """One row per configuration (``config``): the mean and error of each metric over its seeds.

    Completed jobs count, and unfinished jobs with values (the row is then ``partial``); failed
    jobs do not. Columns: ``config``, ``loss``, ``beta``, ``lr``, ``n``, ``seeds``, ``partial``,
    ``jobs``, and per metric spec S: ``S mean``, ``S sd``, ``S se``, ``S err``, ``S err_kind``.
    """
    usable = jobs[(jobs["status"] == COMPLETED) | jobs["partial"].astype(bool)].copy()
    for metric in metrics:
        usable[f"{metric.spec} v"] = metric.values(usable, value)
        usable[f"{metric.spec} s"] = metric.standard_errors(usable, value)
    if metrics:
        usable = usable[usable[[f"{m.spec} v" for m in metrics]].notna().any(axis=1)]
    rows = []
    for config, group in usable.groupby("config", sort=False):
        first = group.iloc[0]
        row = {
            "config": config,
            "loss": first["loss"],
            "beta": first["beta"],
            "lr": first["lr"],
            "n": len(group),
            "seeds": sorted(group["seed"].dropna().tolist()),
            "partial": bool(group["partial"].astype(bool).any()),
            "jobs": group["job"].tolist(),
            "ratio": first_number(group, "ratio"),  # f''(0)/|f'(0)|, as the jobs recorded it
        }
        for metric in metrics:
            values = group[f"{metric.spec} v"].dropna()
            mean = values.mean() if len(values) else math.nan
            sd = values.std(ddof=1) if len(values) > 1 else math.nan
            se = group[f"{metric.spec} s"].dropna()
            eval_se = float(se.iloc[0]) if len(values) == 1 and len(se) == 1 else math.nan
            row.update(
                {
                    f"{metric.spec} mean": mean,
                    f"{metric.spec} sd": sd,
                    f"{metric.spec} se": eval_se,
                    f"{metric.spec} err": sd if len(values) > 1 else eval_se,
                    f"{metric.spec} err_kind": SEED_SD
                    if len(values) > 1
                    else (EVAL_SE if not math.isnan(eval_se) else ""),
                }
            )
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["scaled_beta"] = frame["beta"] * frame["ratio"]
    return frame.sort_values(["loss", "lr", "beta"], na_position="last").reset_index(drop=True)


def first_number(group: pd.DataFrame, column: str) -> float:
    """The first numeric value of ``column`` among the rows (NaN if none): e.g. a loss's recorded ratio."""
    values = pd.to_numeric(group[column], errors="coerce").dropna() if column in group else pd.Series(dtype=float)
    return float(values.iloc[0]) if len(values) else math.nan


def best_beta(configs: pd.DataFrame, metric: Metric, jobs: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each loss, the configuration whose mean metric over seeds is best (completed jobs only).

    Columns: ``loss``, ``beta``, ``lr``, ``mean``, ``sd``, ``err``, ``err_kind``, ``n``,
    ``ratio``, ``scaled_beta`` and ``pending``: the loss's unfinished jobs (running or interrupted), counted in
    ``jobs`` when given (also those without any value yet), else among ``configs``.
    """
    columns = ["loss", "beta", "lr", "mean", "sd", "err", "err_kind", "n", "ratio", "scaled_beta", "pending"]
    has_metric = not configs.empty and f"{metric.spec} mean" in configs
    if jobs is not None:
        pending = jobs[jobs["partial"].astype(bool)].groupby("loss").size()
    else:
        pending = configs.groupby("loss")["partial"].sum() if not configs.empty else pd.Series(dtype=int)
    losses = sorted(set(configs["loss"].dropna() if has_metric else []) | set(pending.index))
    rows = []
    for loss in losses:
        row = {"loss": loss, "pending": int(pending.get(loss, 0))}
        done = configs[(configs["loss"] == loss) & ~configs["partial"]] if has_metric else configs
        done = done[done[f"{metric.spec} mean"].notna()] if has_metric else done.iloc[0:0]
        if not done.empty:
            means = done[f"{metric.spec} mean"]
            best = done.loc[means.idxmax() if metric.higher_is_better else means.idxmin()]
            row.update(
                {
                    "beta": best["beta"],
                    "lr": best["lr"],
                    "mean": best[f"{metric.spec} mean"],
                    "sd": best[f"{metric.spec} sd"],
                    "err": best[f"{metric.spec} err"],
                    "err_kind": best[f"{metric.spec} err_kind"],
                    "n": best["n"],
                    "ratio": best["ratio"],
                    "scaled_beta": best["scaled_beta"],
                }
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def pareto_frontier(x: np.ndarray, y: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Indices of the points no other point beats on both axes (lower x, better y), by increasing x.

    This is the upper-left frontier of a quality-against-KL plot: the best quality reached for
    a given divergence from the reference.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not higher_is_better:
        y = -y
    valid = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = valid[np.lexsort((-y[valid], x[valid]))]  # by x, then better y first
    frontier, best = [], -np.inf
    for index in order:
        if y[index] > best:
            frontier.append(index)
            best = y[index]
    return np.asarray(frontier, dtype=int)
