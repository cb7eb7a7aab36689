"""Online against offline pairs at matched KL (Tang et al. 2024), per loss, from a sweep that has both.

A job's mode is its config's ``pairs.online``. For each loss the two modes' frontiers (quality against
KL, configurations averaged over seeds) are compared on their common KL range: the gap is the mean of
online minus offline over points evenly spaced in log KL there; and over KL budgets up to the longer
frontier's end (the best quality each mode reached within the budget). Its interval comes from claim 1's
bootstrap (:mod:`~gpo_lab.report.frontier_test`): each replicate resamples the evaluation prompts (one
draw shared by every job) and adds each configuration's seed-to-seed noise (t-scaled), then redoes the
means, the frontiers and the gap. The ranking accuracy (``val/ranking_accuracy``: the implicit reward
orders held-out pairs as the golden reward does) is compared on the same jobs, online minus offline
paired by (beta, seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from gpo_lab.report.axes import Metric
from gpo_lab.report.collect import COMPLETED
from gpo_lab.report.figure_style import loss_colors
from gpo_lab.report.frontier_gap import design
from gpo_lab.report.frontier_test import (
    Design,
    _config_means,
    _frontier_at,
    _frontier_points,
    _log_kl,
    resample,
    seed_noise,
)

MODES = ("offline", "online")
MODE = "mode"  # the column this module adds to a sweep's jobs
RANKING = "val/ranking_accuracy"
LEVEL = 0.95
REPLICATES = 1000
POINTS = 25  # KL points of the common range the gap is averaged over
SEED = 0


def job_mode(path: str | Path, job: str) -> str:
    """``online`` when the job's saved config sets ``pairs.online`` (or its name does), else ``offline``."""
    try:
        config = yaml.safe_load((Path(path) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        config = None
    if isinstance(config, dict):
        pairs = config.get("pairs")
        return "online" if isinstance(pairs, dict) and pairs.get("online") else "offline"
    return "online" if "pairs.online=true" in job.lower() else "offline"


def with_modes(jobs: pd.DataFrame) -> pd.DataFrame:
    out = jobs.copy()
    out[MODE] = [job_mode(path, job) for path, job in zip(out["path"], out["job"])]
    return out


def has_both_modes(jobs: pd.DataFrame) -> bool:
    return set(with_modes(jobs)[MODE]) == set(MODES)


@dataclass
class ModeGap:
    """One loss: the online-minus-offline gap in quality at matched KL, and the ranking accuracies."""

    loss: str
    gap: float  # mean over the common KL range, quality units (NaN: no common range)
    interval: tuple[float, float]
    kl_range: tuple[float, float]  # the common KL range of the two frontiers
    ranking: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # mode -> (mean, se, jobs)
    ranking_gap: tuple[float, float, float, int] = (math.nan, math.nan, math.nan, 0)  # diff, low, high, pairs
    budget_gap: float = math.nan  # the same over KL budgets up to the longer frontier's end
    budget_interval: tuple[float, float] = (math.nan, math.nan)
    budget_range: tuple[float, float] = (math.nan, math.nan)

    @property
    def resolved(self) -> bool:
        return math.isfinite(self.gap) and (self.interval[0] > 0 or self.interval[1] < 0)


def _mode_design(jobs: pd.DataFrame, x: Metric, y: Metric, value: str) -> Design | None:
    """The loss's jobs as a two-'loss' design: the modes take the place of the losses."""
    relabelled = jobs.assign(loss=jobs[MODE])
    return design(relabelled, x, y, value)


def matched_gap(
    arrays: Design, level: float = LEVEL, replicates: int = REPLICATES, seed: int = SEED, budget: bool = False
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """(gap, interval, KL range) of online minus offline; the gap NaN when the ranges do not meet.

    The range is the two frontiers' common one; with ``budget``, it runs on to the end of the longer
    frontier, the shorter one held at its best past its end: the best quality each mode reached within a
    KL budget (a frontier stops where its quality stops rising: a mode that over-optimises ends early)."""
    nan = (math.nan, (math.nan, math.nan), (math.nan, math.nan))
    if sorted(arrays.losses) != sorted(MODES):
        return nan
    online, offline = arrays.losses.index("online"), arrays.losses.index("offline")
    q, k = _config_means(arrays, arrays.value, arrays.kl)
    k = _log_kl(k)
    fronts = [_frontier_points(k[arrays.config_loss == i], q[arrays.config_loss == i]) for i in (online, offline)]
    if any(f.size == 0 for f in fronts):
        return nan
    lo, hi = max(f[0] for f in fronts), min(f[-1] for f in fronts)
    if lo > hi:
        return nan
    hi = max(f[-1] for f in fronts) if budget else hi
    at = np.linspace(lo, hi, POINTS)

    def gap(quality: np.ndarray, log_kl: np.ndarray) -> np.ndarray:
        on, off = arrays.config_loss == online, arrays.config_loss == offline
        return (
            _frontier_at(log_kl[..., on], quality[..., on], at) - _frontier_at(log_kl[..., off], quality[..., off], at)
        ).mean(-1)

    observed = float(gap(q, k))
    rng = np.random.default_rng(seed)
    values = resample(arrays, replicates, rng)
    q_b, k_b = _config_means(arrays, values, arrays.kl)
    noise = seed_noise(arrays, values)
    seeds = np.bincount(arrays.job_config, minlength=len(arrays.config_loss))
    df = noise.dof
    scale = np.sqrt(df / rng.chisquare(df, size=(replicates, 1))) if df else np.zeros((replicates, 1))
    q_b = q_b + scale * noise.quality_sd / np.sqrt(seeds) * rng.standard_normal(q_b.shape)
    k_b = _log_kl(k_b) + scale * noise.log_kl_sd / np.sqrt(seeds) * rng.standard_normal(k_b.shape)
    boot = gap(q_b, k_b)
    tail = (1 - level) / 2
    low, high = np.quantile(boot - observed, [tail, 1 - tail])
    interval = (observed - float(high), observed - float(low))  # the basic bootstrap interval
    return observed, interval, (float(math.exp(lo)), float(math.exp(hi)))


def _ranking(jobs: pd.DataFrame, value: str) -> tuple[dict[str, tuple[float, float, int]], tuple]:
    column = f"{value}/{RANKING}"
    if column not in jobs:
        return {}, (math.nan, math.nan, math.nan, 0)
    out = {}
    for mode in MODES:
        v = pd.to_numeric(jobs.loc[jobs[MODE] == mode, column], errors="coerce").dropna()
        if len(v):
            out[mode] = (float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan, len(v))
    keyed = jobs.assign(_v=pd.to_numeric(jobs[column], errors="coerce")).pivot_table(
        index=["beta", "seed"], columns=MODE, values="_v"
    )
    if not set(MODES) <= set(keyed.columns):
        return out, (math.nan, math.nan, math.nan, 0)
    diff = (keyed["online"] - keyed["offline"]).dropna()
    n = len(diff)
    if n < 2:
        return out, (float(diff.mean()) if n else math.nan, math.nan, math.nan, n)
    half = 1.96 * float(diff.std(ddof=1)) / math.sqrt(n)
    return out, (float(diff.mean()), float(diff.mean()) - half, float(diff.mean()) + half, n)


def online_offline(jobs: pd.DataFrame, x: Metric, y: Metric, value: str = "final", seed: int = SEED) -> list[ModeGap]:
    """Every loss that has completed jobs in both modes: its gap at matched KL and its ranking accuracies."""
    done = with_modes(jobs[jobs["status"] == COMPLETED])
    out = []
    for loss, group in done.groupby("loss", sort=False):
        if set(group[MODE]) != set(MODES):
            continue
        arrays = _mode_design(group, x, y, value)
        nan = (math.nan, (math.nan, math.nan), (math.nan, math.nan))
        gap, interval, kl_range = matched_gap(arrays, seed=seed) if arrays is not None else nan
        budget = matched_gap(arrays, seed=seed, budget=True) if arrays is not None else nan
        ranking, ranking_gap = _ranking(group, value)
        out.append(ModeGap(str(loss), gap, interval, kl_range, ranking, ranking_gap, *budget))
    return out


def mode_frontiers(jobs: pd.DataFrame, x: Metric, y: Metric, value: str = "final") -> Figure:
    """Per loss, each mode's configurations (mean over seeds) and frontier, quality against KL (log)."""
    done = with_modes(jobs[jobs["status"] == COMPLETED])
    losses = list(dict.fromkeys(done["loss"].dropna()))
    figure = Figure(figsize=(4.2 * max(1, len(losses)), 3.6))
    colors = loss_colors(losses)
    for i, loss in enumerate(losses):
        ax = figure.add_subplot(1, len(losses), i + 1)
        for mode, style in zip(MODES, ("--", "-")):
            group = done[(done["loss"] == loss) & (done[MODE] == mode)]
            if group.empty:
                continue
            cells = group.assign(_x=x.values(group, value), _y=y.values(group, value)).groupby("config")
            kl, quality = cells["_x"].mean().to_numpy(), cells["_y"].mean().to_numpy()
            ok = np.isfinite(kl) & np.isfinite(quality) & (kl > 0)
            kl, quality = kl[ok], quality[ok]
            marker = "o" if mode == "online" else "s"
            ax.scatter(kl, quality, color=colors[loss], marker=marker, facecolors="none" if mode == "offline" else None)
            order = np.argsort(kl)
            best, fx, fy = -np.inf, [], []
            for j in order:
                if quality[j] > best:
                    best = quality[j]
                    fx.append(kl[j])
                    fy.append(quality[j])
            ax.plot(fx, fy, style, color=colors[loss], label=mode)
        ax.set_xscale("log")
        ax.set_title(loss)
        ax.set_xlabel(f"{x.spec} (log scale)")
        if i == 0:
            ax.set_ylabel(y.spec)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
