"""Claim 2: the best beta of every f(beta * rho) loss against its f''(0)/|f'(0)|, and the ratio of the
paper's two groups, each against theory's.

Theory (docs/theory.md): equal regularization at equal beta * f''(0)/|f'(0)|, so the best beta of a
loss with ratio r_1 over one with ratio r_2 is r_2 / r_1 (2 for logistic and savage, 1/2, against
squared, exponential and truncated quadratic, 1). Within each group the best betas are combined by
their geometric mean, per replicate. Where the sweep holds both paper groups, they are the two compared;
every other loss with a positive ratio enters the slope fit below (:func:`theory_line`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpo_lab.report.loss_shapes import why_no_ratio
from gpo_lab.report.peak_fit import LEVEL, BestBeta

PAPER_GROUPS = (0.5, 1.0)  # the paper's two groups of f''(0)/|f'(0)|: logistic and savage; squared, exponential, TQ


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
            excluded[best.loss] = (
                "f''(0) = 0: no second-order term, no theory for its β"
                if best.ratio == 0
                else f"f''(0)/|f'(0)| = {best.ratio:.3g} < 0: no offline regularizer, no theory for its β"
            )
        else:
            by_ratio.setdefault(round(best.ratio, 9), []).append(best)
    if len(by_ratio) < 2:
        return None
    paper = all(r in by_ratio for r in PAPER_GROUPS)
    low_ratio, high_ratio = PAPER_GROUPS if paper else (min(by_ratio), max(by_ratio))
    for r, members in by_ratio.items():
        if r not in (low_ratio, high_ratio):
            excluded.update({b.loss: f"f''(0)/|f'(0)| = {r:g}: in the slope fit, in neither group" for b in members})
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


THEORY_SLOPE = -1.0


@dataclass
class OnLine:
    """One loss on the log-log plot of best beta against f''(0)/|f'(0)|, and its distance from theory's line."""

    loss: str
    ratio: float
    best: float
    low: float
    high: float
    distance: float  # log(best beta * ratio) minus the line's, natural log units (+: above the line)
    distance_low: float = math.nan
    distance_high: float = math.nan

    @property
    def widths(self) -> float:
        """The distance in half-widths of its own interval: beyond 1, the interval excludes the line."""
        half = (self.distance_high - self.distance_low) / 2
        return self.distance / half if half > 0 else math.nan

    @property
    def off(self) -> bool:
        return not (self.distance_low <= 0 <= self.distance_high)


@dataclass
class TheoryLine:
    """The least-squares slope of log best beta on log f''(0)/|f'(0)|, theory's line, and the verdict."""

    losses: list[OnLine]
    slope: float = math.nan
    slope_low: float = math.nan
    slope_high: float = math.nan
    anchor: float = math.nan  # log of the median best beta * ratio: theory's line is log beta = anchor - log ratio
    left_out: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    level: float = LEVEL

    @property
    def off_line(self) -> list[OnLine]:
        return [p for p in self.losses if p.off]

    @property
    def verdict(self) -> str:
        """inconsistent: the slope excludes -1 or a loss leaves the line; consistent: the slope holds -1 and
        excludes 0 (the sweep resolves the shift) and no loss leaves; inconclusive otherwise."""
        if self.problem is not None or not math.isfinite(self.slope_low):
            return "inconclusive"
        if not self.slope_low <= THEORY_SLOPE <= self.slope_high or self.off_line:
            return "inconsistent"
        return "consistent" if self.slope_high < 0 else "inconclusive"


def theory_line(bests: Sequence[BestBeta], level: float = LEVEL) -> TheoryLine:
    """Fit log best beta = a + slope * log(f''(0)/|f'(0)|) over every claimable loss with a positive ratio.

    The slope's interval is the percentile interval of the fit redone on each bootstrap replicate of
    the best betas (seeds and shared prompts drawn once for every loss, so their correlation is kept,
    and the clamped, skewed best betas need no normal approximation). A loss's distance is from
    theory's line through the median of log(best beta * ratio) (one loss far off does not drag the
    line, and the others with it); its interval is at level 1 - (1 - level)/k over the k losses
    (Bonferroni), so that naming any loss as off the line is a false alarm at most 1 - level of the time.
    """
    left_out: dict[str, str] = {}
    members = []
    for b in bests:
        if not math.isfinite(b.ratio):
            left_out[b.loss] = why_no_ratio(b.loss)
        elif b.ratio <= 0:
            left_out[b.loss] = "f''(0) ≤ 0: no second-order regularizer, no theory for its β"
        elif not b.claimable:
            left_out[b.loss] = "no best β inside its grid"
        else:
            members.append(b)
    line = TheoryLine([], left_out=left_out, level=level)
    if len({round(b.ratio, 9) for b in members}) < 2:
        line.problem = "fewer than two values of f''(0)/|f'(0)| with a best β inside the grid"
    if not members:
        return line
    x = np.log([b.ratio for b in members])
    y = np.log([b.best for b in members])
    line.anchor = float(np.median(y + x))
    distance = y + x - line.anchor
    line.losses = [OnLine(b.loss, b.ratio, b.best, b.low, b.high, float(d)) for b, d in zip(members, distance)]
    if line.problem is None:
        line.slope = float(least_squares_slope(x, y[None, :])[0])
    if any(b.replicates is None for b in members):
        return line
    draws = np.stack([b.replicates for b in members], axis=1)  # replicates x losses, log best beta
    tail = 100 * (1 - level) / 2
    if line.problem is None:
        line.slope_low, line.slope_high = (
            float(q) for q in np.percentile(least_squares_slope(x, draws), [tail, 100 - tail])
        )
    off = draws + x - np.median(draws + x, axis=1, keepdims=True)
    wide = tail / len(members)
    for point, column in zip(line.losses, off.T):
        point.distance_low, point.distance_high = (float(q) for q in np.percentile(column, [wide, 100 - wide]))
    return line


def least_squares_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least-squares slope of each row of ``y`` on ``x``: sum (x - x̄)(y - ȳ) / sum (x - x̄)²."""
    centered = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ centered / float(centered @ centered)


