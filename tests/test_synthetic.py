"""The synthetic task and its study: the golden reward's documented properties, the behaviour and
the Bradley-Terry labels, the disk cache (SFT trained once), and the whole path to summary.json."""

import itertools
import json
import math
import random
import threading
import time
from types import SimpleNamespace

import pytest
import torch

import gpo_lab.eval.sample_bank as sample_bank_module
import gpo_lab.tasks.synthetic.sft as sft_module
from gpo_lab.errors import ConfigError
from gpo_lab.eval import WinRateCallback
from gpo_lab.eval.sample_bank import find_bank
from gpo_lab.store.cache import cached_entry
from gpo_lab.store.records import read_metrics
from gpo_lab.tasks.synthetic import NoisyBehaviour, TopicTask
from gpo_lab.tasks.synthetic.pairs import (
    PAIRS_FILE,
    PAIRS_VERSION,
    PairSettings,
    generate_pairs,
    label_pairs,
    preference_probability,
)
from gpo_lab.tasks.synthetic.sft import SFTSettings, sft_policy
from gpo_lab.tasks.synthetic.task import FILLER_WORDS
from tests.helpers.models import TINY_MODEL
from tests.helpers.runs import TINY_STUDY, compose_config, run_training

TASK = TopicTask()
PROMPT = "about apple river stone :"


# ----------------------------------------------------------------- the golden reward
def test_golden_reward_by_hand():
    # coverage 1 per prompt topic named, -1 per other topic, -0.5 per repeated word, -0.1 per word
    assert TASK.reward(PROMPT, "apple river stone") == pytest.approx(3 - 0.3)
    assert TASK.reward(PROMPT, "") == 0
    assert TASK.reward(PROMPT, "the apple and") == pytest.approx(1 - 0.3)
    assert TASK.reward(PROMPT, "apple cloud") == pytest.approx(1 - 1 - 0.2)
    assert TASK.reward(PROMPT, "apple apple river") == pytest.approx(2 - 0.5 - 0.3)
    assert TASK.reward(PROMPT, "the the the") == pytest.approx(-1.0 - 0.3)


def test_golden_reward_ignores_word_order():
    words = "the apple cloud river apple".split()
    rewards = {TASK.reward(PROMPT, " ".join(order)) for order in itertools.permutations(words)}
    assert len({round(r, 9) for r in rewards}) == 1


def test_best_response_is_optimal_and_every_edit_of_it_hurts():
    rng = random.Random(0)
    vocabulary = [*TASK.topics, *FILLER_WORDS]
    for prompt in TASK.prompts(50, seed=0):
        topics = TASK.prompt_topics(prompt)
        best = TASK.best_response(prompt)
        assert TASK.reward(prompt, best) == pytest.approx(TASK.max_reward(prompt)) == pytest.approx(0.9 * len(topics))
        words = best.split()
        other_topic = next(t for t in TASK.topics if t not in topics)
        edits = {
            "drop a topic": (words[1:], -0.9),
            "add a filler": (words + ["the"], -0.1),
            "drift off topic": (words + [other_topic], -1.1),
            "repeat a topic": (words + [words[0]], -0.6),
        }
        for name, (edited, change) in edits.items():
            assert TASK.reward(prompt, " ".join(edited)) - TASK.max_reward(prompt) == pytest.approx(change), name
        for _ in range(200):  # nothing random does better: the maximum is not reached by saying more
            response = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, TASK.max_response_words)))
            assert TASK.reward(prompt, response) <= TASK.max_reward(prompt) + 1e-9


def test_prompts_are_seeded_distinct_and_in_the_vocabulary():
    prompts = TASK.prompts(100, seed=1)
    assert prompts == TASK.prompts(100, seed=1) and prompts != TASK.prompts(100, seed=2)
    assert len(set(prompts)) == 100
    tokenizer = TASK.tokenizer()
    for prompt in prompts:
        topics = TASK.prompt_topics(prompt)
        assert TASK.min_prompt_topics <= len(topics) <= TASK.max_prompt_topics and len(set(topics)) == len(topics)
        assert tokenizer.unk_token_id not in tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError):
        TASK.prompt_topics("apple river")


