"""Each loss's grid of the quality metric over beta, and its bootstrap over seeds and prompts.

Each replicate draws (a) every configuration's seed-to-seed variation, from the variance between
seeds pooled over the loss's grid (:func:`seed_variance`), and (b) the evaluation prompts: where
a job wrote its per-prompt scores (``per_prompt.jsonl``) the same resampled prompt indices serve
every job of the replicate (the held-out prompts are shared, so the comparison across betas and
losses is paired); elsewhere the job's value is drawn from N(value, se) with its logged standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gpo_lab.losses.catalog import GPO_MEMBERS
from gpo_lab.report.aggregate import first_number
from gpo_lab.report.axes import Metric
from gpo_lab.report.collect import COMPLETED
from gpo_lab.store.per_prompt import read_per_prompt

REPLICATES = 2000
SEED = 0
MATCH_TOLERANCE = 1e-6  # per-prompt scores must average to the logged value (relative, above 1)


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
    ratio: float = math.nan  # the loss's f''(0)/|f'(0)|, as its jobs recorded it

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
                scores = prompt_scores(row, metric, value, sign) if per_prompt else None
                cell.append(JobValue(str(row["job"]), float(row["_v"]), float(row["_se"]), scores))
            cells.append(cell)
        lr_value = float(lr) if pd.notna(lr) else math.nan
        out.append(Grid(str(loss), lr_value, betas, cells, first_number(group, "ratio")))
    order = {name: i for i, name in enumerate(GPO_MEMBERS)}
    out.sort(key=lambda g: (order.get(g.loss, len(order)), g.loss))
    return out, notes


def prompt_scores(row: pd.Series, metric: Metric, value: str, sign: float = 1.0) -> np.ndarray | None:
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
        extra = seed_variance(grid)
        columns = []
        for cell in grid.jobs:
            mean = np.stack([values[job.job] for job in cell], axis=1).mean(axis=1)  # the seeds' evaluation draws
            columns.append(mean + math.sqrt(extra / len(cell)) * rng.standard_normal(replicates))
        out[grid.loss] = np.stack(columns, axis=1)
    return out, how


def seed_variance(grid: Grid) -> float:
    """The variance between seeds beyond the evaluation's, pooled over the grid's configurations.

    With 2 seeds a configuration's own spread has one degree of freedom: resampling its seeds halves
    its variance on average and is often near 0, so intervals came out too narrow where training
    noise dominates. Pooled over the grid (one degree of freedom per configuration and extra seed),
    less the mean squared evaluation SE that each seed's value already carries (and the draws above add).
    """
    squares, dof, se2 = 0.0, 0, []
    for cell in grid.jobs:
        if len(cell) > 1:
            values = np.array([job.value for job in cell])
            squares += float(((values - values.mean()) ** 2).sum())
            dof += len(cell) - 1
            se2 += [job.se**2 for job in cell if math.isfinite(job.se)]
    if not dof:
        return 0.0
    return max(0.0, squares / dof - (float(np.mean(se2)) if se2 else 0.0))
