"""Over-optimisation curves (Gao et al. 2023; Rafailov et al. 2024): golden reward gain against sqrt(KL).

Every evaluation of every completed job is a point (d, R): d = sqrt(KL from the reference), R = the
judge's mean reward of the policy's samples minus that of the reference's samples on the same prompts.
Per loss and mode (offline / online pairs) the points are fitted by least squares with Gao et al.'s form

    R(d) = d (alpha - b log d),

which is linear in (alpha, b). With b > 0 it peaks at d* = exp(alpha / b - 1), where R(d*) = b d*, so the
KL at the peak is d*^2. Intervals: percentiles over bootstrap replicates that resample the jobs (each
job's curve is one unit: its seed, its beta); a replicate without a peak (b <= 0) counts as a peak
beyond any KL, so the interval can be open above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gpo_lab.report.collect import COMPLETED, Sweep
from gpo_lab.report.figure_style import loss_colors
from gpo_lab.report.online_offline import MODE, MODES, with_modes

REWARD, REFERENCE_REWARD = "val/judge_reward", "val/judge_reward_reference"
LEVEL = 0.95
REPLICATES = 1000
SEED = 0


def fit_gao(d: np.ndarray, reward: np.ndarray) -> tuple[float, float]:
    """(alpha, b) of R(d) = d (alpha - b log d) by least squares (points with d > 0)."""
    d, reward = np.asarray(d, dtype=float), np.asarray(reward, dtype=float)
    ok = (d > 0) & np.isfinite(d) & np.isfinite(reward)
    if ok.sum() < 2:
        return math.nan, math.nan
    d, reward = d[ok], reward[ok]
    features = np.column_stack([d, -d * np.log(d)])
    (alpha, b), *_ = np.linalg.lstsq(features, reward, rcond=None)
    return float(alpha), float(b)


def peak(alpha: float, b: float) -> tuple[float, float]:
    """(KL at the peak, R at the peak); (inf, nan) when the curve has no maximum (b <= 0)."""
    if not (math.isfinite(alpha) and math.isfinite(b)) or b <= 0:
        return math.inf, math.nan
    exponent = alpha / b - 1
    if exponent > 350:  # beyond any float: no peak within reach
        return math.inf, math.nan
    d_star = math.exp(exponent)
    return d_star**2, b * d_star


@dataclass
class CurveFit:
    loss: str
    mode: str
    alpha: float
    b: float
    peak_kl: float
    peak_reward: float
    kl_interval: tuple[float, float]
    reward_interval: tuple[float, float]
    with_peak: float  # the fraction of replicates with a peak
    jobs: int
    points: int
    max_kl: float  # the largest KL measured: a peak beyond it is an extrapolation


def curve_points(sweep: Sweep, kl_metric: str) -> pd.DataFrame:
    """One row per evaluation of every completed job: job, loss, mode, beta, step, d, reward gain."""
    done = with_modes(sweep.jobs[sweep.jobs["status"] == COMPLETED])
    rows = []
    for _, job in done.iterrows():
        history = sweep.history(job["job"])
        if not {kl_metric, REWARD, REFERENCE_REWARD} <= set(history.columns):
            continue
        for _, record in history.iterrows():
            kl, r, r0 = record[kl_metric], record[REWARD], record[REFERENCE_REWARD]
            if pd.notna(kl) and pd.notna(r) and pd.notna(r0):
                rows.append(
                    {
                        "job": job["job"],
                        "loss": job["loss"],
                        MODE: job[MODE],
                        "beta": job["beta"],
                        "step": record["step"],
                        "d": math.sqrt(max(float(kl), 0.0)),
                        "gain": float(r) - float(r0),
                    }
                )
    return pd.DataFrame(rows, columns=["job", "loss", MODE, "beta", "step", "d", "gain"])


def fit_curves(
    points: pd.DataFrame, replicates: int = REPLICATES, level: float = LEVEL, seed: int = SEED
) -> list[CurveFit]:
    """Gao et al.'s fit per loss and mode, with job-bootstrap intervals for the peak's KL and reward."""
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2
    out = []
    for (loss, mode), group in points.groupby(["loss", MODE], sort=False):
        alpha, b = fit_gao(group["d"].to_numpy(), group["gain"].to_numpy())
        kl_star, r_star = peak(alpha, b)
        by_job = [(g["d"].to_numpy(), g["gain"].to_numpy()) for _, g in group.groupby("job")]
        kls, rewards = [], []
        for _ in range(replicates):
            chosen = [by_job[i] for i in rng.integers(0, len(by_job), len(by_job))]
            k, r = peak(*fit_gao(np.concatenate([c[0] for c in chosen]), np.concatenate([c[1] for c in chosen])))
            kls.append(k)
            rewards.append(r)
        kls_a, rewards_a = np.array(kls), np.array(rewards)
        finite = np.isfinite(rewards_a)
        kl_interval = (
            tuple(float(v) for v in np.quantile(kls_a, [tail, 1 - tail], method="inverted_cdf"))
            if replicates
            else (math.nan,) * 2
        )
        reward_interval = (
            tuple(float(v) for v in np.quantile(rewards_a[finite], [tail, 1 - tail]))
            if finite.any()
            else (math.nan,) * 2
        )
        out.append(
            CurveFit(
                str(loss),
                str(mode),
                alpha,
                b,
                kl_star,
                r_star,
                kl_interval,  # type: ignore[arg-type]
                reward_interval,  # type: ignore[arg-type]
                float(finite.mean()) if replicates else math.nan,
                len(by_job),
                len(group),
                float(group["d"].max() ** 2),
            )
        )
    order = {mode: i for i, mode in enumerate(MODES)}
    return sorted(out, key=lambda f: (f.loss, order.get(f.mode, 9)))


def curves_figure(points: pd.DataFrame, fits: list[CurveFit], kl_metric: str) -> Figure:
    """Per loss: every evaluation's (sqrt KL, reward gain), each mode's fitted curve and its peak."""
    losses = list(dict.fromkeys(points["loss"]))
    figure = Figure(figsize=(4.2 * max(1, len(losses)), 3.6))
    colors = loss_colors(losses)
    for i, loss in enumerate(losses):
        ax = figure.add_subplot(1, len(losses), i + 1)
        for mode, style, marker in zip(MODES, ("--", "-"), ("s", "o")):
            mine = points[(points["loss"] == loss) & (points[MODE] == mode)]
            if mine.empty:
                continue
            filled = colors[loss] if mode == "online" else "none"
            ax.scatter(
                mine["d"], mine["gain"], s=10, marker=marker, facecolors=filled, edgecolors=colors[loss], alpha=0.6
            )
            fit = next((f for f in fits if f.loss == loss and f.mode == mode), None)
            if fit is None or not math.isfinite(fit.alpha):
                continue
            grid = np.linspace(max(mine["d"].min(), 1e-3), mine["d"].max() * 1.1, 100)
            ax.plot(grid, grid * (fit.alpha - fit.b * np.log(grid)), style, color=colors[loss], label=mode)
            if math.isfinite(fit.peak_kl) and math.sqrt(fit.peak_kl) <= grid[-1]:
                ax.plot([math.sqrt(fit.peak_kl)], [fit.peak_reward], "*", color=colors[loss], markersize=12)
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_title(loss)
        ax.set_xlabel(f"sqrt({kl_metric.replace('val/', '')})")
        if i == 0:
            ax.set_ylabel("golden reward gain over the reference")
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
