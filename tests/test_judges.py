"""Judges and the win rate: ties count one half, position bias cancels when both orders are asked,
the golden judge follows r*, and a reward model scores each (prompt, response) on its own."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from gpo_lab.errors import ConfigError
from gpo_lab.eval.judges import GoldenRewardJudge, PairwiseJudge, RewardJudge, RewardModelJudge, win_rate
from gpo_lab.models.tokenizers import word_tokenizer
from gpo_lab.tasks.synthetic import TopicTask

PROMPT = "about apple river :"


class TableJudge(RewardJudge):
    """Rewards read from a table, to test the comparison rules alone."""

    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.table = table

    def rewards(self, prompts, responses):
        return torch.tensor([self.table[r] for r in responses], dtype=torch.float64)


def test_win_rate_counts_ties_one_half():
    judge = TableJudge({"good": 2.0, "bad": -1.0, "same": 0.5, "same too": 0.5})
    scores = judge.compare([PROMPT] * 4, ["good", "bad", "same", "good"], ["bad", "good", "same too", "good"])
    assert scores.tolist() == [1.0, 0.0, 0.5, 0.5]
    rate, se = win_rate(scores)
    assert rate == 0.5
    # sample std of (1, 0, 1/2, 1/2) is sqrt(1/6); its standard error divides by sqrt(4)
    assert se == pytest.approx(math.sqrt(1 / 6) / 2)
    assert win_rate(torch.tensor([1.0, 1.0, 0.5, 1.0]))[0] == 0.875


def test_tie_tolerance_and_soft_comparison():
    table = {"x": 1.0, "y": 1.0 + 1e-9, "z": 0.0}
    assert TableJudge(table).compare([PROMPT] * 2, ["x", "x"], ["y", "z"]).tolist() == [0.5, 1.0]
    soft = TableJudge(table, temperature=0.5).compare([PROMPT], ["x"], ["z"])
    assert soft.item() == pytest.approx(1 / (1 + math.exp(-2.0)))
    with pytest.raises(ConfigError):
        TableJudge(table, temperature=-1)


def test_golden_judge_follows_the_golden_reward():
    task = TopicTask()
    judge = GoldenRewardJudge(task)
    responses_a = ["apple river", "apple", "apple apple", "river apple"]
    responses_b = ["apple", "apple stone", "apple", "apple river"]
    # r*: 1.8 vs 0.9; 0.9 vs -0.2 (stone is off topic: -1 and a word); 0.3 vs 0.9 (repetition); 1.8 vs 1.8
    assert judge.rewards([PROMPT] * 4, responses_a).tolist() == pytest.approx([1.8, 0.9, 0.3, 1.8])
    assert judge.compare([PROMPT] * 4, responses_a, responses_b).tolist() == [1.0, 1.0, 0.0, 0.5]


def test_pairwise_judge_cancels_position_bias():
    rewards = {"best": 2.0, "good": 1.0, "poor": -1.0}
    bias = 0.15

    def true_preference(first, second):  # in [0.2, 0.8] and antisymmetric: P(a, b) = 1 - P(b, a)
        return 0.2 + 0.6 / (1 + math.exp(rewards[second] - rewards[first]))

    def biased(prompts, firsts, seconds):  # prefers whatever is shown first
        return torch.tensor([true_preference(a, b) + bias for a, b in zip(firsts, seconds)], dtype=torch.float64)

    a, b = ["best", "good", "poor", "good"], ["good", "poor", "best", "good"]
    prompts = [PROMPT] * len(a)
    truth = torch.tensor([true_preference(x, y) for x, y in zip(a, b)], dtype=torch.float64)
    assert torch.allclose(biased(prompts, a, b), truth + bias)  # asked once, the bias shows
    fair = PairwiseJudge(biased).compare(prompts, a, b)
    assert torch.allclose(fair, truth)
    assert fair[-1].item() == pytest.approx(0.5)  # identical responses: a tie, whatever the order
    swapped = PairwiseJudge(biased).compare(prompts, b, a)
    assert torch.allclose(fair + swapped, torch.ones(len(a), dtype=torch.float64))


def test_pairwise_judge_wraps_a_judge():
    judge = PairwiseJudge(TableJudge({"x": 1.0, "z": 0.0}))
    assert judge.compare([PROMPT] * 2, ["x", "z"], ["z", "z"]).tolist() == [1.0, 0.5]


def tiny_classifier(num_labels=1, seed=0):
    tokenizer = word_tokenizer(["about", "apple", "river", ":", "stone", "the"])
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=64,
    )
    return LlamaForSequenceClassification(config), tokenizer


def test_reward_model_judge_scores_each_response_on_its_own():
    model, tokenizer = tiny_classifier()
    judge = RewardModelJudge(model=model, tokenizer=tokenizer, batch_size=2)
    responses = [" apple", " river the stone", " the", " apple river"]
    rewards = judge.rewards([PROMPT] * 4, responses)
    for response, reward in zip(responses, rewards):  # one at a time, no padding: the same score
        ids = tokenizer(PROMPT + response, return_tensors="pt")
        assert reward.item() == pytest.approx(model(**ids).logits[0, 0].item(), abs=1e-5)
    scores = judge.compare([PROMPT] * 4, responses, responses[::-1])
    assert scores.tolist() == [float(rewards[i] > rewards[3 - i]) for i in range(4)]
    assert torch.equal(
        scores + judge.compare([PROMPT] * 4, responses[::-1], responses), torch.ones(4, dtype=torch.float64)
    )
    assert judge.compare([PROMPT], [" apple"], [" apple"]).item() == 0.5


def test_reward_model_judge_shows_progress_when_scoring_takes_more_than_a_few_batches(capsys):
    model, tokenizer = tiny_classifier()
    judge = RewardModelJudge(model=model, tokenizer=tokenizer, batch_size=1)
    judge.rewards([PROMPT] * 4, [" apple"] * 4)
    assert "judge scoring" not in capsys.readouterr().err  # four batches: no bar
    judge.rewards([PROMPT] * 6, [" apple"] * 6)
    err = capsys.readouterr().err
    assert "judge scoring" in err and "6/6" in err


def test_reward_model_judge_with_two_labels_uses_the_log_odds():
    model, tokenizer = tiny_classifier(num_labels=2)
    judge = RewardModelJudge(model=model, tokenizer=tokenizer)
    logits = model(**tokenizer(PROMPT + " apple", return_tensors="pt")).logits[0]
    assert judge.rewards([PROMPT], [" apple"]).item() == pytest.approx((logits[1] - logits[0]).item(), abs=1e-5)


def test_reward_model_judge_refuses_what_cannot_work():
    model, tokenizer = tiny_classifier(num_labels=3)
    with pytest.raises(ConfigError, match="1 output"):
        RewardModelJudge(model=model, tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="judge.name"):
        RewardModelJudge()