def test_held_out_topic_sets_take_a_share_of_every_size():
    held_out = TASK.held_out_topic_sets(0.25, seed=0)
    assert held_out == TASK.held_out_topic_sets(0.25, seed=0) != TASK.held_out_topic_sets(0.25, seed=1)
    for size in range(TASK.min_prompt_topics, TASK.max_prompt_topics + 1):
        total = math.comb(TASK.num_topics, size)  # 120, 560 and 1820 sets of 2, 3 and 4 of the 16 topics
        assert sum(len(s) == size for s in held_out) == round(0.25 * total)
    with pytest.raises(ConfigError, match="held_out_fraction"):
        TASK.held_out_topic_sets(1.0, seed=0)


def test_evaluation_prompts_are_disjoint_from_training_prompts():
    """No validation prompt shares its topic set (so its best response) with any training prompt."""
    settings = PairSettings(num_train_prompts=3000, num_eval_prompts=256, source="behaviour", seed=3)
    pairs = generate_pairs(TASK, NoisyBehaviour(), torch.nn.Linear(1, 1), None, settings)
    train = {frozenset(TASK.prompt_topics(r["prompt"])) for r in pairs["train"]}
    held_out = {frozenset(TASK.prompt_topics(r["prompt"])) for r in pairs["validation"]}
    assert len(pairs["train"]) > 2500 and len(held_out) > 150
    assert not train & held_out
    sizes = {len(s) for s in held_out}
    assert sizes == {2, 3, 4}  # the two-topic prompts are held out too, in their share
    assert held_out <= TASK.held_out_topic_sets(settings.held_out_fraction, seed=3)
    assert pairs["stats"]["mu_held_out_topic_sets"] == len(TASK.held_out_topic_sets(0.25, seed=3))
    assert PAIRS_VERSION >= 2  # caches of pairs drawn before the split are not reused


def test_task_refuses_settings_without_a_trade_off():
    with pytest.raises(ConfigError, match="coverage"):
        TopicTask(coverage=0.1, length=0.1)
    with pytest.raises(ConfigError):
        TopicTask(num_topics=3, max_prompt_topics=4)


def test_behaviour_is_seeded_sloppy_and_in_the_vocabulary():
    behaviour = NoisyBehaviour()
    demos = behaviour.demonstrations(TASK, 3000, random.Random(0))
    assert demos[:50] == behaviour.demonstrations(TASK, 50, random.Random(0))
    tokenizer = TASK.tokenizer()
    covered = named = 0
    for prompt, response in demos:
        words = response.split()
        assert 1 <= len(words) <= TASK.max_response_words
        assert tokenizer.unk_token_id not in tokenizer(response, add_special_tokens=False)["input_ids"]
        covered += TASK.reward_terms(prompt, response)["covered"]
        named += len(TASK.prompt_topics(prompt))
    assert covered / named == pytest.approx(behaviour.cover, abs=0.03)  # each topic named with probability `cover`
    rewards = [TASK.reward(p, r) for p, r in demos]
    assert 0 < sum(rewards) / len(rewards) < 0.5 * sum(TASK.max_reward(p) for p, _ in demos) / len(demos)


# ----------------------------------------------------------------- labels
def test_bradley_terry_probability():
    assert preference_probability(1.0, 0.0, 0.5) == pytest.approx(1 / (1 + math.exp(-2)))
    assert preference_probability(0.0, 1.0, 0.5) == pytest.approx(1 / (1 + math.exp(2)))
    assert preference_probability(-800.0, 0.0, 1.0) == pytest.approx(0.0)  # no overflow
    assert [preference_probability(a, b, 0) for a, b in ((1, 0), (0, 1), (2, 2))] == [1.0, 0.0, 0.5]


