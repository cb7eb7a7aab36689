"""Prefix-shared packed batches give the plain log-probs, losses and gradients, and fall back when they cannot."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer
from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.packing import (
    CHOSEN,
    PAD,
    PROMPT,
    REJECTED,
    PackedPairs,
    allowed_attention,
    attention_mask_4d,
    pack_pairs,
    supports_prefix_sharing,
)

# Prompts of different lengths, responses longer and shorter than each other, one of length 1.
PAIRS = [
    ([1, 5, 9, 11, 12, 13], [20, 21, 22], [30, 31]),
    ([1, 7], [30, 31, 32, 33, 34], [40]),
    ([1, 2, 3], [4], [5, 6, 7, 8, 9, 10]),
]


def plain_batch(pairs):
    """The reference layout built independently of the packing code: B chosen rows, then B rejected rows."""
    return PlainPairs.from_rows([(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs], pad_id=0)


def test_layout_of_a_packed_row():
    batch = PackedPairs.from_pairs([([7, 8], [9], [10, 11]), ([7], [12, 13], [14])], pad_id=0)
    assert batch.input_ids.tolist() == [[7, 8, 9, 10, 11], [7, 12, 13, 14, 0]]
    # The rejected segment restarts at the position right after the prompt.
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 3], [0, 1, 2, 1, 0]]
    assert batch.segment_ids.tolist() == [
        [PROMPT, PROMPT, CHOSEN, REJECTED, REJECTED],
        [PROMPT, CHOSEN, CHOSEN, REJECTED, PAD],
    ]
    assert batch.num_pairs == 2 and batch.reference_logps is None


def test_the_former_name_builds_the_same_batch():
    assert pack_pairs == PackedPairs.from_pairs


def test_attention_mask_by_hand():
    batch = PackedPairs.from_pairs([([7, 8], [9, 10], [11])], pad_id=0)
    allowed = allowed_attention(batch.segment_ids)[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],  # prompt
        [1, 1, 0, 0, 0],  # prompt
        [1, 1, 1, 0, 0],  # chosen sees the prompt and itself
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # rejected sees the prompt and itself, never the chosen segment
    ]
    additive = attention_mask_4d(batch.segment_ids, "eager", torch.float32)[0, 0]
    assert additive.dtype == torch.float32  # eager adds the mask to the scores: a boolean one would be ignored
    assert ((additive == 0) == torch.tensor(allowed, dtype=torch.bool)).all()
    assert (additive[torch.tensor(allowed) == 0] == torch.finfo(torch.float32).min).all()
    assert attention_mask_4d(batch.segment_ids, "sdpa", torch.float32).dtype == torch.bool


def test_padding_never_attends_to_nothing():
    batch = PackedPairs.from_pairs([([7], [8], [9]), ([7, 7, 7], [8, 8], [9, 9])], pad_id=0)
    assert allowed_attention(batch.segment_ids).any(-1).all()  # no all-masked row, hence no NaN


class Bigram(torch.nn.Module):
    """Next-token logits depend only on the current token; the mask and positions are irrelevant."""

    def __init__(self):
        super().__init__()
        table = torch.zeros(4, 4)
        table[2, 3] = math.log(3)  # p(. | 2) = [1, 1, 1, 3] / 6
        table[3, 0] = math.log(2)  # p(. | 3) = [2, 1, 1, 1] / 5
        table[0, 1] = math.log(5)  # p(. | 0) = [1, 5, 1, 1] / 8
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return SimpleNamespace(logits=self.table[input_ids])


def test_hand_computed_first_rejected_token_is_predicted_by_the_last_prompt_token():
    # prompt [1, 2], chosen [3, 0], rejected [3, 1]: in the row [1, 2, 3, 0, 3, 1] the first rejected
    # token follows the chosen token 0, but must be scored as p(3 | 2), not p(3 | 0).
    batch = PackedPairs.from_pairs([([1, 2], [3, 0], [3, 1]), ([2], [0], [1])], pad_id=0)
    values = batch.score_shared(Bigram())
    expected = [
        math.log(3 / 6) + math.log(2 / 5),  # chosen of pair 0: p(3|2) p(0|3)
        math.log(1 / 6),  # chosen of pair 1: p(0|2)
        math.log(3 / 6) + math.log(1 / 5),  # rejected of pair 0: p(3|2) p(1|3)
        math.log(1 / 6),  # rejected of pair 1: p(1|2)
    ]
    torch.testing.assert_close(values, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_unpack_gives_the_plain_rows():
    reference = torch.arange(6.0)
    unpacked = PackedPairs.from_pairs(PAIRS, pad_id=0, reference_logps=reference).unpack()
    assert isinstance(unpacked, PlainPairs) and unpacked.reference_logps is reference
    for key in ("input_ids", "attention_mask", "response_mask"):
        assert getattr(unpacked, key).tolist() == getattr(plain_batch(PAIRS), key).tolist(), key


def tiny_llama(attention):
    torch.manual_seed(0)
    return tiny_causal_lm(byte_tokenizer(), hidden_size=32, num_layers=2, num_heads=2, attn_implementation=attention)


def tiny_gpt2(attention):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    config._attn_implementation = attention
    return GPT2LMHeadModel(config)


def loss_and_grads(model, logps):
    """Logistic GPO loss against a fixed reference, and the gradient of every parameter."""
    half = logps.shape[0] // 2
    reference = torch.linspace(-30.0, -10.0, logps.shape[0])
    rho = (logps[:half] - reference[:half]) - (logps[half:] - reference[half:])
    loss = GPOLoss("logistic").per_example(rho, 0.1).mean()
    model.zero_grad()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_prefix_sharing_equals_the_plain_computation(build, attention):
    model = build(attention).train()
    assert supports_prefix_sharing(model)
    plain_logps = plain_batch(PAIRS).score(model)
    plain_loss, plain_grads = loss_and_grads(model, plain_logps)
    packed_logps = PackedPairs.from_pairs(PAIRS, pad_id=0).score(model)
    packed_loss, packed_grads = loss_and_grads(model, packed_logps)

    torch.testing.assert_close(packed_logps, plain_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed_loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert packed_grads.keys() == plain_grads.keys() and len(plain_grads) > 0
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


class IgnoresPackingInputs(torch.nn.Module):
    """A causal LM that uses its own positions and a plain causal mask (as ALiBi-style models might)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        plain_mask = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        return self.inner(input_ids=input_ids, attention_mask=plain_mask, use_cache=False)


