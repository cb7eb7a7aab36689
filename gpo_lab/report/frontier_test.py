"""Claim 1 as a test with a known error rate: are the losses' quality-against-KL frontiers alike?

Each bootstrap replicate resamples the evaluation prompts (one draw shared by every job, so the
comparison is paired) and the seeds of every configuration, then redoes everything after: the
configurations' means, each loss's Pareto frontier, and the frontiers' gaps at fixed KL points (the
knots of every pair's frontiers on their common KL range, interpolated in log KL). The largest standardized deviation of
the gaps from the observed ones, over every pair and every point, gives one critical value c: the
bands gap ± c·sd hold together at the stated level, so the chance of calling identical frontiers
different is controlled across all the comparisons at once.

- **differ**: some band excludes zero.
- **similar**: every band lies within ± margin.
- **inconclusive**: neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Nominal level of the simultaneous bands. Simulated sweeps of the main design (report/calibration.py)
# show the nominal 95% bands calling identical frontiers different about 10% of the time (the
# comparison points and each frontier's end are chosen on the same noisy values); at 99% the measured
# rate is below 5%.
LEVEL = 0.99
MARGIN = 0.10  # in quality units: 10 points of win rate, the difference the main design detects (docs/theory.md)
REPLICATES = 1000
SEED = 0
KL_FLOOR = 1e-3  # nats: a KL estimate at or below it counts as this, for the log


@dataclass
class Design:
    """A sweep's jobs as arrays: the inputs of the test, from a sweep or a simulation.

    ``scores``: (jobs x prompts) per-prompt quality (higher is better), whose row means are the jobs'
    values; a row of NaN means none were written, and ``value`` ± ``se`` is drawn instead.
    """

    losses: list[str]  # names, one per loss
    config_loss: np.ndarray  # (configs,) index into losses
    job_config: np.ndarray  # (jobs,) index into configs
    kl: np.ndarray  # (jobs,)
    value: np.ndarray  # (jobs,)
    se: np.ndarray  # (jobs,)
    scores: np.ndarray  # (jobs x prompts)


@dataclass
class FrontierTest:
    verdict: str  # similar | differ | inconclusive
    margin: float
    level: float
    largest_gap: float  # the observed gap of largest |value|, in quality units
    pair: list[str]  # higher, lower there
    at_kl: float
    band: tuple[float, float]  # its simultaneous interval
    critical: float  # c: bands are gap ± c·sd
    widest: float  # the largest |gap| + c·sd over all points: "similar" needs it within the margin
    pairs: int
    points: int
    replicates: int
    skipped: list[str] = field(default_factory=list)


def _frontier_at(kl: np.ndarray, quality: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The Pareto frontier (lowest KL, highest quality), interpolated linearly and held flat past its
    ends, at the KL points ``at``; vectorized over leading axes: kl, quality (..., C), at (P,) -> (..., P)."""
    order = np.argsort(kl, axis=-1, kind="stable")
    k, q = np.take_along_axis(kl, order, -1), np.take_along_axis(quality, order, -1)
    before = np.concatenate([np.full(q.shape[:-1] + (1,), -np.inf), np.maximum.accumulate(q, axis=-1)[..., :-1]], -1)
    on = q > before  # a frontier point: better than every configuration of lower KL
    kk, a = k[..., :, None], at[None, :]  # (..., C, P)
    left_ok, right_ok = on[..., None] & (kk <= a), on[..., None] & (kk >= a)
    left = np.argmax(np.where(left_ok, kk, -np.inf), axis=-2)  # (..., P): the frontier point at or below
    right = np.argmin(np.where(right_ok, kk, np.inf), axis=-2)
    has_left, has_right = left_ok.any(axis=-2), right_ok.any(axis=-2)
    left, right = np.where(has_left, left, right), np.where(has_right, right, left)
    kl_l, kl_r = np.take_along_axis(k, left, -1), np.take_along_axis(k, right, -1)
    q_l, q_r = np.take_along_axis(q, left, -1), np.take_along_axis(q, right, -1)
    span = kl_r - kl_l
    t = np.where(span > 0, (at - kl_l) / np.where(span > 0, span, 1.0), 0.0)
    return q_l + np.clip(t, 0.0, 1.0) * (q_r - q_l)


def _log_kl(kl: np.ndarray) -> np.ndarray:
    """Frontiers are interpolated in log KL, where a trade-off curve is nearly straight (a chord in KL
    itself falls below a concave curve, a gap between identical trade-offs sampled at other KLs)."""
    return np.log(np.maximum(kl, KL_FLOOR))


