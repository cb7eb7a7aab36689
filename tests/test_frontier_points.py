"""A job's frontier point is one checkpoint, chosen on validation prompts and reported on test prompts."""

from __future__ import annotations

import math
import random
from collections import Counter
from types import SimpleNamespace

import pytest

from gpo_lab.eval.sample_bank import capped_fraction
from gpo_lab.report.analysis import analyse
from gpo_lab.report.collect import collect
from gpo_lab.store.directions import metric_mode
from gpo_lab.store.records import read_metrics
from gpo_lab.tasks.synthetic.task import TopicTask
from tests.helpers.runs import TINY_STUDY, run_training
from tests.helpers.sweeps import write_job

# Step 10 has the best validation win rate; step 15 has both the lowest KL and the best test win rate,
# which a per-metric best would pick (a point no checkpoint reached).
HISTORY = [
    (5, {"val/win_rate": 0.70, "val/kl_token": 2.0, "test/win_rate": 0.62, "test/kl_token": 2.1}),
    (
        10,
        {
            "val/win_rate": 0.80,
            "val/kl_token": 4.0,
            "test/win_rate": 0.66,
            "test/kl_token": 4.2,
            "test/win_rate_se": 0.03,
        },
    ),
    (15, {"val/win_rate": 0.75, "val/kl_token": 1.0, "test/win_rate": 0.71, "test/kl_token": 1.1}),
]


def test_the_point_is_the_best_validation_step_reported_on_test_prompts(tmp_path):
    write_job(tmp_path, loss="logistic", beta=0.1, history=HISTORY)
    job = collect(tmp_path).jobs.iloc[0]
    assert job["best_step/val/win_rate"] == job["best_step/val/kl_token"] == 10
    assert job["best/val/win_rate"] == 0.66 and job["best/val/kl_token"] == 4.2  # step 10's test values
    assert job["best_se/val/win_rate"] == 0.03
    best = analyse(collect(tmp_path), value="best").best.iloc[0]
    assert best["mean"] == 0.66 and best["err"] == 0.03
    final = collect(tmp_path).jobs.iloc[0]
    assert final["final/val/win_rate"] == 0.75  # --value final still reads the last validation


def test_without_test_values_the_point_is_still_one_step(tmp_path):
    history = [(5, {"val/win_rate": 0.8, "val/kl_token": 3.0}), (10, {"val/win_rate": 0.6, "val/kl_token": 1.0})]
    write_job(tmp_path, loss="logistic", beta=0.1, history=history)
    job = collect(tmp_path).jobs.iloc[0]
    assert (job["best/val/win_rate"], job["best/val/kl_token"]) == (0.8, 3.0)  # not the lowest KL, 1.0
    assert metric_mode("test/win_rate") == "max" and metric_mode("test/kl_token") == "min"


def sizes(prompts: list[str]) -> Counter:
    return Counter(len(p.split()) - 2 for p in prompts)


def test_validation_and_test_prompts_are_held_out_disjoint_and_mixed_like_training():
    task, fraction, seed, n = TopicTask(), 0.25, 3, 2000
    validation, test = task.evaluation_prompts(n, fraction, seed)
    held_out = task.held_out_topic_sets(fraction, seed)
    training = task.training_prompts(6000, random.Random(seed), held_out)
    sets = {name: {frozenset(task.prompt_topics(p)) for p in prompts} for name, prompts in
            (("validation", validation), ("test", test), ("training", training))}  # fmt: skip
    assert len(validation) == len(test) == n
    assert not sets["validation"] & sets["test"] and not sets["training"] & (sets["validation"] | sets["test"])
    assert sets["validation"] | sets["test"] <= held_out
    train_mix = sizes(training)
    for prompts in (validation, test):
        mix = sizes(prompts)
        for size in (2, 3, 4):  # two proportions agree within 4 standard errors
            p, q = mix[size] / n, train_mix[size] / len(training)
            pooled = (mix[size] + train_mix[size]) / (n + len(training))
            se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / len(training)))
            assert abs(p - q) < 4 * se, (size, p, q)
    assert task.evaluation_prompts(n, fraction, seed) == (validation, test)


def test_the_capped_fraction_counts_responses_cut_before_their_eos():
    eos = 2
    bank = SimpleNamespace(policy_ids=[[5, 6, 7], [5, 2], [5, 6, 2], [1, 1, 1], [2]])
    # Cut: [5, 6, 7] and [1, 1, 1] (3 tokens, no EOS); [5, 6, 2] ends at its EOS on the last token.
    assert capped_fraction(bank, 3, eos) == pytest.approx(2 / 5)
    assert capped_fraction(bank, 4, eos) == 0.0


@pytest.mark.slow
def test_a_synthetic_run_logs_test_values_and_the_capped_fraction(tmp_path):
    overrides = [
        *TINY_STUDY,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "callbacks.sample_bank.max_new_tokens=3",
    ]
    run_training(overrides, tmp_path)
    record = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "test/win_rate" in r][-1]
    for key in ("test/kl_seq", "test/kl_token", "test/win_rate_se", "val/win_rate", "val/capped_fraction"):
        assert key in record
    assert 0 <= record["val/capped_fraction"] <= 1
