"""What every figure of the report shares: a fixed colour per loss, line styles and markers, log
axes where values span decades, axis text, and how a figure is saved.

Figures are built without pyplot, so they render with the Agg canvas in scripts and inline in
notebooks alike.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gpo_lab.losses.catalog import GPO_MEMBERS
from gpo_lab.report.aggregate import EVAL_SE, SEED_SD
from gpo_lab.report.axes import Metric

PALETTE = (
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
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")


def loss_colors(losses: Iterable[str]) -> dict[str, str]:
    """A fixed colour per GPO member (the same in every figure and sweep), then the rest in turn."""
    colors = {name: PALETTE[i] for i, name in enumerate(GPO_MEMBERS)}
    extra = iter(PALETTE[len(GPO_MEMBERS) :] * 10)
    for loss in losses:
        if loss not in colors:
            colors[loss] = next(extra)
    return colors


def save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    return path


def err_kinds(data: pd.DataFrame, metrics: list[Metric]) -> str:
    kinds = set()
    for metric in metrics:
        if f"{metric.spec} err_kind" in data:
            kinds |= set(data[f"{metric.spec} err_kind"].dropna()) - {""}
    order = {SEED_SD: "±1 sd over seeds", EVAL_SE: "±1 evaluation SE (one seed)"}
    return "; ".join(order[k] for k in order if k in kinds)


def log_if_wide(ax: Axes, values: pd.Series, axis: str) -> None:
    """Log scale when positive values span more than two decades, so small ones stay readable."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if len(values) and (values > 0).all() and values.max() / values.min() > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        label = ax.get_xlabel() if axis == "x" else ax.get_ylabel()
        if "log scale" not in label:
            (ax.set_xlabel if axis == "x" else ax.set_ylabel)(label + " (log scale)" if label else "(log scale)")


def short_name(metric: Metric) -> str:
    return metric.spec.replace("val/", "")


def wrap(text: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(text, width))
