"""The report's figures, one function each, drawn on plain matplotlib Figures.

Figures are built without pyplot, so they render with the Agg canvas in scripts and inline in
notebooks alike. Every figure colours a loss the same way. A figure that lacks the metric it
needs raises :class:`~gpo_lab.report.axes.MissingMetric` with the reason.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gpo_lab.losses import FIELD, MEMBERS, derivatives_of, resolve_function
from gpo_lab.report.aggregate import EVAL_SE, SEED_SD, pareto_frontier, regularization_ratio
from gpo_lab.report.axes import REGULARIZER, Metric, MissingMetric

PAPER_LOSSES = tuple(MEMBERS)  # the registry's order: the report's order and colours
_PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINESTYLES = ("-", "--", ":", "-.")


def loss_colors(losses: Iterable[str]) -> dict[str, str]:
    """A fixed colour per paper loss (the same in every figure and sweep), then the rest in turn."""
    colors = {name: _PALETTE[i] for i, name in enumerate(PAPER_LOSSES)}
    extra = iter(_PALETTE[len(PAPER_LOSSES) :] * 10)
    for loss in losses:
        if loss not in colors:
            colors[loss] = next(extra)
    return colors


def save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    return path


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
    _log_if_wide(ax, data[f"{x.spec} mean"], "x")
    ax.set_title(f"Trade-off: {_short(y)} against {_short(x)}; lines: each loss's frontier")
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
    styles = {lr: _LINESTYLES[i % len(_LINESTYLES)] for i, lr in enumerate(sorted(data["lr"].dropna().unique()))}
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
    _log_if_wide(raw, data[f"{y.spec} mean"], "y")  # a KL against β spans decades; a win rate does not
    raw.set_xlabel("β (log scale)")
    raw.set_ylabel(y.label)
    raw.set_title(f"{_short(y)} against β")
    scaled.set_xlabel("β · f''(0)/|f'(0)|: weight of the offline regularizer (log scale)")
    scaled.set_title("against rescaled β: theory predicts the curves line up")
    handles, labels = raw.get_legend_handles_labels()
    notes = []
    if data["partial"].any():
        handles.append(Line2D([], [], ls="none", marker="o", color="0.3", markerfacecolor="white"))
        labels.append("running (partial)")
    kinds = _err_kinds(data, [y])
    if kinds:
        notes.append("error bars:\n" + kinds.replace("; ", "\n"))
    if omitted:
        notes.append("not in the right panel\n(no second-order term in β·ρ):\n" + "\n".join(sorted(set(omitted))))
    for note in notes:
        handles.append(Line2D([], [], ls="none"))
        labels.append(note)
    figure.legend(handles, labels, title="loss", fontsize=8, loc="outside right upper")
    return figure


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
        style = _LINESTYLES[seen.get(loss, 0) % len(_LINESTYLES)]
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
        ax.set_ylabel(_wrap(metric.label))
        ax.grid(alpha=0.3)
        _log_if_wide(ax, pd.concat([f[metric.name] for _, f in histories.values() if metric.name in f]), "y")
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
    _log_if_wide(ax, pd.concat([rows[kl.name] for _, rows in lines.values()]), "x")
    _log_if_wide(ax, pd.concat([rows[reg] for _, rows in lines.values()]), "y")
    ax.set_xlabel(kl.label)
    ax.set_ylabel(Metric(reg).label)
    ax.set_title(
        f"Offline regularizer against KL over training, {len(lines)} jobs\n×: R_mu/KL moved by more than "
        f"{TRACKING_FACTOR:g}× from its start, in {departed})"
    )
    ax.grid(alpha=0.3, which="both")
    figure.legend(*ax.get_legend_handles_labels(), title="loss", fontsize=8, loc="outside right upper")
    return figure


def _omission(loss: str, ratio: float) -> str:
    """Why a loss has no point in the rescaled panel."""
    if math.isnan(ratio):
        return f"{loss}: not f(β·ρ), no f''(0)" if loss in FIELD else f"{loss}: f unknown here"
    return f"{loss}: f''(0) = 0" if ratio == 0 else f"{loss}: f''(0)/|f'(0)| = {ratio:.3g} ≤ 0"


def loss_functions(losses: Iterable[str] = PAPER_LOSSES) -> Figure:
    """The functions f, as they are and rescaled to f(0) = 0, f'(0) = -1.

    Rescaled, each f is -z + (f''(0)/|f'(0)|) z²/2 + ... near 0: the curvature at the origin is
    the weight of the offline regularizer the loss applies per unit of beta.
    """
    losses = list(dict.fromkeys(losses)) or list(PAPER_LOSSES)
    colors = loss_colors(losses)
    figure = Figure(figsize=(12, 5.4), layout="constrained")
    raw, scaled = figure.subplots(1, 2)
    z = torch.linspace(-3, 3, 601, dtype=torch.float64)
    for i, loss in enumerate(losses):
        try:
            _, f = resolve_function(loss)
            values = f(z).numpy()
        except Exception:  # a custom loss not importable here
            continue
        d = derivatives_of(loss)
        f0, d1 = d.f0, d.d1
        style = dict(color=colors[loss], ls=_LINESTYLES[i % 2], lw=1.8)
        raw.plot(z, values, label=loss, **style)
        ratio = regularization_ratio(loss)
        scaled.plot(z, (values - f0) / abs(d1), label=f"{loss}: f''(0)/|f'(0)| = {ratio:.3g}", **style)
    scaled.plot(z, -z, color="0.4", lw=1, ls=(0, (1, 2)), label="−z (first-order term)")
    raw.set_ylim(-0.2, 6)
    scaled.set_ylim(-3.2, 4)
    raw.set_xlabel("z = β·ρ")
    raw.set_ylabel("f(z)")
    raw.set_title("GPO loss functions f")
    scaled.set_xlabel("z = β·ρ")
    scaled.set_ylabel("(f(z) − f(0)) / |f'(0)|")
    scaled.set_title("rescaled: the curvature at 0 sets the offline regularization")
    for ax in (raw, scaled):
        ax.axvline(0, color="0.7", lw=0.8)
        ax.grid(alpha=0.3)
    figure.legend(*scaled.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=4)
    return figure


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
    return {lr: _MARKERS[i % len(_MARKERS)] for i, lr in enumerate(lrs)} if len(lrs) > 1 else {}


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
    kinds = _err_kinds(data, metrics)
    if kinds:
        entries.append((Line2D([], [], ls="none"), "error bars:\n" + kinds.replace("; ", "\n")))
    return [h for h, _ in entries], [label for _, label in entries]


def _err_kinds(data: pd.DataFrame, metrics: list[Metric]) -> str:
    kinds = set()
    for metric in metrics:
        if f"{metric.spec} err_kind" in data:
            kinds |= set(data[f"{metric.spec} err_kind"].dropna()) - {""}
    order = {SEED_SD: "±1 sd over seeds", EVAL_SE: "±1 evaluation SE (one seed)"}
    return "; ".join(order[k] for k in order if k in kinds)


def _log_if_wide(ax: Axes, values: pd.Series, axis: str) -> None:
    """Log scale when positive values span more than two decades, so small ones stay readable."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if len(values) and (values > 0).all() and values.max() / values.min() > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        label = ax.get_xlabel() if axis == "x" else ax.get_ylabel()
        if "log scale" not in label:
            (ax.set_xlabel if axis == "x" else ax.set_ylabel)(label + " (log scale)" if label else "(log scale)")


def _short(metric: Metric) -> str:
    return metric.spec.replace("val/", "")


def _wrap(text: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(text, width))