def test_a_model_that_ignores_the_packing_inputs_falls_back_to_plain_rows():
    model = IgnoresPackingInputs(tiny_llama("sdpa")).eval()
    packed = PackedPairs.from_pairs(PAIRS, pad_id=0)
    assert not supports_prefix_sharing(model)
    wrong = packed.score_shared(model)
    plain = plain_batch(PAIRS).score(model)
    assert (wrong - plain).abs().max() > 1e-3  # what forcing prefix sharing on it would give
    torch.testing.assert_close(packed.score(model), plain, rtol=1e-6, atol=1e-6)


def test_models_without_a_dense_mask_attention_fall_back():
    model = tiny_llama("sdpa")
    model.config._attn_implementation = "flash_attention_2"
    assert not supports_prefix_sharing(model)
    assert not supports_prefix_sharing(Bigram())


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="non-empty prompt"):
        PackedPairs.from_pairs([([], [1], [2])], pad_id=0)


@pytest.mark.slow
def test_training_with_packing_and_cached_reference_matches_plain_rows(tmp_path):
    """The whole training path: packed batches + cached reference log-probs vs plain rows + live reference."""
    from tests.helpers.runs import run_training

    common = ["+experiment=smoke", "trainer.max_steps=4", "trainer.val_check_interval=4", "optim.lr=1e-3"]
    fast = run_training([*common, "data.packing=true", f"reference_cache.dir={tmp_path / 'cache'}"], tmp_path / "fast")
    plain = run_training([*common, "data.packing=false", "reference_cache.enabled=false"], tmp_path / "plain")
    assert fast["data"]["reference_logps_train"] == "computed" and "reference_logps_train" not in plain["data"]
    assert plain["final"]["val/rho_mean"] != 0  # the policy moved, so equal metrics are not trivial
    for metric, value in plain["final"].items():
        assert fast["final"][metric] == pytest.approx(value, rel=1e-4, abs=1e-5), metric
