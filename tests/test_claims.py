"""The report's judgement of the paper's claims, on hand-written sweeps with known answers (no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpo_lab.report import analyse, collect, make_report
from gpo_lab.report.__main__ import main as report_main
from gpo_lab.report.axes import Metric, MissingMetric
from gpo_lab.report.bandit import BanditRun, claims_markdown
from gpo_lab.report.beta_ratio import beta_ratio
from gpo_lab.report.build import completed_jobs, histories
from gpo_lab.report.claims import exact_claims
from gpo_lab.report.frontier_gap import Frontier, frontier_gap, frontiers
from gpo_lab.report.grids import grids
from gpo_lab.report.loss_shapes import member_ratio
from gpo_lab.report.peak_fit import best_betas, fit_peak
from gpo_lab.report.training_figures import departure, regularizer_vs_kl
from gpo_lab.report.verdict import verdict
from gpo_lab.store.per_prompt import PER_PROMPT_FILE
from tests.helpers.sweeps import synthetic_sweep, write_job

GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
WIN = Metric("val/win_rate")


def peaked_sweep(root, peaks, betas=GRID, seeds=(0, 1), noise=0.01, prompts=0, curvature=0.05, kl_scale=None, se=None):
    """Win rate = 0.8 - curvature * (log beta - log b0)^2 + noise, b0 = ``peaks[loss]``; KL = 2 / beta
    (``kl_scale[loss]`` / beta where given).

    With ``prompts`` > 0 each job also writes per-prompt scores (0 or 1) whose mean is its win rate;
    a prompt's difficulty is shared by every job (as the sample bank's prompts are).
    """
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(size=prompts)
    for loss, b0 in peaks.items():
        for beta in betas:
            for seed in seeds:
                truth = 0.8 - curvature * (math.log(beta) - math.log(b0)) ** 2
                kl = (kl_scale or {}).get(loss, 2.0) / beta
                if prompts:
                    scores = (difficulty < truth + noise * rng.standard_normal()).astype(float)
                    win, job_se = float(scores.mean()), float(scores.std(ddof=1) / math.sqrt(prompts))
                else:
                    win, job_se = truth + noise * rng.standard_normal(), noise if se is None else se
                history = [(100, {"val/win_rate": win, "val/win_rate_se": job_se, "val/kl_token": kl})]
                job = write_job(root, loss=loss, beta=beta, seed=seed, seeded=True, history=history)
                if prompts:
                    line = json.dumps({"step": 100, "win_rate": scores.tolist()})
                    (job / PER_PROMPT_FILE).write_text(line + "\n")
    return root


def test_the_fit_recovers_the_vertex_of_a_parabola_in_log_beta():
    x = np.log(GRID)
    rows = np.stack([0.8 - 0.05 * (x - math.log(b0)) ** 2 for b0 in (0.13, 0.004, 3.0, 0.05)])
    best, edge = fit_peak(x, rows)
    assert np.exp(best[0]) == pytest.approx(0.13) and edge[0] == 0  # off the grid's points: the vertex
    assert np.exp(best[3]) == pytest.approx(0.05) and edge[3] == 0
    assert edge[1] == -1 and np.exp(best[1]) == pytest.approx(0.01)  # below the grid: its lower edge
    assert edge[2] == 1 and np.exp(best[2]) == pytest.approx(1.0)


@pytest.mark.parametrize("prompts", [0, 256])
def test_fitted_best_beta_and_its_interval_cover_a_known_peak(tmp_path, prompts):
    b0 = 0.13
    jobs = collect(peaked_sweep(tmp_path / "sweep", {"logistic": b0}, prompts=prompts)).jobs
    grid_list, _ = grids(jobs, WIN)
    (best,), how = best_betas(grid_list, replicates=1000)
    assert ("per-prompt" in how) == bool(prompts)  # the prompt bootstrap used the scores where written
    assert abs(math.log(best.best / b0)) < math.log(1.5)  # within a factor 1.5 on a grid of factor-2.5 steps
    assert best.low < b0 < best.high and best.low < best.best < best.high
    assert best.high / best.low < 10  # an interval, not the whole grid
    assert best.claimable and best.note == ""


def test_the_prompt_bootstrap_is_paired_across_betas(tmp_path):
    """Shared prompts: resampling them moves every beta's win rate together, so the best beta moves less
    than with independent draws of the same standard errors."""
    jobs = collect(peaked_sweep(tmp_path / "sweep", {"logistic": 0.13}, seeds=(0,), prompts=400, noise=0.0)).jobs
    paired, _ = best_betas(grids(jobs, WIN)[0], replicates=1000)
    unpaired, how = best_betas(grids(jobs, WIN, per_prompt=False)[0], replicates=1000)
    assert how.startswith("parametric")
    assert paired[0].high / paired[0].low < unpaired[0].high / unpaired[0].low


def test_a_grid_that_does_not_bracket_the_optimum_claims_no_shift(tmp_path):
    sweep = peaked_sweep(tmp_path / "sweep", {"logistic": 0.002, "squared": 0.1}, betas=(0.01, 0.03, 0.1, 0.3, 1.0))
    report = make_report(sweep)
    text = report.path.read_text()
    best = {b.loss: b for b in report.claims.bests}
    assert best["logistic"].edge == -1 and not best["logistic"].claimable
    assert best["squared"].claimable
    note = "best β at the grid's lower edge: extend the grid below 0.01; no β shift is claimed for this loss"
    assert best["logistic"].note == note
    assert f"> **⚠ logistic: {note}.**" in text
    ratio = report.claims.ratio
    assert not ratio.judged and math.isnan(ratio.measured) and "logistic" in ratio.problem
    assert ratio.excluded == {"logistic": "best β at an edge of the grid"}
    assert "Claim 2 (best β moves as f''(0)/|f'(0)|): **inconclusive**: No slope: fewer than two values" in text
    assert "Measured ratio" not in text and "**No ratio is claimed" in text


def test_the_ratio_of_two_known_peaks_is_measured_against_theory(tmp_path):
    b0 = 0.06
    sweep = peaked_sweep(tmp_path / "sweep", {"logistic": 2 * b0, "squared": b0, "hinge": 0.3})
    report = analyse(collect(sweep), replicates=1000)
    ratio = report.claims.ratio
    assert ratio.theory == pytest.approx(2.0)  # from the registry: (f''/|f'|) 1 over 1/2
    assert ratio.low_group == (0.5, ["logistic"]) and ratio.high_group == (1.0, ["squared"])
    assert abs(math.log(ratio.measured / 2)) < math.log(1.3)
    assert ratio.low < 2 < ratio.high and ratio.contains_theory
    assert ratio.low > 1 and "**consistent**: Slope" in verdict(report.claims)
    assert "also contains 1" not in verdict(report.claims)
    assert "hinge" in ratio.excluded and "f''(0) = 0" in ratio.excluded["hinge"]


def test_a_ratio_far_from_theory_is_reported_as_inconsistent(tmp_path):
    sweep = peaked_sweep(tmp_path / "sweep", {"logistic": 0.05, "squared": 0.2}, noise=0.002)  # ratio 1/4
    report = make_report(sweep)
    ratio = report.claims.ratio
    assert ratio.measured == pytest.approx(0.25, rel=0.2) and ratio.high < 2 and ratio.contains_theory is False
    assert "(best β moves as f''(0)/|f'(0)|): **inconsistent**" in report.path.read_text()


def test_frontier_gap_by_hand():
    a = Frontier("logistic", np.array([1.0, 3.0]), np.array([0.6, 0.8]), np.array([0.01, 0.01]))
    b = Frontier("squared", np.array([2.0, 4.0]), np.array([0.6, 0.7]), np.array([0.02, 0.02]))
    # Common KL range [2, 3]. At 2: a = 0.7, b = 0.6; at 3: a = 0.8, b = 0.65. SE sqrt(0.01² + 0.02²).
    gap = frontier_gap([a, b])
    assert (gap.higher, gap.lower, gap.kl) == ("logistic", "squared", 3.0)
    assert gap.gap == pytest.approx(0.15) and gap.z == pytest.approx(0.15 / math.sqrt(0.0005))
    far = Frontier("savage", np.array([10.0, 12.0]), np.array([0.1, 0.9]), np.array([0.01, 0.01]))
    assert frontier_gap([a, far]) is None  # no common KL range: nothing compared
    assert frontier_gap([a, b, far]).skipped == ["logistic–savage", "squared–savage"]


def test_frontiers_from_jobs_take_the_larger_of_seed_and_evaluation_errors(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, win in ((0, 0.70), (1, 0.72)):
        history = [(10, {"val/win_rate": win, "val/win_rate_se": 0.03, "val/kl_token": 2.0})]
        write_job(sweep, loss="logistic", beta=0.1, seed=seed, seeded=True, history=history)
    (front,) = frontiers(collect(sweep).jobs, Metric("val/kl_token"), WIN)
    # sd over seeds / sqrt(2) = 0.01, evaluation SE / sqrt(2) = 0.0212: the larger.
    assert front.se[0] == pytest.approx(0.03 / math.sqrt(2)) and front.quality[0] == pytest.approx(0.71)


def verdict_of(sweep) -> str:
    text = make_report(sweep).path.read_text()
    assert "### Are the frontiers alike?" in text and "- **Outcome:" in text
    return next(line for line in text.splitlines() if line.startswith("**Verdict.**"))


def test_the_verdict_states_overlapping_frontiers(tmp_path):
    """Theory's picture: the same frontier, reached at twice the beta (KL falls with beta * f''(0)/|f'(0)|);
    the noise (0.003) is well inside the evaluation's SE (0.01)."""
    betas = tuple(0.01 * 2**k for k in range(8))  # doubling: logistic's KLs are squared's, one beta up
    peaks = {"logistic": 0.12, "squared": 0.06}
    sweep = peaked_sweep(tmp_path / "sweep", peaks, betas, noise=0.003, se=0.01, kl_scale={"logistic": 4.0})
    verdict = verdict_of(sweep)
    assert "Claim 1 (similar trade-offs): **similar** within ±0.1:" in verdict
    assert "Claim 2 (best β moves as f''(0)/|f'(0)|): **consistent**: Slope" in verdict
    assert "theory 2. No loss is off theory's line." in verdict


