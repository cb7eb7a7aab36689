"""Over-optimisation fits (Gao et al.'s R(d) = d(alpha - b log d)), the online-minus-offline gap at matched
KL, and the report of a sweep with online jobs (its section, figures and claims.json entry)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from gpo_lab.report.build import make_report
from gpo_lab.report.frontier_test import Design
from gpo_lab.report.online_offline import matched_gap
from gpo_lab.report.overoptimisation import fit_curves, fit_gao, peak
from tests.helpers.sweeps import write_job


def gao(d, alpha, b):
    return d * (alpha - b * np.log(d))


def test_fit_recovers_the_curve_and_its_peak_matches_a_grid_search():
    d = np.linspace(0.1, 6.0, 40)
    alpha, b = fit_gao(d, gao(d, 1.2, 0.5))
    assert (alpha, b) == pytest.approx((1.2, 0.5), abs=1e-9)
    kl, top = peak(alpha, b)
    grid = np.linspace(0.01, 20, 200_001)  # the slow obvious path: the maximum over a fine grid
    values = gao(grid, 1.2, 0.5)
    assert math.sqrt(kl) == pytest.approx(grid[np.argmax(values)], abs=1e-3)
    assert top == pytest.approx(values.max(), rel=1e-6)


def test_no_peak_when_the_curve_never_turns_down():
    assert peak(1.0, 0.0) == (math.inf, pytest.approx(math.nan, nan_ok=True))
    assert math.isinf(peak(1.0, -0.2)[0])


def test_job_bootstrap_interval_covers_the_true_peak():
    rng = np.random.default_rng(1)
    rows = []
    for job in range(8):
        d = np.sqrt(np.linspace(0.2, 12, 6))
        gain = gao(d, 1.0, 0.4) + rng.normal(0, 0.05, d.size) + rng.normal(0, 0.05)  # evaluation and job noise
        rows += [{"job": f"j{job}", "loss": "logistic", "mode": "online", "d": x, "gain": y} for x, y in zip(d, gain)]
    (fit,) = fit_curves(pd.DataFrame(rows), replicates=300)
    true_kl, true_top = peak(1.0, 0.4)
    assert fit.kl_interval[0] < true_kl < fit.kl_interval[1]
    assert fit.reward_interval[0] < true_top < fit.reward_interval[1]
    assert fit.kl_interval[1] - fit.kl_interval[0] < true_kl  # an interval, not everything


def two_mode_design(shift: float, seeds: int = 2, prompts: int = 200, seed: int = 0) -> Design:
    """Offline and online configurations on one trade-off curve, the online one ``shift`` higher; per-prompt
    scores drawn as Bernoulli(quality)."""
    rng = np.random.default_rng(seed)
    kls = [0.3, 1.0, 3.0, 9.0]
    config_loss, job_config, kl, value, scores = [], [], [], [], []
    for mode in (0, 1):
        for k in kls:
            config_loss.append(mode)
            for _ in range(seeds):
                quality = 0.55 + 0.08 * math.log(k + 1) + (shift if mode else 0.0)
                row = (rng.random(prompts) < quality).astype(float)
                job_config.append(len(config_loss) - 1)
                kl.append(k * math.exp(rng.normal(0, 0.05)))
                value.append(row.mean())
                scores.append(row)
    return Design(
        ["offline", "online"],
        np.array(config_loss),
        np.array(job_config),
        np.array(kl),
        np.array(value),
        np.full(len(value), 0.03),
        np.array(scores),
    )


def test_matched_gap_finds_a_shift_and_covers_zero_without_one():
    gap, interval, kl_range = matched_gap(two_mode_design(0.15), replicates=400)
    assert gap == pytest.approx(0.15, abs=0.06)
    assert interval[0] > 0 and interval[0] < 0.15 < interval[1]
    assert kl_range[0] >= 0.25 and kl_range[1] <= 10
    gap, interval, _ = matched_gap(two_mode_design(0.0, seed=3), replicates=400)
    assert interval[0] < 0 < interval[1]


def write_mode_job(sweep, mode: str, **kwargs):
    """A job of ``write_job`` moved to a directory that names its mode, its config saying pairs.online."""
    job = write_job(sweep / "_tmp", **kwargs)
    config = yaml.safe_load((job / "config.yaml").read_text())
    config["pairs"] = {"online": mode == "online"}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    target = sweep / f"{job.name},pairs.online={mode == 'online'}"
    shutil.move(str(job), target)
    return target


def test_report_of_a_sweep_with_online_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    for mode, lift in (("offline", 0.0), ("online", 0.1)):
        for beta in (0.1, 0.3, 1.0):
            for seed in (0, 1):
                history = []
                for step in (50, 100, 150, 200):
                    kl = step / 50 / beta * (1 + 0.05 * seed)
                    d = math.sqrt(kl)
                    history.append(
                        (
                            step,
                            {
                                "val/win_rate": 0.5 + 0.1 * math.log1p(kl) + lift - 0.01 * kl,
                                "val/win_rate_se": 0.02,
                                "val/kl_token": kl,
                                "val/judge_reward": 0.3 + gao(d, 0.8 + lift, 0.4),
                                "val/judge_reward_reference": 0.3,
                                "val/ranking_accuracy": 0.7 - 0.05 * (mode == "online") + 0.01 * seed,
                            },
                        )
                    )
                write_mode_job(sweep, mode, loss="logistic", beta=beta, seed=seed, seeded=True, history=history)
    shutil.rmtree(sweep / "_tmp")
    make_report(sweep)
    text = (sweep / "report.md").read_text()
    assert "## Online against offline pairs" in text and "6 offline, 6 online" in text
    assert (sweep / "online_offline.png").exists() and (sweep / "overoptimisation.png").exists()
    entry = json.loads((sweep / "claims.json").read_text())["online_offline"]["logistic"]
    low, high = entry["interval"]
    assert low <= entry["gap"] <= high and entry["gap"] == pytest.approx(0.1, abs=0.05)
    assert entry["ranking_accuracy_gap"] == pytest.approx(-0.05, abs=1e-9)
    online_peak = entry["peaks"]["online"]
    assert online_peak["kl"] == pytest.approx(peak(0.9, 0.4)[0], rel=1e-6)  # exact points: the fit is exact
