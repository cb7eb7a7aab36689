"""The paper's two claims, judged on a sweep: where each loss's best beta lies, with an interval,
how the best betas of the two f''(0)/|f'(0)| groups compare with theory, and how far apart the
losses' win-rate-against-KL frontiers are.

Best beta. On each loss's grid, the quality metric (mean over seeds) peaks at some beta; a
quadratic in log beta through the peak and its two neighbours gives the fitted best beta (its
vertex, clamped to the neighbours' range). A peak at the lowest or highest beta of the grid is an
*edge*: the optimum may lie outside the grid, so no beta shift is claimed for that loss.

Bootstrap. Each replicate resamples (a) the seeds of every configuration, with replacement, and
(b) the evaluation prompts: where a job wrote its per-prompt scores (``per_prompt.jsonl``) the
same resampled prompt indices serve every job of the replicate (the held-out prompts are shared,
so the comparison across betas and losses is paired); elsewhere the job's value is drawn from
N(value, se) with its logged standard error. The fit is redone per replicate; intervals are the
2.5% and 97.5% percentiles.

Ratio. Theory (docs/theory.md): equal regularization at equal beta * f''(0)/|f'(0)|, so the best
beta of a loss with ratio r_1 over one with ratio r_2 is r_2 / r_1 (2 for logistic and savage,
1/2, against squared, exponential and truncated quadratic, 1). Within each group the best betas are
combined by their geometric mean, per replicate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gpo_lab.losses import FIELD
from gpo_lab.report.aggregate import pareto_frontier, regularization_ratio
from gpo_lab.report.axes import Metric
from gpo_lab.report.collect import COMPLETED
from gpo_lab.store.per_prompt import read_per_prompt

REPLICATES = 2000
SEED = 0
LEVEL = 0.95
OVERLAP_SE = 2.0  # frontiers within this many standard errors "overlap"
MATCH_TOLERANCE = 1e-6  # per-prompt scores must average to the logged value (relative, above 1)


# ---------------------------------------------------------------------------- the fit


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


# ---------------------------------------------------------------------------- inputs


@dataclass
class JobValue:
    """One job's value of the quality metric, with what the prompt bootstrap draws from."""

    job: str
    value: float
    se: float  # the evaluation's standard error (NaN when not logged)
    scores: np.ndarray | None = None  # per-prompt values that average to ``value``


@dataclass
class Grid:
    """One loss's configurations (at one lr), by increasing beta, each with its seeds' jobs."""

    loss: str
    lr: float
    betas: np.ndarray
    jobs: list[list[JobValue]]

    @property
    def means(self) -> np.ndarray:
        return np.array([np.mean([j.value for j in jobs]) for jobs in self.jobs])


def grids(
    jobs: pd.DataFrame, metric: Metric, value: str = "final", per_prompt: bool = True
) -> tuple[list[Grid], list[str]]:
    """Each loss's grid of completed jobs with a value; where a loss ran several lr, the lr of its
    best configuration. Returns the grids and notes on what was left out or substituted."""
    notes: list[str] = []
    sign = 1.0 if metric.higher_is_better else -1.0  # the fit looks for a maximum
    done = jobs[jobs["status"] == COMPLETED].copy()
    done["_v"] = sign * metric.values(done, value)
    done["_se"] = metric.standard_errors(done, value)
    done = done[done["_v"].notna() & done["loss"].notna() & done["beta"].notna()]
    out = []
    for loss, group in done.groupby("loss", sort=False):
        means = group.groupby(["lr", "beta"], dropna=False)["_v"].mean()
        lr, _ = means.idxmax()
        if group["lr"].nunique() > 1:
            notes.append(f"{loss} ran several learning rates; its best β is judged at lr={lr:g}, its best one.")
        group = group[(group["lr"] == lr) | (group["lr"].isna() & pd.isna(lr))]
        betas = np.array(sorted(group["beta"].unique()), dtype=float)
        cells = []
        for beta in betas:
            cell = []
            for _, row in group[group["beta"] == beta].iterrows():
                scores = _scores(row, metric, value, sign) if per_prompt else None
                cell.append(JobValue(str(row["job"]), float(row["_v"]), float(row["_se"]), scores))
            cells.append(cell)
        out.append(Grid(str(loss), float(lr) if pd.notna(lr) else math.nan, betas, cells))
    order = {name: i for i, name in enumerate(_loss_order())}
    out.sort(key=lambda g: (order.get(g.loss, len(order)), g.loss))
    return out, notes


def _loss_order() -> list[str]:
    from gpo_lab.losses import MEMBERS

    return list(MEMBERS)


