"""The losses' quality-against-KL frontiers from a sweep's jobs: as points with standard errors (the
largest pairwise gap, descriptive) and as the arrays claim 1's test resamples (:func:`design`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gpo_lab.losses.catalog import GPO_MEMBERS
from gpo_lab.report.aggregate import pareto_frontier
from gpo_lab.report.axes import Metric
from gpo_lab.report.collect import COMPLETED
from gpo_lab.report.frontier_test import Design
from gpo_lab.report.grids import prompt_scores


@dataclass
class Frontier:
    loss: str
    kl: np.ndarray
    quality: np.ndarray
    se: np.ndarray  # standard error of each point's mean


@dataclass
class FrontierGap:
    """The largest gap, in standard errors, between two losses' interpolated frontiers."""

    higher: str  # the loss whose frontier is higher there
    lower: str
    kl: float
    gap: float  # higher minus lower, in quality units
    se: float  # sqrt(se_higher^2 + se_lower^2) there
    pairs: int  # pairs of losses with a common KL range
    skipped: list[str] = field(default_factory=list)  # pairs without one

    @property
    def z(self) -> float:
        return self.gap / self.se if self.se > 0 else math.inf


def frontiers(jobs: pd.DataFrame, x: Metric, y: Metric, value: str = "final") -> list[Frontier]:
    """Each loss's frontier of completed configurations (mean KL, mean quality), with the quality's SE.

    The SE of a configuration's mean over n seeds is the larger of sd/sqrt(n) (over seeds, n > 1)
    and the root mean square of its jobs' evaluation SEs over sqrt(n): two seeds that agree by
    chance do not make a point more precise than its evaluation.
    """
    done = jobs[jobs["status"] == COMPLETED].copy()
    done["_x"], done["_y"], done["_s"] = x.values(done, value), y.values(done, value), y.standard_errors(done, value)
    done = done[done["_x"].notna() & done["_y"].notna() & done["loss"].notna()]
    out = []
    for loss, group in done.groupby("loss", sort=False):
        cells = group.groupby("config")
        n = cells["_y"].count().to_numpy(dtype=float)
        sd = cells["_y"].std(ddof=1).fillna(0.0).to_numpy()
        rms = cells["_s"].apply(lambda s: float(np.sqrt(np.mean(np.square(s.dropna())))) if s.notna().any() else 0.0)
        se = np.maximum(sd / np.sqrt(n), rms.to_numpy() / np.sqrt(n))
        kl, quality = cells["_x"].mean().to_numpy(), cells["_y"].mean().to_numpy()
        keep = pareto_frontier(kl, quality, y.higher_is_better)
        out.append(Frontier(str(loss), kl[keep], quality[keep], se[keep]))
    order = {name: i for i, name in enumerate(GPO_MEMBERS)}
    out.sort(key=lambda f: (order.get(f.loss, len(order)), f.loss))
    return out


def frontier_gap(fronts: Sequence[Frontier]) -> FrontierGap | None:
    """Over every pair of losses, on their common KL range, the largest |difference| of the linearly
    interpolated frontiers over its standard error (at the frontiers' points, where it peaks for
    the difference); None when no pair shares a KL range."""
    best: FrontierGap | None = None
    pairs, skipped = 0, []
    for i, a in enumerate(fronts):
        for b in fronts[i + 1 :]:
            lo, hi = max(a.kl[0], b.kl[0]), min(a.kl[-1], b.kl[-1])
            if lo > hi:
                skipped.append(f"{a.loss}–{b.loss}")
                continue
            pairs += 1
            knots = np.unique(np.concatenate([a.kl, b.kl, [lo, hi]]))
            knots = knots[(knots >= lo) & (knots <= hi)]
            ya, yb = np.interp(knots, a.kl, a.quality), np.interp(knots, b.kl, b.quality)
            se = np.sqrt(np.interp(knots, a.kl, a.se) ** 2 + np.interp(knots, b.kl, b.se) ** 2)
            z = np.abs(ya - yb) / np.where(se > 0, se, np.nan)
            z = np.where(np.isnan(z), np.where(ya != yb, np.inf, 0.0), z)
            k = int(np.argmax(z))
            higher, lower = (a, b) if ya[k] >= yb[k] else (b, a)
            gap = float(abs(ya[k] - yb[k]))
            candidate = FrontierGap(higher.loss, lower.loss, float(knots[k]), gap, float(se[k]), 0)
            if best is None or candidate.z > best.z:
                best = candidate
    if best is not None:
        best.pairs, best.skipped = pairs, skipped
    return best


def design(jobs: pd.DataFrame, x: Metric, y: Metric, value: str = "final") -> Design | None:
    """The completed jobs with a KL and a quality as claim 1's test reads them (quality signed so that
    higher is better; per-prompt scores where written and consistent with the logged value)."""
    done = jobs[jobs["status"] == COMPLETED].copy()
    sign = 1.0 if y.higher_is_better else -1.0
    done["_x"], done["_v"], done["_s"] = (
        x.values(done, value),
        sign * y.values(done, value),
        y.standard_errors(done, value),
    )
    done = done[done["_x"].notna() & done["_v"].notna() & done["loss"].notna()]
    if done.empty:
        return None
    order = {name: i for i, name in enumerate(GPO_MEMBERS)}
    losses = sorted({str(v) for v in done["loss"]}, key=lambda name: (order.get(name, len(order)), name))
    configs = list(dict.fromkeys(zip(done["loss"].astype(str), done["config"])))
    index = {c: i for i, c in enumerate(configs)}
    rows = [prompt_scores(row, y, value, sign) for _, row in done.iterrows()]
    lengths = [len(r) for r in rows if r is not None]
    prompts = max(set(lengths), key=lengths.count) if lengths else 0
    scores = np.full((len(done), prompts), np.nan)
    for i, r in enumerate(rows):
        if r is not None and len(r) == prompts:
            scores[i] = r
    return Design(
        losses,
        np.array([losses.index(loss) for loss, _ in configs]),
        np.array([index[(str(loss), c)] for loss, c in zip(done["loss"], done["config"])]),
        done["_x"].to_numpy(dtype=float),
        done["_v"].to_numpy(dtype=float),
        done["_s"].to_numpy(dtype=float),
        scores,
    )
