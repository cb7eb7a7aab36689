"""Claim 1's test measured by simulation: its false-alarm rate and power on sweeps of the main
command's design (sweeps/synthetic_small.yaml: 4 losses, 5 betas, 2 seeds, 512 prompts)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from gpo_lab.report.__main__ import main as report_main
from gpo_lab.report.calibration import MAIN_NOISE, calibrate, main_plan, noise_of, simulate
from gpo_lab.report.frontier_test import _frontier_at, frontier_test, monte_carlo_error, seed_variance_curve
from tests.test_claims import peaked_sweep


def test_the_frontier_is_interpolated_through_its_undominated_points_by_hand():
    # (3, 0.6) lies under the line from (2, 0.7) to (4, 0.9) and is beaten by (2, 0.7): not on the frontier.
    kl, quality = np.array([3.0, 1.0, 4.0, 2.0]), np.array([0.6, 0.5, 0.9, 0.7])
    at = np.array([0.5, 1.5, 3.0, 4.0, 5.0])
    assert _frontier_at(kl, quality, at) == pytest.approx([0.5, 0.6, 0.8, 0.9, 0.9])
    stacked = _frontier_at(np.stack([kl, kl]), np.stack([quality, quality + 0.1]), at)  # one row per replicate
    assert stacked[1] == pytest.approx([0.6, 0.7, 0.9, 1.0, 1.0])


def test_the_noise_of_a_simulated_sweep_is_recovered():
    design = simulate(main_plan(), np.random.default_rng(3))
    noise = noise_of(design)
    assert noise.prompt_sd == pytest.approx(MAIN_NOISE.prompt_sd, rel=0.05)
    assert noise.shared == pytest.approx(MAIN_NOISE.shared, abs=0.06)
    # 20 configurations of two seeds (one degree of freedom each) pin the curve only roughly.
    assert 0.4 < noise.seed_curve[1] < 2.3
    assert 0.5 < noise.seed_sd(10, 512) / MAIN_NOISE.seed_sd(10, 512) < 2


def test_a_constant_seed_variance_is_fitted_as_one_by_hand():
    log_kl, variance, dof = np.log([0.5, 1.0, 4.0]), np.array([0.01, 0.01, 0.01]), np.array([1, 1, 1])
    a, b = seed_variance_curve(log_kl, variance, dof)
    assert (a, b) == pytest.approx((math.log(0.01), 0.0), abs=1e-9)
    assert seed_variance_curve(log_kl[:2], variance[:2], dof[:2]) == (pytest.approx(math.log(0.01)), 0.0)  # pooled


def test_the_seed_variance_curve_is_recovered_from_one_degree_of_freedom_per_configuration():
    """Sample variances of two seeds are σ²·χ²₁: E[s²] = exp(a + b·log KL) is still estimated without bias."""
    rng = np.random.default_rng(0)
    log_kl = rng.uniform(-2, 2.5, 4000)
    variance = np.exp(-7 + 1.5 * log_kl) * rng.chisquare(1, log_kl.size)
    a, b = seed_variance_curve(log_kl, variance, np.ones(log_kl.size, int))
    assert a == pytest.approx(-7, abs=0.15) and b == pytest.approx(1.5, abs=0.1)


def test_seeds_that_diverge_at_high_kl_do_not_widen_the_bands_near_the_peak():
    """The frontier's knots at low KL keep narrow bands when only over-optimised configurations spread."""
    calm = dataclasses.replace(MAIN_NOISE, seed_curve=(MAIN_NOISE.seed_curve[0], 0.0))
    plan = main_plan()
    design = simulate(dataclasses.replace(plan, noise=calm), np.random.default_rng(5))
    wild = design.value.copy()
    high = design.kl > 5
    wild[high] += np.where(np.arange(high.sum()) % 2 == 0, 0.15, -0.15)  # seeds 0.3 apart, high KL only
    narrow = frontier_test(design, replicates=400)
    spread = frontier_test(
        dataclasses.replace(design, value=wild, scores=design.scores + (wild - design.value)[:, None]), replicates=400
    )
    assert narrow is not None and spread is not None
    assert spread.widest < narrow.widest + 0.05


def test_false_alarms_and_power_on_a_few_simulated_sweeps():
    """CI-sized: 30 sweeps per truth; the bounds allow three Monte-Carlo errors at the target rates."""
    rates = calibrate(main_plan(), sweeps=30, replicates=200)
    assert rates.false_alarm <= 0.05 + 3 * monte_carlo_error(0.05, 30)
    assert rates.power >= 0.80 - 3 * monte_carlo_error(0.80, 30)


@pytest.mark.slow
def test_false_alarms_at_most_5_percent_and_power_at_least_80_percent_on_200_sweeps():
    rates = calibrate(main_plan(), sweeps=200, replicates=400, seed=1)
    assert rates.false_alarm <= 0.05 + 2 * monte_carlo_error(0.05, 200)
    assert rates.power >= 0.80
    print(rates.text())


def test_the_command_prints_its_own_error_rates(tmp_path, capsys):
    sweep = peaked_sweep(tmp_path / "sweep", {"logistic": 0.12, "squared": 0.06}, prompts=128)
    assert report_main([str(sweep), "--wandb", "off", "--calibrate", "--simulations", "6", "--margin", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "calibrate: 2 losses x 7 configurations x 2 seeds, 128 prompts" in out and "margin 0.2" in out
    line = next(x for x in out.splitlines() if "false-alarm rate" in x)
    assert "claim 1 on 6 simulated sweeps per truth" in line
    rate = float(line.split("identical) ")[1].split(" ")[0])
    assert 0 <= rate <= 1 and not math.isnan(rate)