def test_the_verdict_states_frontiers_that_differ(tmp_path):
    """The same KL at each beta but peaks at different betas: squared reaches its peak at twice logistic's KL."""
    sweep = peaked_sweep(tmp_path / "sweep", {"logistic": 0.12, "squared": 0.06})
    assert "Claim 1 (similar trade-offs): **differ**: the frontiers are not the same; logistic above squared" in (
        verdict_of(sweep)
    )
    record = json.loads((sweep / "claims.json").read_text())
    assert record["claim_1"]["verdict"] == "differ" and record["claim_1"]["pair"] == ["logistic", "squared"]
    assert record["claim_1"]["margin"] == 0.1 and record["claim_1"]["interval"][0] > 0
    assert {"verdict", "ratio", "interval", "theory", "slope", "slope_interval"} <= set(record["claim_2"])
    assert set(record["best_beta"]) == {"logistic", "squared"}


def test_noise_wider_than_the_margin_is_inconclusive(tmp_path):
    """Identical frontiers measured with an evaluation SE of 0.05: no gap excludes zero, none is shown small."""
    betas = tuple(0.01 * 2**k for k in range(8))
    sweep = peaked_sweep(
        tmp_path / "sweep", {"logistic": 0.12, "squared": 0.06}, betas, noise=0.0, se=0.05, kl_scale={"logistic": 4.0}
    )
    test = analyse(collect(sweep)).claims.frontier
    assert test.verdict == "inconclusive" and test.widest > test.margin
    assert test.band[0] < 0 < test.band[1]  # no band excludes zero, the largest gap's included


