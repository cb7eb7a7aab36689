"""How often claim 1's test is wrong on sweeps of a given design: simulated false alarms and power.

A simulated sweep keeps the design (losses, betas, seeds, prompts, each configuration's KL) and
draws its win rates from a stated truth: one trade-off curve shared by every loss (quality a
quadratic in log KL), or that curve with one loss lowered by ``shift`` everywhere. A job's
per-prompt score is its value plus a prompt effect shared by every job (the prompts are the same
held-out set) plus independent noise; a job's value is the truth plus seed noise. The noise is
the sweep's own where measured (:func:`noise_of`), else :data:`MAIN_NOISE`; the seed noise grows
with KL as the sweep's does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpo_lab.report.frontier_test import KL_FLOOR, Design, fitted_seed_curve, frontier_test, monte_carlo_error

SHIFT = 0.10  # the stated difference: one loss this much lower in win rate at every KL


@dataclass
class Noise:
    prompt_sd: float  # sd of one prompt's score within a job
    shared: float  # fraction of that variance shared by every job (the prompt's difficulty)
    seed_curve: tuple[float, float]  # (a, b): a job's value varies over seeds with variance exp(a + b·log KL)

    def seed_sd(self, kl: float, prompts: int) -> float:
        """The sd over seeds beyond what the prompts' own noise adds, at ``kl``."""
        a, b = self.seed_curve
        own = (1 - self.shared) * self.prompt_sd**2 / prompts
        return float(np.sqrt(max(np.exp(a + b * np.log(max(kl, KL_FLOOR))) - own, 0.0)))

    def describe(self, prompts: int) -> str:
        sds = ", ".join(f"{self.seed_sd(kl, prompts):.3g} at KL {kl:g}" for kl in (0.3, 1, 3, 10))
        return (
            f"per-prompt sd {self.prompt_sd:.3g} ({self.shared:.0%} shared by every job); seed sd beyond the "
            f"prompts' {sds}"
        )


# Measured by noise_of on the main command's sweep (sweeps/synthetic_small.yaml: 4 losses x 5 betas, two
# seeds, each its own SFT policy and pairs; 512 prompts): 0/1/½ judge scores with sd 0.47, a fifth of
# their variance shared by every job; between seeds a job's win rate varies little near the frontier's
# peak (sd 0.02 at KL 1) and much where the policy over-optimises (0.09 at KL 10).
MAIN_NOISE = Noise(prompt_sd=0.468, shared=0.22, seed_curve=(-7.43, 1.32))
MAIN_RATIOS = {"logistic": 0.5, "savage": 0.5, "squared": 1.0, "exponential": 1.0}


@dataclass
class Plan:
    """A sweep's design: one configuration per (loss, beta), each run once per seed."""

    losses: list[str]
    betas: list[float]  # or the configurations' indices, for a measured sweep
    seeds: int
    prompts: int
    kl: np.ndarray  # (losses x betas) mean KL of each configuration
    noise: Noise
    curve: tuple[float, float, float] = (0.66, 0.06, -0.045)  # quality = a + b·log KL + c·log² KL


def main_plan(prompts: int = 512) -> Plan:
    """The main command's design (sweeps/synthetic_small.yaml): KL falls as 1/(β·f''(0)/|f'(0)|)."""
    losses, betas = list(MAIN_RATIOS), [0.125, 0.25, 0.5, 1.0, 2.0]
    kl = np.array([[0.5 / (b * MAIN_RATIOS[loss]) for b in betas] for loss in losses])
    return Plan(losses, betas, 2, prompts, kl, MAIN_NOISE)


def plan_of(design: Design, noise: Noise | None = None) -> Plan:
    """The design of a measured sweep, with its noise and a curve fitted to all its configurations."""
    configs = len(design.config_loss)
    q = np.array([design.value[design.job_config == c].mean() for c in range(configs)])
    k = np.array([design.kl[design.job_config == c].mean() for c in range(configs)])
    ok = np.isfinite(q) & (k > 0)
    x = np.log(k[ok])
    c2, c1, c0 = np.polyfit(x, q[ok], 2) if ok.sum() >= 3 else (0.0, 0.0, float(np.nanmean(q)))
    per_loss = max(np.bincount(design.config_loss))
    grid = np.full((len(design.losses), per_loss), np.nan)
    for i in range(len(design.losses)):
        mine = k[design.config_loss == i]
        grid[i, : len(mine)] = mine
    seeds = int(np.bincount(design.job_config).max())
    betas = list(range(per_loss))
    return Plan(
        list(design.losses), betas, seeds, design.scores.shape[1], grid, noise or noise_of(design), (c0, c1, c2)
    )


