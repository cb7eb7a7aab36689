"""The ratio of best betas between the two f''(0)/|f'(0)| groups, against theory's.

Theory (docs/theory.md): equal regularization at equal beta * f''(0)/|f'(0)|, so the best beta of a
loss with ratio r_1 over one with ratio r_2 is r_2 / r_1 (2 for logistic and savage, 1/2, against
squared, exponential and truncated quadratic, 1). Within each group the best betas are combined by
their geometric mean, per replicate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpo_lab.report.loss_shapes import why_no_ratio
from gpo_lab.report.peak_fit import LEVEL, BestBeta


@dataclass
class BetaRatio:
    """Best beta of the low-ratio group over that of the high-ratio group, against theory."""

    low_group: tuple[float, list[str]]  # (f''(0)/|f'(0)|, losses)
    high_group: tuple[float, list[str]]
    theory: float
    measured: float = math.nan
    low: float = math.nan
    high: float = math.nan
    excluded: dict[str, str] = field(default_factory=dict)  # loss -> why it is not in a group
    problem: str | None = None  # why no ratio is claimed

    @property
    def judged(self) -> bool:
        return self.problem is None and math.isfinite(self.measured)

    @property
    def contains_theory(self) -> bool | None:
        if not self.judged or not math.isfinite(self.low):
            return None
        return self.low <= self.theory <= self.high


def beta_ratio(bests: Sequence[BestBeta], level: float = LEVEL) -> BetaRatio | None:
    """The measured ratio of best betas between the two f''(0)/|f'(0)| groups, or None with fewer than two groups."""
    excluded: dict[str, str] = {}
    by_ratio: dict[float, list[BestBeta]] = {}
    for best in bests:
        if not math.isfinite(best.ratio):
            excluded[best.loss] = why_no_ratio(best.loss)
        elif best.ratio <= 0:
            excluded[best.loss] = "f''(0) = 0: no second-order term, no theory for its β"
        else:
            by_ratio.setdefault(round(best.ratio, 9), []).append(best)
    if len(by_ratio) < 2:
        return None
    low_ratio, high_ratio = min(by_ratio), max(by_ratio)
    for r, members in by_ratio.items():
        if r not in (low_ratio, high_ratio):
            excluded.update({b.loss: f"f''(0)/|f'(0)| = {r:g}, neither group" for b in members})
    groups = {}
    for r in (low_ratio, high_ratio):
        for b in by_ratio[r]:
            if not b.claimable:
                excluded[b.loss] = "best β at an edge of the grid"
                if len(b.betas) < 3 or b.flat:
                    excluded[b.loss] = "fewer than 3 β" if len(b.betas) < 3 else "flat: no best β"
        groups[r] = [b for b in by_ratio[r] if b.claimable]
    result = BetaRatio(
        (low_ratio, [b.loss for b in by_ratio[low_ratio]]),
        (high_ratio, [b.loss for b in by_ratio[high_ratio]]),
        theory=high_ratio / low_ratio,
        excluded=excluded,
    )
    empty = [r for r in (low_ratio, high_ratio) if not groups[r]]
    if empty:
        edges = [b.loss for r in empty for b in by_ratio[r]]
        result.problem = f"best β at an edge of the grid, or no fit, for {', '.join(edges)}"
        return result
    result.low_group = (low_ratio, [b.loss for b in groups[low_ratio]])
    result.high_group = (high_ratio, [b.loss for b in groups[high_ratio]])

    def log_geomean(members: list[BestBeta], draws: bool) -> np.ndarray:
        if draws:
            return np.mean([b.replicates for b in members if b.replicates is not None], axis=0)
        return np.array([np.mean([math.log(b.best) for b in members])])

    result.measured = float(np.exp(log_geomean(groups[low_ratio], False) - log_geomean(groups[high_ratio], False))[0])
    if all(b.replicates is not None for r in groups for b in groups[r]):
        logs = log_geomean(groups[low_ratio], True) - log_geomean(groups[high_ratio], True)
        tail = 100 * (1 - level) / 2
        result.low, result.high = (float(np.exp(q)) for q in np.percentile(logs, [tail, 100 - tail]))
    return result