def test_exact_claims_have_no_interval():
    betas = [0.1, 0.3, 1.0, 3.0]
    claims = exact_claims(
        {
            "logistic": (betas, [-((math.log(b) - math.log(0.6)) ** 2) for b in betas]),
            "exponential": (betas, [-((math.log(b) - math.log(0.3)) ** 2) for b in betas]),
        }
    )
    best = {b.loss: b for b in claims.bests}
    assert best["logistic"].best == pytest.approx(0.6) and math.isnan(best["logistic"].low)
    assert claims.ratio.measured == pytest.approx(2.0) and claims.ratio.contains_theory is None
    assert beta_ratio(claims.bests[:1]) is None  # one group only: nothing to compare


def test_where_the_offline_regularizer_stops_tracking_the_kl():
    kl = [0.0, 1.0, 2.0, 4.0, 8.0]
    # R_mu / KL: 0.5, 0.5, 0.3, 0.1625: more than 2x below its start at the last validation only.
    assert departure(kl, [0.0, 0.5, 1.0, 1.2, 1.3]) == 4
    assert departure(kl, [0.0, 0.5, 1.1, 2.5, 4.5]) is None  # within 2x all along
    assert departure(kl, [0.0, 0.5, 3.0, 2.0, 4.0]) == 2  # either way


def test_the_regularizer_figure_draws_every_completed_job(tmp_path):
    sweep = collect(synthetic_sweep(tmp_path / "sweep", losses=("logistic", "squared"), betas=(0.1, 1.0), seeds=(0,)))
    figure = regularizer_vs_kl(histories(sweep, completed_jobs(sweep)), Metric("val/kl_token"))
    assert len([line for line in figure.axes[0].get_lines() if len(line.get_xdata()) > 1]) == 4
    with pytest.raises(MissingMetric):
        regularizer_vs_kl(histories(sweep, completed_jobs(sweep)), None)


