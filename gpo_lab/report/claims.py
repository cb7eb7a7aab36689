"""The paper's two claims, judged on a sweep: where each loss's best beta lies, with an interval
(:mod:`~gpo_lab.report.peak_fit`, on the grids and bootstrap of :mod:`~gpo_lab.report.grids`), how
the best betas of the two f''(0)/|f'(0)| groups compare with theory (:mod:`~gpo_lab.report.beta_ratio`),
and whether the losses' win-rate-against-KL frontiers are alike (:mod:`~gpo_lab.report.frontier_test`, a
bootstrap test with simultaneous bands on the arrays of :func:`~gpo_lab.report.frontier_gap.design`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gpo_lab.report.axes import Metric
from gpo_lab.report.beta_ratio import BetaRatio, beta_ratio
from gpo_lab.report.frontier_gap import design
from gpo_lab.report.frontier_test import MARGIN, Design, FrontierTest, frontier_test
from gpo_lab.report.grids import REPLICATES, SEED, Grid, JobValue, grids
from gpo_lab.report.loss_shapes import member_ratio
from gpo_lab.report.peak_fit import LEVEL, BestBeta, best_betas


@dataclass
class Claims:
    bests: list[BestBeta]
    ratio: BetaRatio | None
    frontier: FrontierTest | None  # claim 1's test (None: no two frontiers share a KL range, or no KL)
    bootstrap: str  # how the prompt bootstrap drew
    replicates: int
    notes: list[str] = field(default_factory=list)
    level: float = LEVEL
    design: Design | None = field(default=None, repr=False)  # what claim 1's test read (for --calibrate)


def judge(
    jobs: pd.DataFrame,
    y: Metric | None,
    x: Metric | None,
    value: str = "final",
    replicates: int = REPLICATES,
    seed: int = SEED,
    margin: float = MARGIN,
) -> Claims | None:
    """Every claim the sweep can judge (None without a quality metric); ``margin``: claim 1's, in the
    quality's units."""
    if y is None:
        return None
    grid_list, notes = grids(jobs, y, value)
    bests, how = best_betas(grid_list, replicates, seed)
    arrays = design(jobs, x, y, value) if x is not None else None
    test = frontier_test(arrays, margin=margin, seed=seed) if arrays is not None else None
    return Claims(bests, beta_ratio(bests), test, how, replicates, notes, design=arrays)


def exact_claims(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], ratios: Mapping[str, float] | None = None
) -> Claims:
    """The same claims on exact values (the bandit study): loss -> (betas, quality); no interval.

    ``ratios``: each loss's f''(0)/|f'(0)| (default: the GPO members' closed forms).
    """
    grid_list = []
    for loss, (betas, values) in curves.items():
        order = np.argsort(np.asarray(betas, dtype=float))
        b, v = np.asarray(betas, dtype=float)[order], np.asarray(values, dtype=float)[order]
        cells = [[JobValue(f"{loss}@{x}", float(y), math.nan)] for x, y in zip(b, v)]
        ratio = ratios[loss] if ratios is not None and loss in ratios else member_ratio(loss)
        grid_list.append(Grid(loss, math.nan, b, cells, ratio))
    bests, _ = best_betas(grid_list, replicates=0)
    return Claims(bests, beta_ratio(bests), None, "exact values", 0)