def test_labels_follow_bradley_terry():
    better, worse = "apple river", "apple the"  # rewards 1.8 and 0.8
    n = 4000
    rows, dropped = label_pairs(TASK, [PROMPT] * n, [better] * n, [worse] * n, 1.0, random.Random(0))
    p = 1 / (1 + math.exp(-1.0))
    share = sum(r["chosen"] == better for r in rows) / n
    assert abs(share - p) < 3 * math.sqrt(p * (1 - p) / n)
    assert all((r["reward_chosen"], r["reward_rejected"]) in ((1.8, 0.8), (0.8, 1.8)) for r in rows)
    rows, _ = label_pairs(TASK, [PROMPT] * 50, [worse] * 50, [better] * 50, 0.0, random.Random(0))
    assert all(r["chosen"] == better for r in rows)  # deterministic labels: the better one always wins
    rows, dropped = label_pairs(
        TASK, [PROMPT] * 3, ["apple", "apple", ""], ["apple", "river", "river"], 0.5, random.Random(0)
    )
    assert len(rows) == 1 and dropped == {"identical": 1, "empty": 1}


# ----------------------------------------------------------------- the cache
def test_cache_entry_is_built_once_by_concurrent_jobs(tmp_path):
    builds, results = [], []

    def build(directory):
        builds.append(1)
        time.sleep(0.3)  # long enough for every other job to arrive and wait on the lock
        (directory / "value.txt").write_text("42")

    def job():
        results.append(cached_entry(tmp_path, "thing", {"a": 1}, build))

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert sorted(built for _, built in results) == [False, False, False, True]
    assert {path for path, _ in results} == {results[0][0]} and (results[0][0] / "value.txt").read_text() == "42"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".thing") and p.is_dir()]  # no temp left


def test_failed_build_leaves_no_entry(tmp_path):
    def build(directory):
        (directory / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached_entry(tmp_path, "thing", {"a": 1}, build)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]
    path, built = cached_entry(tmp_path, "thing", {"a": 1}, lambda d: (d / "ok.txt").write_text("ok"))
    assert built and (path / "ok.txt").is_file()


def test_sft_policy_is_trained_once_then_loaded(tmp_path, monkeypatch):
    behaviour, tokenizer = NoisyBehaviour(), TASK.tokenizer()
    settings = SFTSettings(steps=3, batch_size=8, warmup_steps=1)
    first, info = sft_policy(TASK, behaviour, tokenizer, TINY_MODEL, settings, tmp_path)
    assert info["sft_trained_now"]
    weights = tmp_path / f"sft-{info['sft_key']}" / sft_module.WEIGHTS_FILE
    stamp = weights.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached SFT policy was trained again")

    monkeypatch.setattr(sft_module, "train_sft", no_training)
    second, again = sft_policy(TASK, behaviour, tokenizer, TINY_MODEL, settings, tmp_path)
    assert not again["sft_trained_now"] and again["sft_key"] == info["sft_key"]
    assert weights.stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    with pytest.raises(AssertionError, match="trained again"):  # other settings: another entry
        sft_policy(TASK, behaviour, tokenizer, TINY_MODEL, SFTSettings(steps=4, batch_size=8), tmp_path)


# ----------------------------------------------------------------- a seed is a whole replicate
def test_a_seed_draws_its_own_sft_policy_and_pairs_unless_fixed():
    """``seed`` reaches the SFT and the pairs, so a sweep's seeds vary them; a number given for either fixes it."""
    for seed in (0, 3):
        cfg = compose_config(["+experiment=synthetic", f"seed={seed}"]).synthetic
        assert cfg.sft.seed == cfg.pairs.seed == seed
    fixed = compose_config(["+experiment=synthetic", "seed=3", "synthetic.sft.seed=0", "synthetic.pairs.seed=0"])
    assert fixed.synthetic.sft.seed == fixed.synthetic.pairs.seed == 0 and fixed.seed == 3


def test_two_seeds_train_two_sft_policies_under_two_keys(tmp_path):
    behaviour, tokenizer = NoisyBehaviour(), TASK.tokenizer()
    runs = [
        sft_policy(TASK, behaviour, tokenizer, TINY_MODEL, SFTSettings(steps=2, batch_size=4, seed=s), tmp_path)
        for s in (0, 1)
    ]
    (first, info0), (second, info1) = runs
    assert info0["sft_trained_now"] and info1["sft_trained_now"] and info0["sft_key"] != info1["sft_key"]
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


# ----------------------------------------------------------------- the callbacks without their parts
def test_callbacks_name_what_is_missing():
    with pytest.raises(ConfigError, match="judge"):
        WinRateCallback(judge=None)
    with pytest.raises(ConfigError, match="sample_bank"):
        find_bank(SimpleNamespace(callbacks=[]), "kl")