def bandit_run(loss, beta, win, mu="full"):
    ratio = member_ratio(loss)
    curve = {"val/win_rate": [(0, 0.5), (100, win)], "val/kl": [(0, 0.0), (100, 1.0 / beta)]}
    return BanditRun(loss, beta, "bradley_terry", mu, ratio, curve)


def test_the_bandit_claims_use_the_same_fit_on_exact_values():
    betas = (0.1, 0.2, 0.4, 0.8, 1.6)
    runs = [bandit_run("logistic", b, 0.9 - 0.1 * math.log(b / 0.5) ** 2) for b in betas]
    runs += [bandit_run("exponential", b, 0.9 - 0.1 * math.log(b / 0.25) ** 2) for b in betas]
    runs += [bandit_run("squared", b, 0.9 - 0.1 * math.log(b / 0.01) ** 2) for b in betas]  # below the grid
    runs += [bandit_run("hinge", b, 0.7) for b in betas]
    text = claims_markdown(runs)
    assert "## bradley-terry labels, mu = full" in text
    assert "| logistic | — | 0.1, 0.2, 0.4, 0.8, 1.6 | 1 | 0.4 | 0.5 | — |" in text  # the vertex, exactly
    assert "> **⚠ squared: best β at the grid's lower edge: extend the grid below 0.1;" in text
    assert "- **Measured ratio: 2; theory: 2.**" in text  # logistic 0.5 over exponential 0.25; squared left out
    assert "- Left out: squared (best β at an edge of the grid)" in text
    flat = "| hinge | — | 0.1, 0.2, 0.4, 0.8, 1.6 | 1 | 0.1 | — | — | 0 | — | the quality is the same at every β"
    assert flat in text  # a flat curve has no best β, not one at the lower edge
    assert "(exact values, no interval)" in text
    single = claims_markdown([bandit_run("squared", 0.5, 0.8)])  # one run: no fit, no ratio
    assert "only 1 β with a value: no fit" in single and "Measured ratio" not in single


def test_a_lower_is_better_quality_is_fitted_at_its_minimum(tmp_path):
    sweep = tmp_path / "sweep"
    for beta in GRID:
        loss = 0.2 + 0.05 * (math.log(beta) - math.log(0.13)) ** 2  # val/loss: lower is better, least at 0.13
        write_job(sweep, loss="logistic", beta=beta, history=[(10, {"val/loss": loss, "val/kl_token": 1 / beta})])
    (best,), _ = best_betas(grids(collect(sweep).jobs, Metric("val/loss"))[0], replicates=0)
    assert best.best == pytest.approx(0.13) and best.claimable


def test_per_prompt_scores_that_disagree_with_the_logged_value_are_not_used(tmp_path):
    sweep = peaked_sweep(tmp_path / "sweep", {"logistic": 0.13}, betas=(0.05, 0.1, 0.2), seeds=(0,), prompts=64)
    job = sorted(sweep.iterdir())[0]
    (job / PER_PROMPT_FILE).write_text(json.dumps({"step": 100, "win_rate": [1.0] * 64}) + "\n")  # mean 1
    grid_list, _ = grids(collect(sweep).jobs, WIN)
    used = [value.scores is not None for cell in grid_list[0].jobs for value in cell]
    assert used.count(False) == 1 and used.count(True) == 2
    assert "for 2 jobs, N(value, se) for the rest" in best_betas(grid_list, replicates=10)[1]


def test_the_command_prints_the_verdict_and_the_best_beta_table_flags_edges(tmp_path, capsys):
    sweep = peaked_sweep(tmp_path / "sweep", {"logistic": 0.002, "squared": 0.1}, betas=(0.01, 0.03, 0.1, 0.3, 1.0))
    assert report_main([str(sweep), "--wandb", "off"]) == 0
    out = capsys.readouterr().out
    assert "Verdict. Claim 1 (similar trade-offs):" in out and "No β shift is claimed for logistic" in out
    text = (sweep / "report.md").read_text()
    best = text.split("\n## Best β per loss\n", 1)[1].split("\n## ", 1)[0]
    assert "| logistic | 0.01 |" in best and "best β at the grid's lower edge: extend the grid below 0.01 |" in best


def test_an_interval_that_holds_both_theory_and_no_shift_says_it_does_not_resolve_the_shift(tmp_path):
    sweep = synthetic_sweep(tmp_path / "sweep", losses=("logistic", "savage", "squared"))
    claims = analyse(collect(sweep)).claims
    assert claims.ratio.low < 1 < 2 < claims.ratio.high
    assert "It also contains 1 (no shift): the sweep does not resolve the shift" in verdict(claims)