def _config_means(design: Design, values: np.ndarray, kl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean quality and KL of each configuration over its seeds: (..., jobs) -> (..., configs)."""
    configs = len(design.config_loss)
    q_out = np.empty(values.shape[:-1] + (configs,))
    k_out = np.empty_like(q_out)
    for c in range(configs):
        members = design.job_config == c
        q_out[..., c] = values[..., members].mean(-1)
        k_out[..., c] = np.broadcast_to(kl, values.shape)[..., members].mean(-1)
    return q_out, k_out


def seed_variance_curve(log_kl: np.ndarray, variance: np.ndarray, dof: np.ndarray) -> tuple[float, float]:
    """(a, b) of a seed-to-seed variance that grows or shrinks with KL: E[s²] = exp(a + b·log KL).

    Seeds that over-optimise diverge far more at high KL than near the frontier's peak (the main
    sweep: a spread of 0.20 in win rate at β 1/8, 0.01 at β 1), so one pooled variance would widen
    every band by the worst configurations'. A gamma regression with a log link (each sample
    variance is σ²·χ²_dof/dof) fitted by iteratively reweighted least squares, weighted by degrees
    of freedom; with fewer than three configurations, or no spread in KL, b = 0 (pooled)."""
    pooled = float(np.sum(dof * variance) / np.sum(dof))
    if len(variance) < 3 or np.ptp(log_kl) == 0 or pooled <= 0:
        return math.log(max(pooled, 1e-12)), 0.0
    x = np.column_stack([np.ones_like(log_kl), log_kl])
    coef = np.array([math.log(pooled), 0.0])
    for _ in range(50):
        mu = np.exp(x @ coef)
        z = x @ coef + (variance - mu) / mu  # the working response; gamma's working weights are the dof alone
        w = dof.astype(float)
        new = np.linalg.solve(x.T @ (w[:, None] * x), x.T @ (w * z))
        if np.allclose(new, coef, atol=1e-10):
            break
        coef = np.clip(new, -50.0, 50.0)
    return float(coef[0]), float(coef[1])


@dataclass
class SeedNoise:
    """Seed-to-seed noise beyond what the prompts explain: per configuration for quality, pooled for log KL."""

    quality_sd: np.ndarray  # (configs,)
    log_kl_sd: float
    dof: int
    curve: tuple[float, float]  # (a, b): a job's total seed variance exp(a + b·log KL), prompts' part included


def fitted_seed_curve(design: Design) -> tuple[float, float] | None:
    """:func:`seed_variance_curve` of the configurations run with two or more seeds (their job values'
    sample variance against their mean log KL); None when no configuration has two seeds."""
    log_kl, variance, dof = [], [], []
    for c in range(len(design.config_loss)):
        members = design.job_config == c
        if members.sum() > 1:
            log_kl.append(float(np.mean(_log_kl(design.kl[members]))))
            variance.append(float(np.var(design.value[members], ddof=1)))
            dof.append(int(members.sum()) - 1)
    if not dof:
        return None
    return seed_variance_curve(np.array(log_kl), np.array(variance), np.array(dof))


def seed_noise(design: Design, boot: np.ndarray) -> SeedNoise:
    """The seed-to-seed sd of each configuration's quality beyond what the prompts explain (a variance
    curve in KL fitted over every configuration with two or more seeds: two seeds alone give one
    degree of freedom each, and resampling them would understate their spread), of log KL (pooled),
    and the degrees of freedom. ``boot``: resampled job values."""
    configs = len(design.config_loss)
    curve = fitted_seed_curve(design)
    if curve is None:
        return SeedNoise(np.zeros(configs), 0.0, 0, (-math.inf, 0.0))
    prompt_part = np.full(configs, np.nan)
    log_kl, kl_dof = 0.0, 0
    for c in range(configs):
        members = np.flatnonzero(design.job_config == c)
        if len(members) < 2:
            continue
        n = len(members)
        # What the prompts move between seeds: the jobs share one prompt set, so only each job's own part.
        deviations = boot[:, members] - design.value[members]
        prompt_part[c] = float(np.mean(np.var(deviations, axis=1, ddof=1)))
        kl = design.kl[members]
        log_kl += (n - 1) * (np.var(np.log(kl), ddof=1) if (kl > 0).all() else 0.0)
        kl_dof += n - 1
    a, b = curve
    config_kl = np.array([np.mean(_log_kl(design.kl[design.job_config == c])) for c in range(configs)])
    prompt_part = np.where(np.isnan(prompt_part), np.nanmean(prompt_part), prompt_part)  # one-seed configurations
    own = np.exp(a + b * config_kl) - prompt_part
    df = max(kl_dof - (2 if b else 1), 1)
    return SeedNoise(np.sqrt(np.maximum(own, 0.0)), float(np.sqrt(log_kl / kl_dof)), df, (a, b))


def _points(design: Design, q: np.ndarray, k: np.ndarray):
    """The observed frontiers' knots on each pair's common KL range: (pair index, KL) points."""
    pairs, points, skipped = [], [], []
    ranges = []
    for i in range(len(design.losses)):
        mine = design.config_loss == i
        f = _frontier_points(k[mine], q[mine])
        ranges.append(f)
    for i in range(len(design.losses)):
        for j in range(i + 1, len(design.losses)):
            a, b = ranges[i], ranges[j]
            if a.size == 0 or b.size == 0:
                continue
            lo, hi = max(a[0], b[0]), min(a[-1], b[-1])
            if lo > hi:
                skipped.append(f"{design.losses[i]}–{design.losses[j]}")
                continue
            knots = np.unique(np.concatenate([a, b, [lo, hi]]))
            pairs.append((i, j))
            points += [(len(pairs) - 1, float(x)) for x in knots[(knots >= lo) & (knots <= hi)]]
    return pairs, points, skipped


def _frontier_points(kl: np.ndarray, quality: np.ndarray) -> np.ndarray:
    ok = np.isfinite(kl) & np.isfinite(quality)
    kl, quality = kl[ok], quality[ok]
    order = np.lexsort((-quality, kl))
    out, best = [], -np.inf
    for index in order:
        if quality[index] > best:
            out.append(kl[index])
            best = quality[index]
    return np.asarray(out)


def _gaps(design: Design, q: np.ndarray, k: np.ndarray, pairs, points) -> np.ndarray:
    """Gap (first loss minus second) at every point; (..., configs) -> (..., points)."""
    out = np.empty(q.shape[:-1] + (len(points),))
    at = np.array([x for _, x in points])
    index = np.array([p for p, _ in points])
    cache = {}
    for i in {loss for pair in pairs for loss in pair}:
        mine = design.config_loss == i
        cache[i] = _frontier_at(k[..., mine], q[..., mine], at)
    for p, (i, j) in enumerate(pairs):
        sel = index == p
        out[..., sel] = cache[i][..., sel] - cache[j][..., sel]
    return out


def resample(design: Design, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates x jobs) job values: prompts drawn once per replicate for every job with scores."""
    jobs, prompts = design.scores.shape
    values = design.value + np.where(np.isfinite(design.se), design.se, 0.0) * rng.standard_normal((replicates, jobs))
    has = np.isfinite(design.scores).all(axis=1) if prompts else np.zeros(jobs, bool)
    if has.any():
        counts = rng.multinomial(prompts, np.full(prompts, 1.0 / prompts), size=replicates).astype(float)
        values[:, has] = counts @ design.scores[has].T / prompts
    return values


