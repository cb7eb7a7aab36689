"""Summed response log-probs against a hand-computed example, with prompt and padding masking."""

import math
from types import SimpleNamespace

import pytest
import torch

from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer
from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.logprobs import row_sums, summed_logprobs


class Bigram(torch.nn.Module):
    """Next-token logits depend only on the current token: W[token]."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return SimpleNamespace(logits=self.table[input_ids])


def bigram():
    # p(. | 2) = [1, 1, 1, 3] / 6, p(. | 3) = [2, 1, 1, 1] / 5, every other row uniform.
    table = [[0.0] * 4 for _ in range(4)]
    table[2][3] = math.log(3)
    table[3][0] = math.log(2)
    return Bigram(table)


@pytest.mark.parametrize("side", ["right", "left"])
def test_hand_computed_sum_over_response_tokens_only(side):
    rows = [([1, 2], [3, 0]), ([2], [3]), ([1, 1, 2], [0])]
    batch = PlainPairs.from_rows(rows, pad_id=0, side=side)
    values = batch.score(bigram())
    expected = [
        math.log(3 / 6) + math.log(2 / 5),  # p(3|2) p(0|3); the prompt tokens 1, 2 do not count
        math.log(3 / 6),  # p(3|2)
        math.log(1 / 6),  # p(0|2)
    ]
    torch.testing.assert_close(values, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_padding_tokens_never_count():
    rows = [([1, 2], [3, 0])]
    short = PlainPairs.from_rows(rows, pad_id=0).score(bigram())
    padded = PlainPairs.from_rows(rows + [([1], [1, 1, 1, 1, 1, 1])], pad_id=3)  # pad with a token that would score
    torch.testing.assert_close(padded.score(bigram())[0], short[0])


def test_masks_of_padded_rows():
    batch = PlainPairs.from_rows([([5, 6], [7]), ([5], [7, 8])], pad_id=0, side="left")
    assert batch.input_ids.tolist() == [[5, 6, 7], [5, 7, 8]]
    batch = PlainPairs.from_rows([([5, 6], [7]), ([5], [7, 8, 9])], pad_id=0, side="left")
    assert batch.input_ids.tolist() == [[0, 5, 6, 7], [5, 7, 8, 9]]
    assert batch.attention_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]


def test_pairs_are_the_chosen_rows_then_the_rejected_rows():
    batch = PlainPairs.from_pairs([([5], [6], [7, 7]), ([8, 8], [9], [4])], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 0], [8, 8, 9], [5, 7, 7], [8, 8, 4]]
    assert batch.response_mask.tolist() == [[0, 1, 0], [0, 0, 1], [0, 1, 1], [0, 0, 1]]
    assert batch.num_pairs == 2


def test_the_kernel_sums_each_rows_log_softmax_at_its_targets():
    logits = torch.tensor([[0.0, math.log(3)], [math.log(2), 0.0], [0.0, 0.0]])
    targets, rows = torch.tensor([1, 1, 0]), torch.tensor([2, 2, 0])
    expected = [math.log(1 / 2), 0.0, math.log(3 / 4) + math.log(1 / 3)]  # row 1 has no token: log 1
    values = summed_logprobs(logits, targets, rows, num_rows=3)
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    log_probs = torch.log_softmax(logits.double(), -1)
    torch.testing.assert_close(
        summed_logprobs(log_probs, targets, rows, 3, normalized=True, dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
    )
    assert row_sums(torch.tensor([1.0, 2.0, 4.0]), rows, 3).tolist() == [4.0, 0.0, 3.0]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return tiny_causal_lm(byte_tokenizer(), hidden_size=32, num_layers=2, num_heads=2).eval()


def test_response_only_projection_equals_full_logits(tiny_model):
    rows = [([1, 5, 9, 11], [20, 21, 22]), ([1, 7], [30, 31, 32, 33, 34])]
    batch = PlainPairs.from_rows(rows, pad_id=0)
    fast = batch.score(tiny_model)
    logits = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    full = (logp * batch.response_mask[:, 1:]).sum(-1)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_left_and_right_padding_agree_on_a_transformer(tiny_model):
    rows = [([1, 5, 9, 11, 12, 13], [20, 21]), ([1, 7], [30, 31, 32])]
    right = PlainPairs.from_rows(rows, pad_id=0, side="right").score(tiny_model)
    left = PlainPairs.from_rows(rows, pad_id=0, side="left").score(tiny_model)
    alone = torch.stack([PlainPairs.from_rows([row], pad_id=0).score(tiny_model)[0] for row in rows])
    torch.testing.assert_close(right, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(left, alone, rtol=1e-5, atol=1e-5)