# ----------------------------------------------------------------- the whole study path
REGULARIZATION_KEYS = ("val/win_rate", "val/kl_seq", "val/kl_token", "val/offline_reg")


@pytest.mark.slow
def test_study_writes_every_measure_to_the_summary_reuses_the_sft_and_replicates_by_seed(tmp_path, monkeypatch):
    draws = []
    real_generate_bank = sample_bank_module.generate_bank

    def counting_generate_bank(*args, **kwargs):
        if kwargs["seed"] == 0:  # the validation prompts' bank (other prompt sets draw on other streams)
            draws.append(kwargs["step"])
        return real_generate_bank(*args, **kwargs)

    monkeypatch.setattr(sample_bank_module, "generate_bank", counting_generate_bank)
    real_train_sft = sft_module.train_sft
    cache = [f"synthetic.cache_dir={tmp_path / 'cache'}", f"reference_cache.dir={tmp_path / 'reference_logps'}"]
    summary = run_training(
        [*TINY_STUDY, *cache, "trainer.max_steps=4", "trainer.val_check_interval=2"], tmp_path / "first"
    )
    assert summary["status"] == "completed"
    for key in REGULARIZATION_KEYS:
        assert key in summary["final"] and f"{key}_se" in summary["final"], key
        assert summary["final"][f"{key}_se"] >= 0 and summary["best"][key]["step"] in (2, 4)
    assert 0 <= summary["final"]["val/win_rate"] <= 1 and summary["final"]["val/kl_token"] >= 0
    assert summary["best"]["val/win_rate"]["mode"] == "max" and summary["best"]["val/kl_token"]["mode"] == "min"
    records = read_metrics(tmp_path / "first" / "metrics.jsonl")
    assert [r["step"] for r in records if "val/kl_seq" in r] == [2, 4]
    assert [r["step"] for r in records if "val/win_rate" in r] == [2, 4]
    assert draws == [2, 4]  # one bank per evaluation, shared by the KL and win-rate callbacks
    data = summary["data"]
    assert data["sft_trained_now"] and data["pairs_generated_now"] and data["validation_pairs"] >= 10
    assert data["reference_logps_train"] == data["reference_logps_validation"] == "computed"

    # A second run on the same cache trains no SFT and generates no pairs; a bank only every 4 steps.
    draws.clear()
    monkeypatch.setattr(sft_module, "train_sft", lambda *a, **k: pytest.fail("SFT trained again"))
    summary = run_training(
        [
            *TINY_STUDY,
            *cache,
            "loss=squared",
            "trainer.max_steps=6",
            "trainer.val_check_interval=2",
            "callbacks.sample_bank.every_n_steps=4",
        ],
        tmp_path / "second",
    )
    assert not summary["data"]["sft_trained_now"] and not summary["data"]["pairs_generated_now"]
    assert summary["data"]["sft_key"] == data["sft_key"]
    assert summary["data"]["reference_logps_train"] == "cached"  # the same reference and pairs: one computation
    assert draws == [4, 6]  # multiples of 4, and the end
    records = read_metrics(tmp_path / "second" / "metrics.jsonl")
    assert [r["step"] for r in records if "val/offline_reg" in r] == [2, 4, 6]
    assert [r["step"] for r in records if "val/kl_token" in r] == [4, 6]

    # Another seed is another replicate: its own SFT policy and its own pairs, under keys of their own.
    monkeypatch.setattr(sft_module, "train_sft", real_train_sft)
    other = run_training([*TINY_STUDY, *cache, "seed=1", "trainer.max_steps=2"], tmp_path / "third")["data"]
    assert other["sft_trained_now"] and other["pairs_generated_now"]
    assert other["sft_key"] != data["sft_key"] and other["pairs_key"] != data["pairs_key"]
    pairs = [
        json.loads((tmp_path / "cache" / f"pairs-{d['pairs_key']}" / PAIRS_FILE).read_text()) for d in (data, other)
    ]
    assert pairs[0]["train"] != pairs[1]["train"] and pairs[0]["validation"] != pairs[1]["validation"]
