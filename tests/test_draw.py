"""The samplers' draws: the inverse CDF by hand, one stream per prompt, and a bank that does not depend
on the batch it is drawn in or on the share of the prompts a rank takes."""

import math

import torch

from gpo_lab.eval.draw import POLICY_STREAM, REFERENCE_STREAM, draw_next, prompt_uniforms
from gpo_lab.eval.sampling import encode_prompts, generate_bank, sample_responses
from gpo_lab.models.reference import freeze
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import word_tokenizer

PAD, EOS = 7, 3


def draw(probs: list[float], uniforms: list[float]) -> list[int]:
    logits = torch.tensor([probs] * len(uniforms)).log()
    finished = torch.zeros(len(uniforms), dtype=torch.bool)
    lengths = torch.full((len(uniforms),), 9)
    return draw_next(logits, torch.tensor(uniforms), finished, lengths, 0, PAD, EOS).tolist()


def test_a_token_is_the_first_whose_cumulative_probability_exceeds_the_uniform():
    # CDF of (0.2, 0.5, 0.3): 0.2, 0.7, 1.0
    assert draw([0.2, 0.5, 0.3], [0.0, 0.1, 0.19, 0.21, 0.69, 0.71, 0.999]) == [0, 0, 0, 1, 1, 2, 2]
    # A token of probability 0 is never drawn, not even at the uniform where the CDF stands still.
    assert draw([0.5, 0.0, 0.5], [0.5, 0.4999, 0.5001]) == [2, 0, 2]


def test_eos_ends_a_row_and_finished_rows_get_padding():
    logits = torch.tensor([[0.1, 0.1, 0.1, 0.7], [0.1, 0.1, 0.1, 0.7], [0.7, 0.1, 0.1, 0.1]]).log()
    finished = torch.tensor([False, True, False])
    lengths = torch.full((3,), 5)
    tokens = draw_next(logits, torch.tensor([0.9, 0.9, 0.05]), finished, lengths, 2, PAD, EOS)
    assert tokens.tolist() == [EOS, PAD, 0]
    assert finished.tolist() == [True, True, False] and lengths.tolist() == [3, 5, 5]


def test_draw_frequencies_match_the_probabilities():
    probs = [0.05, 0.6, 0.1, 0.25]
    n = 20000
    tokens = torch.tensor(draw(probs, prompt_uniforms(0, POLICY_STREAM, range(n), 1)[:, 0].tolist()))
    for token, p in enumerate(probs):
        frequency = (tokens == token).double().mean().item()
        assert abs(frequency - p) < 4 * math.sqrt(p * (1 - p) / n), (token, frequency, p)


def test_each_prompt_has_its_own_stream():
    whole = prompt_uniforms(5, POLICY_STREAM, range(6), 4)
    assert whole.shape == (6, 4) and whole.dtype == torch.float64 and 0 <= whole.min() and whole.max() < 1
    assert torch.equal(prompt_uniforms(5, POLICY_STREAM, [4, 1], 4), whole[[4, 1]])  # not its neighbours'
    assert torch.equal(prompt_uniforms(5, POLICY_STREAM, [2], 2), whole[2:3, :2])  # a prefix of a longer draw
    for other in (prompt_uniforms(5, REFERENCE_STREAM, range(6), 4), prompt_uniforms(6, POLICY_STREAM, range(6), 4)):
        assert not torch.isclose(other, whole).any()  # another stream or seed: other numbers everywhere


def setting():
    tokenizer = word_tokenizer(["a", "b", "c"])
    torch.manual_seed(0)
    policy = freeze(tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=64))
    torch.manual_seed(1)
    reference = freeze(tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=64))
    prompts = ["a", "b a c", "c", "a a b b", "b", "c a", "a b c a b"]  # left padding of several widths
    return tokenizer, policy, reference, prompts, encode_prompts(tokenizer, prompts)


def test_a_prompts_sample_does_not_depend_on_its_batch_or_its_share():
    tokenizer, policy, _, _, prompt_ids = setting()
    eos = tokenizer.eos_token_id

    def sample(ids, indices, batch_size):
        uniforms = prompt_uniforms(0, POLICY_STREAM, indices, 12)
        return sample_responses(policy, ids, 12, eos, uniforms, pad_token_id=0, batch_size=batch_size)

    whole = sample(prompt_ids, range(7), batch_size=7)
    assert len({tuple(r) for r in whole}) > 1  # the draws are not all alike
    assert sample(prompt_ids, range(7), batch_size=1) == whole
    assert sample(prompt_ids, range(7), batch_size=3) == whole
    # Two ranks' shares (prompts 0-2 and 3-6, each with its prompts' own streams) make up the whole.
    assert sample(prompt_ids[:3], range(3), 2) + sample(prompt_ids[3:], range(3, 7), 4) == whole


def test_a_bank_is_the_same_in_any_batch_size():
    tokenizer, policy, reference, prompts, prompt_ids = setting()
    banks = [
        generate_bank(policy, reference, tokenizer, prompts, prompt_ids, 12, seed=3, batch_size=b, progress=False)
        for b in (7, 2)
    ]
    assert banks[0].policy_ids == banks[1].policy_ids and banks[0].reference_ids == banks[1].reference_ids
    assert banks[0].policy_ids != banks[0].reference_ids  # two streams, two models
    for key in ("policy_logps", "reference_logps", "token_kl"):
        torch.testing.assert_close(getattr(banks[0], key), getattr(banks[1], key), rtol=1e-6, atol=1e-6)