def noise_of(design: Design) -> Noise:
    """The sweep's noise: per-prompt sd and shared fraction from the scores, the seed variance curve
    in KL (:func:`~gpo_lab.report.frontier_test.fitted_seed_curve`) from the configurations run with several seeds."""
    rows = design.scores[np.isfinite(design.scores).all(axis=1)] if design.scores.size else design.scores
    if len(rows) < 2:
        return MAIN_NOISE
    prompt_var = float(np.mean(rows.var(axis=1, ddof=1)))
    centered = rows - rows.mean(axis=1, keepdims=True)
    shared_var = max(float(np.var(centered.mean(axis=0), ddof=1) - prompt_var / len(rows)), 0.0)
    shared = min(shared_var / prompt_var, 0.95) if prompt_var > 0 else 0.0
    curve = fitted_seed_curve(design)
    return Noise(float(np.sqrt(prompt_var)), float(shared), curve if curve is not None else MAIN_NOISE.seed_curve)


def simulate(plan: Plan, rng: np.random.Generator, shift: float = 0.0) -> Design:
    """One simulated sweep: the shared curve, the first loss lowered by ``shift``."""
    n = plan.noise
    a, b, c = plan.curve
    effect = np.sqrt(n.shared) * n.prompt_sd * rng.standard_normal(plan.prompts)
    config_loss, job_config, kls, values, scores = [], [], [], [], []
    for i in range(len(plan.losses)):
        for kl in plan.kl[i]:
            if not np.isfinite(kl):
                continue
            config_loss.append(i)
            truth = a + b * np.log(kl) + c * np.log(kl) ** 2 - (shift if i == 0 else 0.0)
            seed_sd = n.seed_sd(kl, plan.prompts)
            for _ in range(plan.seeds):
                value = truth + seed_sd * rng.standard_normal()
                row = value + effect + np.sqrt(1 - n.shared) * n.prompt_sd * rng.standard_normal(plan.prompts)
                job_config.append(len(config_loss) - 1)
                kls.append(kl)
                scores.append(row)
                values.append(row.mean())
    jobs = len(values)
    return Design(
        list(plan.losses),
        np.array(config_loss),
        np.array(job_config),
        np.array(kls, dtype=float),
        np.array(values),
        np.full(jobs, np.nan),
        np.array(scores),
    )


@dataclass
class Rates:
    sweeps: int
    false_alarm: float  # "differ" under identical trade-offs
    power: float  # "differ" with one loss lower by ``shift``
    shift: float
    similar_when_identical: float

    def text(self) -> str:
        fa, pw = self.false_alarm, self.power
        return (
            f"claim 1 on {self.sweeps} simulated sweeps per truth: false-alarm rate (says 'differ' when "
            f"trade-offs are identical) {fa:.3f} ± {monte_carlo_error(fa, self.sweeps):.3f}; power (says "
            f"'differ' when one loss is {self.shift:.2f} lower in win rate everywhere) {pw:.3f} ± "
            f"{monte_carlo_error(pw, self.sweeps):.3f}; 'similar' when identical: {self.similar_when_identical:.3f}"
        )


def calibrate(
    plan: Plan, sweeps: int = 200, replicates: int = 400, shift: float = SHIFT, seed: int = 0, **test
) -> Rates:
    """Claim 1's false-alarm rate and power on ``sweeps`` simulated sweeps of ``plan`` per truth."""
    rng = np.random.default_rng(seed)
    null, alt = [], []
    for k in range(sweeps):
        for out, s in ((null, 0.0), (alt, shift)):
            result = frontier_test(simulate(plan, rng, s), replicates=replicates, seed=seed + k, **test)
            out.append(result.verdict if result is not None else "none")
    n = max(sweeps, 1)
    return Rates(
        sweeps,
        null.count("differ") / n,
        alt.count("differ") / n,
        shift,
        null.count("similar") / n,
    )
