"""Where each loss's best beta lies, with its bootstrap interval.

On each loss's grid, the quality metric (mean over seeds) peaks at some beta; a quadratic in log
beta through the peak and its two neighbours gives the fitted best beta (its vertex, clamped to the
neighbours' range). A peak at the lowest or highest beta of the grid is an *edge*: the optimum may
lie outside the grid, so no beta shift is claimed for that loss. The fit is redone per bootstrap
replicate (:mod:`~gpo_lab.report.grids`); intervals are the 2.5% and 97.5% percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpo_lab.report.grids import REPLICATES, SEED, Grid, bootstrap_means

LEVEL = 0.95


def fit_peak(log_betas: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted best log beta of each row of ``values`` (replicates x betas), and where it lies.

    Returns ``(log_best, edge)``: ``edge`` is -1 where the row peaks at the lowest beta, +1 at the
    highest, 0 inside (then ``log_best`` is the vertex of the parabola in log beta through the peak
    and its neighbours, clamped to their range; the peak itself where the parabola is not concave).
    At an edge ``log_best`` is that edge. Rows must have no NaN; ``log_betas`` increase.
    """
    x = np.asarray(log_betas, dtype=float)
    y = np.atleast_2d(np.asarray(values, dtype=float))
    peak = np.argmax(y, axis=1)
    edge = np.where(peak == 0, -1, np.where(peak == len(x) - 1, 1, 0))
    best = x[peak].copy()
    inside = np.flatnonzero(edge == 0)
    if len(inside):
        k = peak[inside]
        x0, x1, x2 = x[k - 1], x[k], x[k + 1]
        rows = y[inside]
        y0, y1, y2 = (rows[np.arange(len(k)), k + d] for d in (-1, 0, 1))
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
        concave = a < 0
        vertex = np.where(concave, -b / (2 * np.where(concave, a, -1.0)), x1)
        best[inside] = np.clip(vertex, x0, x2)
    return best, edge


@dataclass
class BestBeta:
    loss: str
    lr: float
    betas: np.ndarray
    means: np.ndarray
    ratio: float  # f''(0)/|f'(0)|
    best: float  # fitted best beta (the grid's edge beta at an edge)
    grid_best: float  # the beta of the highest mean
    edge: int  # -1 lower edge, +1 upper edge, 0 inside
    seeds: int  # most seeds of any configuration
    low: float = math.nan
    high: float = math.nan
    edge_share: float = math.nan  # share of replicates that peak at an edge
    replicates: np.ndarray | None = field(default=None, repr=False)  # log best beta per replicate

    @property
    def note(self) -> str:
        if len(self.betas) < 3:
            count = len(self.betas)
            return f"only {count} β with a value: no fit; extend the grid; no β shift is claimed for this loss"
        if self.flat:
            return "the quality is the same at every β of the grid: no best β; no β shift is claimed for this loss"
        if self.edge < 0:
            return (
                f"best β at the grid's lower edge: extend the grid below {self.betas[0]:g}; "
                "no β shift is claimed for this loss"
            )
        if self.edge > 0:
            return (
                f"best β at the grid's upper edge: extend the grid above {self.betas[-1]:g}; "
                "no β shift is claimed for this loss"
            )
        if self.edge_share > 0.05:
            return f"{self.edge_share:.0%} of bootstrap replicates peak at an edge of the grid"
        return ""

    @property
    def flat(self) -> bool:
        return bool(np.ptp(self.means) == 0)

    @property
    def claimable(self) -> bool:
        return len(self.betas) >= 3 and self.edge == 0 and not self.flat


def best_betas(
    grid_list: Sequence[Grid], replicates: int = REPLICATES, seed: int = SEED, level: float = LEVEL
) -> tuple[list[BestBeta], str]:
    """Each loss's fitted best beta with its bootstrap interval (``replicates=0``: exact, no interval)."""
    boot, how = bootstrap_means(grid_list, replicates, seed) if replicates else ({}, "none")
    tail = 100 * (1 - level) / 2
    out = []
    for grid in grid_list:
        logs = np.log(grid.betas)
        ratio = grid.ratio
        seeds = max(len(cell) for cell in grid.jobs)
        if len(grid.betas) < 3:
            peak = float(grid.betas[int(np.argmax(grid.means))])
            out.append(BestBeta(grid.loss, grid.lr, grid.betas, grid.means, ratio, peak, peak, 0, seeds))
            continue
        point, edge = fit_peak(logs, grid.means)
        result = BestBeta(
            grid.loss,
            grid.lr,
            grid.betas,
            grid.means,
            ratio,
            float(np.exp(point[0])),
            float(grid.betas[int(np.argmax(grid.means))]),
            int(edge[0]),
            seeds,
        )
        if grid.loss in boot:
            draws, edges = fit_peak(logs, boot[grid.loss])
            result.low, result.high = (float(np.exp(q)) for q in np.percentile(draws, [tail, 100 - tail]))
            result.edge_share = float(np.mean(edges != 0))
            result.replicates = draws
        out.append(result)
    return out, how