def frontier_test(
    design: Design,
    margin: float = MARGIN,
    level: float = LEVEL,
    replicates: int = REPLICATES,
    seed: int = SEED,
) -> FrontierTest | None:
    """Claim 1's three-way verdict with its simultaneous bands; None when no pair shares a KL range."""
    rng = np.random.default_rng(seed)
    q, k = _config_means(design, design.value, design.kl)
    k = _log_kl(k)
    pairs, points, skipped = _points(design, q, k)
    if not points:
        return None
    observed = _gaps(design, q, k, pairs, points)
    values = resample(design, replicates, rng)
    q_b, k_b = _config_means(design, values, design.kl)
    noise = seed_noise(design, values)
    tau, tau_kl, df = noise.quality_sd, noise.log_kl_sd, noise.dof
    seeds = np.bincount(design.job_config, minlength=len(design.config_loss))
    # The seed sd is itself estimated (df degrees of freedom): each replicate draws its own from the
    # estimate's sampling distribution, so the bands get the t distribution's heavier tails.
    scale = np.sqrt(df / rng.chisquare(df, size=(replicates, 1))) if df else np.zeros((replicates, 1))
    q_b = q_b + scale * tau / np.sqrt(seeds) * rng.standard_normal(q_b.shape)
    k_b = _log_kl(k_b) + scale * tau_kl / np.sqrt(seeds) * rng.standard_normal(k_b.shape)
    boot = _gaps(design, q_b, k_b, pairs, points)
    sd = boot.std(axis=0, ddof=1)
    sd = np.where(sd > 0, sd, np.nan)
    deviation = np.nan_to_num(np.abs(boot - observed) / sd, nan=0.0).max(axis=1)
    critical = float(np.quantile(deviation, level))
    half = np.nan_to_num(critical * sd, nan=0.0)
    lower, upper = observed - half, observed + half
    differ = bool(((lower > 0) | (upper < 0)).any())
    widest = float(np.max(np.maximum(np.abs(lower), np.abs(upper))))
    verdict = "differ" if differ else "similar" if widest <= margin else "inconclusive"
    z = np.abs(observed) / np.where(np.isfinite(sd), sd, np.inf)
    top = int(np.argmax(z if differ else np.abs(observed)))
    i, j = pairs[points[top][0]]
    gap = float(observed[top])
    pair = [design.losses[i], design.losses[j]] if gap >= 0 else [design.losses[j], design.losses[i]]
    band = (abs(gap) - half[top], abs(gap) + half[top])
    return FrontierTest(
        verdict,
        margin,
        level,
        abs(gap),
        pair,
        float(np.exp(points[top][1])),
        (float(band[0]), float(band[1])),
        critical,
        widest,
        len(pairs),
        len(points),
        replicates,
        skipped,
    )


def verdicts(designs: Sequence[Design], **kwargs) -> list[str]:
    """The verdict of each design (None where nothing could be compared reads 'none')."""
    out = []
    for design in designs:
        result = frontier_test(design, **kwargs)
        out.append(result.verdict if result is not None else "none")
    return out


def monte_carlo_error(rate: float, n: int) -> float:
    return math.sqrt(max(rate * (1 - rate), 0.0) / n) if n else math.nan
