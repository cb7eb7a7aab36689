"""The report's figures of training: KL and the offline regularizer over the steps of chosen jobs,
and R_mu against KL over training, with where R_mu stops tracking the KL."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gpo_lab.report.axes import REGULARIZER, Metric, MissingMetric
from gpo_lab.report.figure_style import LINESTYLES, log_if_wide, loss_colors, wrap


def dynamics(histories: dict[str, tuple[str, pd.DataFrame]], kl: Metric | None) -> Figure:
    """KL and the offline regularizer over training steps, one line per chosen job.

    ``histories`` maps a job name to (its loss, its validation records). Shaded bands are ±1
    standard error of the evaluation, where it was logged.
    """
    metrics = [
        m
        for m in (kl, Metric(REGULARIZER))
        if m is not None and any(m.name in frame and frame[m.name].notna().any() for _, frame in histories.values())
    ]
    if not metrics:
        raise MissingMetric(
            f"none of the chosen jobs logged {kl.name if kl else 'a KL metric'} or {REGULARIZER} at validation"
        )
    figure = Figure(figsize=(9, 3.2 * len(metrics) + 1.2), layout="constrained")
    axes = figure.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    colors = loss_colors(loss for loss, _ in histories.values())
    seen: dict[str, int] = {}
    for job, (loss, frame) in histories.items():
        style = LINESTYLES[seen.get(loss, 0) % len(LINESTYLES)]
        seen[loss] = seen.get(loss, 0) + 1
        for ax, metric in zip(axes, metrics):
            if metric.name not in frame:
                continue
            rows = frame[["step", metric.name] + ([f"{metric.name}_se"] if f"{metric.name}_se" in frame else [])]
            rows = rows.dropna(subset=[metric.name])
            ax.plot(rows["step"], rows[metric.name], color=colors[loss], ls=style, marker="o", ms=3, label=job)
            if f"{metric.name}_se" in rows:
                se = rows[f"{metric.name}_se"].fillna(0)
                ax.fill_between(
                    rows["step"], rows[metric.name] - se, rows[metric.name] + se, color=colors[loss], alpha=0.15, lw=0
                )
    for ax, metric in zip(axes, metrics):
        ax.set_ylabel(wrap(metric.label))
        ax.grid(alpha=0.3)
        log_if_wide(ax, pd.concat([f[metric.name] for _, f in histories.values() if metric.name in f]), "y")
    axes[-1].set_xlabel("training step (optimizer updates)")
    figure.legend(
        *axes[0].get_legend_handles_labels(), title="job (loss colour)", fontsize=8, loc="outside lower center", ncols=2
    )
    missing = "" if kl is not None and kl in metrics else " (no KL metric logged: regularizer only)"
    axes[0].set_title("Regularization during training" + missing)
    return figure


TRACKING_FACTOR = 2.0


def departure(kl: np.ndarray, reg: np.ndarray, factor: float = TRACKING_FACTOR) -> int | None:
    """Index of the first validation where R_mu / KL has moved by more than ``factor`` (either way)
    from its value at the first validation with both positive; None while it tracks.

    Near the reference both are quadratic in the change of the policy, so their ratio starts out
    steady; it drifts once the policy moves mass where mu does not look (KL grows, R_mu does not).
    """
    kl, reg = np.asarray(kl, dtype=float), np.asarray(reg, dtype=float)
    usable = np.flatnonzero((kl > 0) & (reg > 0) & np.isfinite(kl) & np.isfinite(reg))
    if len(usable) < 2:
        return None
    ratio = reg[usable] / kl[usable]
    moved = np.flatnonzero(np.abs(np.log(ratio / ratio[0])) > math.log(factor))
    return int(usable[moved[0]]) if len(moved) else None


def regularizer_vs_kl(histories: dict[str, tuple[str, pd.DataFrame]], kl: Metric | None) -> Figure:
    """R_mu against KL over training, one line per job (through its validations, in step order).

    An x marks where each job's R_mu / KL first moved by more than a factor TRACKING_FACTOR from its
    early value: from there the offline regularizer no longer tracks the KL.
    """
    reg = REGULARIZER
    if kl is None:
        raise MissingMetric("no KL metric was logged")
    lines = {
        job: (loss, frame[["step", kl.name, reg]].dropna().sort_values("step"))
        for job, (loss, frame) in histories.items()
        if kl.name in frame and reg in frame
    }
    lines = {job: value for job, value in lines.items() if len(value[1])}
    if not lines:
        raise MissingMetric(f"no job logged both {kl.name} and {reg} at validation")
    figure = Figure(figsize=(9, 6), layout="constrained")
    ax = figure.add_subplot()
    colors = loss_colors(loss for loss, _ in lines.values())
    labelled = set()
    departed = 0
    for loss, rows in lines.values():
        x, y = rows[kl.name].to_numpy(), rows[reg].to_numpy()
        label = None if loss in labelled else loss
        ax.plot(x, y, color=colors[loss], lw=1.2, alpha=0.7, marker="o", ms=2.5, label=label)
        labelled.add(loss)
        at = departure(x, y)
        if at is not None:
            departed += 1
            ax.plot([x[at]], [y[at]], marker="x", ms=9, mew=2, color=colors[loss], ls="none")
    log_if_wide(ax, pd.concat([rows[kl.name] for _, rows in lines.values()]), "x")
    log_if_wide(ax, pd.concat([rows[reg] for _, rows in lines.values()]), "y")
    ax.set_xlabel(kl.label)
    ax.set_ylabel(Metric(reg).label)
    ax.set_title(
        f"Offline regularizer against KL over training, {len(lines)} jobs\n×: R_mu/KL moved by more than "
        f"{TRACKING_FACTOR:g}× from its start, in {departed})"
    )
    ax.grid(alpha=0.3, which="both")
    figure.legend(*ax.get_legend_handles_labels(), title="loss", fontsize=8, loc="outside right upper")
    return figure