def claim_two_record(bests: Sequence[BestBeta], level: float = LEVEL) -> dict[str, Any]:
    """Claim 2 as claims.json holds it: the verdict, the paper groups' ratio, the slope, and every loss."""
    line, ratio = theory_line(bests, level), beta_ratio(bests, level)
    judged = ratio is not None and ratio.judged
    losses: dict[str, dict[str, Any]] = {}
    fitted = {p.loss: p for p in line.losses}
    for b in bests:
        entry = {"best_beta": _num(b.best) if b.claimable else None, "interval": _pair(b.low, b.high)}
        entry["ratio"] = _num(b.ratio)
        point = fitted.get(b.loss)
        entry["distance"] = _num(point.distance) if point else None
        if point:
            entry.update(distance_interval=_pair(point.distance_low, point.distance_high), off_line=point.off)
        else:
            entry["left_out"] = line.left_out.get(b.loss, b.note)
        losses[b.loss] = entry
    return {
        "verdict": line.verdict,
        "ratio": _num(ratio.measured) if judged else None,
        "interval": _pair(ratio.low, ratio.high) if judged else None,
        "theory": ratio.theory if ratio is not None else 2.0,
        "groups": [ratio.low_group[0], ratio.high_group[0]] if ratio is not None else list(PAPER_GROUPS),
        "slope": _num(line.slope),
        "slope_interval": _pair(line.slope_low, line.slope_high),
        "theory_slope": THEORY_SLOPE,
        "level": level,
        "off_line": [p.loss for p in line.off_line],
        "problem": line.problem,
        "losses": losses,
    }


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pair(low: float, high: float) -> list[float] | None:
    return [float(low), float(high)] if math.isfinite(low) and math.isfinite(high) else None