def _scores(row: pd.Series, metric: Metric, value: str, sign: float = 1.0) -> np.ndarray | None:
    """The job's per-prompt values at the step of its value, if written and consistent with it."""
    path = row.get("path")
    if not isinstance(path, str) or not Path(path).is_dir():
        return None
    try:
        steps = read_per_prompt(path)
    except OSError:
        return None
    name = metric.name.removeprefix("val/")
    at = [s for s, values in steps.items() if name in values]
    if not at:
        return None
    step = row.get(f"best_step/{metric.name}") if value == "best" else max(at)
    if step not in steps or name not in steps[step]:
        return None
    raw = steps[step][name]
    if any(v is None for v in raw) or len(raw) < 2:
        return None
    scores = np.asarray(raw, dtype=float) * (-1.0 if metric.negate else 1.0) * sign
    logged = float(row["_v"])  # logged through float32: agree to a relative 1e-6
    return scores if abs(scores.mean() - logged) <= MATCH_TOLERANCE * max(1.0, abs(logged)) else None


# ---------------------------------------------------------------------------- bootstrap


def bootstrap_means(
    grid_list: Sequence[Grid], replicates: int = REPLICATES, seed: int = SEED
) -> tuple[dict[str, np.ndarray], str]:
    """Per loss, a (replicates x betas) array of resampled configuration means; and how prompts were drawn.

    All grids share one draw of prompt indices (by counts, so a replicate's value of a job is a
    weighted mean of its scores: one matrix product for the whole sweep).
    """
    rng = np.random.default_rng(seed)
    every = [job for grid in grid_list for cell in grid.jobs for job in cell]
    lengths = {len(job.scores) for job in every if job.scores is not None}
    prompts = max(lengths, key=lambda n: sum(j.scores is not None and len(j.scores) == n for j in every), default=0)
    values: dict[str, np.ndarray] = {}
    paired = [job for job in every if job.scores is not None and len(job.scores) == prompts]
    if paired:
        counts = rng.multinomial(prompts, np.full(prompts, 1.0 / prompts), size=replicates).astype(float)
        resampled = counts @ np.stack([job.scores for job in paired if job.scores is not None], axis=1) / prompts
        values.update({job.job: resampled[:, i] for i, job in enumerate(paired)})
    parametric = [job for job in every if job.job not in values]
    for job in parametric:
        se = job.se if math.isfinite(job.se) else 0.0
        values[job.job] = job.value + se * rng.standard_normal(replicates)
    if not paired:
        how = "parametric: N(value, se) per job"
    elif parametric:
        how = f"per-prompt scores (paired, {prompts} prompts) for {len(paired)} jobs, N(value, se) for the rest"
    else:
        how = f"per-prompt scores (paired, {prompts} prompts)"
    out = {}
    for grid in grid_list:
        columns = []
        for cell in grid.jobs:
            stacked = np.stack([values[job.job] for job in cell], axis=1)  # replicates x seeds
            pick = rng.integers(0, len(cell), size=stacked.shape)
            columns.append(np.take_along_axis(stacked, pick, axis=1).mean(axis=1))
        out[grid.loss] = np.stack(columns, axis=1)
    return out, how


# ---------------------------------------------------------------------------- results


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
        ratio = regularization_ratio(grid.loss)
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
            excluded[best.loss] = "not f(β·ρ): no f''(0)" if best.loss in FIELD else "f''(0) unknown here"
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


# ---------------------------------------------------------------------------- frontiers


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
    order = {name: i for i, name in enumerate(_loss_order())}
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


# ---------------------------------------------------------------------------- everything


@dataclass
class Claims:
    bests: list[BestBeta]
    ratio: BetaRatio | None
    gap: FrontierGap | None
    bootstrap: str  # how the prompt bootstrap drew
    replicates: int
    notes: list[str] = field(default_factory=list)
    overlap_se: float = OVERLAP_SE
    level: float = LEVEL


def judge(
    jobs: pd.DataFrame,
    y: Metric | None,
    x: Metric | None,
    value: str = "final",
    replicates: int = REPLICATES,
    seed: int = SEED,
) -> Claims | None:
    """Every claim the sweep can judge (None without a quality metric)."""
    if y is None:
        return None
    grid_list, notes = grids(jobs, y, value)
    bests, how = best_betas(grid_list, replicates, seed)
    gap = frontier_gap(frontiers(jobs, x, y, value)) if x is not None else None
    return Claims(bests, beta_ratio(bests), gap, how, replicates, notes)


def exact_claims(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Claims:
    """The same claims on exact values (the bandit study): loss -> (betas, quality); no interval."""
    grid_list = []
    for loss, (betas, values) in curves.items():
        order = np.argsort(np.asarray(betas, dtype=float))
        b, v = np.asarray(betas, dtype=float)[order], np.asarray(values, dtype=float)[order]
        grid_list.append(Grid(loss, math.nan, b, [[JobValue(f"{loss}@{x}", float(y), math.nan)] for x, y in zip(b, v)]))
    bests, _ = best_betas(grid_list, replicates=0)
    return Claims(bests, beta_ratio(bests), None, "exact values", 0)
