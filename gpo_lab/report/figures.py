"""The report's figures of the end of training, one function each: quality against KL (each loss's
frontier), and quality or KL against beta and against beta·f''(0)/|f'(0)|.

Every figure colours a loss the same way (:mod:`~gpo_lab.report.figure_style`). A figure that lacks
the metric it needs raises :class:`~gpo_lab.report.axes.MissingMetric` with the reason.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gpo_lab.losses.catalog import FIELD_LOSSES
from gpo_lab.report.aggregate import pareto_frontier
from gpo_lab.report.axes import Metric, MissingMetric
from gpo_lab.report.figure_style import LINESTYLES, MARKERS, err_kinds, log_if_wide, loss_colors, short_name


def tradeoff(configs: pd.DataFrame, x: Metric, y: Metric, annotate: bool | None = None) -> Figure:
    """Quality against divergence, one point per configuration, each loss's frontier drawn through.

    The paper's main figure: which quality each loss reaches for a given KL from the reference.
    Points are means over seeds with error bars (see :mod:`~gpo_lab.report.aggregate`); marker
    size grows with beta; hollow points come from jobs still running and join the frontier only
    when the loss has no finished point. Small sweeps get a beta label on each point (``annotate``).
    """
    data = _with_metrics(configs, [x, y])
    figure = Figure(figsize=(10, 6), layout="constrained")
    ax = figure.add_subplot()
    colors = loss_colors(data["loss"].unique())
    lr_markers = _lr_markers(data)
    sizes = _beta_sizes(data)
    annotate = len(data) <= 12 if annotate is None else annotate
    for loss, group in data.groupby("loss", sort=True):
        color = colors[loss]
        finished = group[~group["partial"]] if not group["partial"].all() else group  # running jobs may still move
        frontier = finished.iloc[
            pareto_frontier(finished[f"{x.spec} mean"], finished[f"{y.spec} mean"], y.higher_is_better)
        ]
        ax.plot(frontier[f"{x.spec} mean"], frontier[f"{y.spec} mean"], color=color, lw=1.8, label=loss, zorder=1)
        for _, row in group.iterrows():
            _point(ax, row, x, y, color, lr_markers.get(row["lr"], "o"), sizes[row["beta"]])
            if annotate:
                ax.annotate(
                    f"β={row['beta']:g}",
                    (row[f"{x.spec} mean"], row[f"{y.spec} mean"]),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=7,
                    color=color,
                )
    ax.set_xlabel(x.label)
    ax.set_ylabel(y.label)
    log_if_wide(ax, data[f"{x.spec} mean"], "x")
    ax.set_title(f"Trade-off: {short_name(y)} against {short_name(x)}; lines: each loss's frontier")
    ax.grid(alpha=0.3)
    figure.legend(*ax.get_legend_handles_labels(), title="loss", fontsize=8, loc="outside right upper")
    figure.legend(*_key(ax, data, lr_markers, sizes, [x, y]), title="markers", fontsize=8, loc="outside right lower")
    return figure


def quality_vs_beta(configs: pd.DataFrame, y: Metric) -> Figure:
    """Quality against beta, and against beta·f''(0)/|f'(0)| where theory lines the losses up.

    The second-order weight of the offline regularizer is beta·f''(0)/|f'(0)|, so losses that
    regularize the same amount sit at the same rescaled beta. The hinge loss (f''(0) = 0) has no
    such term and is left out of the right panel.
    """
    data = _with_metrics(configs, [y])
    figure = Figure(figsize=(13, 4.8), layout="constrained")
    raw, scaled = figure.subplots(1, 2, sharey=True)
    colors = loss_colors(data["loss"].unique())
    styles = {lr: LINESTYLES[i % len(LINESTYLES)] for i, lr in enumerate(sorted(data["lr"].dropna().unique()))}
    omitted = []
    for (loss, lr), group in data.groupby(["loss", "lr"], sort=True, dropna=False):
        group = group.sort_values("beta")
        label = loss if len(styles) <= 1 else f"{loss}, lr={lr:g}"
        style = dict(color=colors[loss], ls=styles.get(lr, "-"), marker="o", capsize=3, ms=5)
        ratio = group["ratio"].iloc[0]
        panels = [(raw, "beta")]
        if ratio > 0:
            panels.append((scaled, "scaled_beta"))
        else:
            omitted.append(_omission(loss, ratio))
        for ax, column in panels:
            ax.errorbar(group[column], group[f"{y.spec} mean"], yerr=_err(group, y), label=label, **style)
            running = group[group["partial"]]
            ax.plot(
                running[column],
                running[f"{y.spec} mean"],
                ls="none",
                marker="o",
                ms=5,
                color=colors[loss],
                markerfacecolor="white",
                zorder=3,
            )
    for ax in (raw, scaled):
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
    log_if_wide(raw, data[f"{y.spec} mean"], "y")  # a KL against β spans decades; a win rate does not
    raw.set_xlabel("β (log scale)")
    raw.set_ylabel(y.label)
    raw.set_title(f"{short_name(y)} against β")
    scaled.set_xlabel("β · f''(0)/|f'(0)|: weight of the offline regularizer (log scale)")
    scaled.set_title("against rescaled β: theory predicts the curves line up")
    handles, labels = raw.get_legend_handles_labels()
    notes = []
    if data["partial"].any():
        handles.append(Line2D([], [], ls="none", marker="o", color="0.3", markerfacecolor="white"))
        labels.append("running (partial)")
    kinds = err_kinds(data, [y])
    if kinds:
        notes.append("error bars:\n" + kinds.replace("; ", "\n"))
    if omitted:
        notes.append("not in the right panel\n(no second-order term in β·ρ):\n" + "\n".join(sorted(set(omitted))))
    for note in notes:
        handles.append(Line2D([], [], ls="none"))
        labels.append(note)
    figure.legend(handles, labels, title="loss", fontsize=8, loc="outside right upper")
    return figure


def _omission(loss: str, ratio: float) -> str:
    """Why a loss has no point in the rescaled panel."""
    if math.isnan(ratio):
        return f"{loss}: not f(β·ρ), no f''(0)" if loss in FIELD_LOSSES else f"{loss}: f unknown here"
    return f"{loss}: f''(0) = 0" if ratio == 0 else f"{loss}: f''(0)/|f'(0)| = {ratio:.3g} ≤ 0"


def _with_metrics(configs: pd.DataFrame, metrics: list[Metric]) -> pd.DataFrame:
    for metric in metrics:
        if configs.empty or f"{metric.spec} mean" not in configs or configs[f"{metric.spec} mean"].isna().all():
            raise MissingMetric(f"no completed or running job logged {metric.name}")
    columns = [f"{m.spec} mean" for m in metrics]
    return configs.dropna(subset=columns).reset_index(drop=True)


def _err(group: pd.DataFrame, metric: Metric) -> np.ndarray | None:
    column = f"{metric.spec} err"
    if column not in group or group[column].isna().all():
        return None
    return group[column].fillna(0).to_numpy()


def _point(ax: Axes, row: pd.Series, x: Metric, y: Metric, color: str, marker: str, size: float) -> None:
    xerr, yerr = row.get(f"{x.spec} err"), row.get(f"{y.spec} err")
    ax.errorbar(
        row[f"{x.spec} mean"],
        row[f"{y.spec} mean"],
        xerr=None if pd.isna(xerr) else xerr,
        yerr=None if pd.isna(yerr) else yerr,
        ls="none",
        marker=marker,
        ms=size,
        capsize=2,
        elinewidth=0.9,
        color=color,
        markerfacecolor="white" if row["partial"] else color,
        alpha=0.9,
        zorder=2,
    )


def _beta_sizes(data: pd.DataFrame) -> dict[float, float]:
    """Marker size by the rank of beta in the sweep, from 4 to 11 points."""
    betas = sorted(data["beta"].dropna().unique())
    if len(betas) < 2:
        return {beta: 6.0 for beta in betas}
    return {beta: 4.0 + 7.0 * i / (len(betas) - 1) for i, beta in enumerate(betas)}


def _lr_markers(data: pd.DataFrame) -> dict:
    lrs = sorted(data["lr"].dropna().unique())
    return {lr: MARKERS[i % len(MARKERS)] for i, lr in enumerate(lrs)} if len(lrs) > 1 else {}


def _key(ax: Axes, data: pd.DataFrame, lr_markers: dict, sizes: dict, metrics: list[Metric]):
    """Legend entries for what markers encode: beta (size), lr (shape), running jobs, error bars."""
    entries = [
        (Line2D([], [], ls="none", marker="o", ms=size, color="0.45"), f"β={beta:g}") for beta, size in sizes.items()
    ]
    entries += [(Line2D([], [], ls="none", marker=m, color="0.3"), f"lr={lr:g}") for lr, m in lr_markers.items()]
    if data["partial"].any():
        entries.append(
            (Line2D([], [], ls="none", marker="o", color="0.3", markerfacecolor="white"), "running (partial)")
        )
    kinds = err_kinds(data, metrics)
    if kinds:
        entries.append((Line2D([], [], ls="none"), "error bars:\n" + kinds.replace("; ", "\n")))
    return [h for h, _ in entries], [label for _, label in entries]
