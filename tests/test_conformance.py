"""Conformance of every scoring path on tiny random instances of the families transformers ships.

For each family and attention implementation: summed log-probs (right and left padding, packed rows,
the cached reference) equal a by-hand log_softmax over the model's own ``model(...).logits`` on each
row alone, and the start-up checks decided what the table below says (a path they switched off is
shown to be wrong on that model, so the fallback is needed, not spurious). The sampler's scores and
its token-level KL equal the same sums from ``model(...).logits``. T5 (encoder-decoder) is scored
from its own logits. Families or attentions transformers cannot build are listed with the reason.
"""

import pytest
import torch
import transformers

from gpo_lab.eval.draw import POLICY_STREAM, prompt_uniforms
from gpo_lab.eval.sampling import sample_responses, score_responses
from gpo_lab.models.reference_logps import compute_reference_logps
from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.fast_path_report import ENCODER_DECODER, check_fast_paths
from gpo_lab.scoring.logprobs import (
    full_response_logits,
    projected_response_logits,
    projects_hidden_states_linearly,
)
from gpo_lab.scoring.packing import PackedPairs, supports_flat_packing, supports_prefix_sharing
from gpo_lab.scoring.segment_attention import SEGMENT_SDPA
from gpo_lab.scoring.seq2seq import Seq2SeqPairs
from tests.helpers.families import FAMILIES, VOCAB, build

ATTENTIONS = ("sdpa", "eager")
TOLERANCE = 1e-4  # nats, float32 against float64 by hand
WRONG = 1e-3  # a fast path the check switched off is at least this wrong on the probe below

# family: (response-only projection on, prefix sharing on, flat packing on under sdpa), as the start-up checks decide.
EXPECTED = {
    "llama": (True, True, True),
    "mistral_sliding_window": (True, False, False),  # window 20: the 4D mask cannot express it
    "mixtral": (True, True, True),
    "qwen2": (True, True, True),
    "qwen3": (True, True, True),
    "qwen3_moe": (True, True, True),
    "gemma": (True, True, True),
    "gemma2": (False, False, False),  # logit soft-capping; sliding window 12
    "gemma3": (False, False, False),  # logit soft-capping; sliding window 12
    "phi3": (True, True, True),
    "phi": (True, True, True),
    "gpt2": (True, True, True),
    "gpt_neox_pythia": (True, True, True),
    "opt": (True, True, True),
    "falcon": (True, True, False),  # its layers do not pass keyword arguments on to the attention
    "granite": (False, True, True),  # logits divided by logits_scaling
    "granite_moe": (False, True, True),
    "cohere": (False, True, True),  # logits multiplied by logit_scale
    "olmo2": (True, True, True),
    "stablelm": (True, True, False),  # its layers do not pass keyword arguments on to the attention
    "starcoder2": (True, False, False),  # sliding window 24
    "bloom": (True, False, False),  # ALiBi from a 2D mask: a 4D one is refused
    "gpt_neo_local": (True, False, False),  # local attention, window 10
    "llama4_chunked": (False, False, False),  # chunked attention (12); its decoder returns no last_hidden_state
}
UNBUILDABLE = {  # (family, attention): why transformers refuses it
    ("gemma2", "sdpa"): "does not support an attention implementation through torch.nn.functional.scaled_dot",
    ("bloom", "sdpa"): "does not support an attention implementation through torch.nn.functional.scaled_dot",
    ("gpt_neo_local", "sdpa"): "does not support an attention implementation through torch.nn.functional.scaled_dot",
}
CASES = [(f, a) for f in FAMILIES for a in ATTENTIONS if (f, a) not in UNBUILDABLE]

_generator = torch.Generator().manual_seed(3)
# Rows that cross every window above (10 to 24 tokens), and short ones: (prompt, chosen, rejected).
PAIRS = [
    tuple(torch.randint(1, VOCAB, (n,), generator=_generator).tolist() for n in lengths)
    for lengths in ((30, 6, 9), (3, 34, 2), (5, 4, 3))
]
COLUMNS = dict(zip(("prompt_ids", "chosen_ids", "rejected_ids"), map(list, zip(*PAIRS))))  # the encoded dataset's
ROWS = [(p, c) for p, c, _ in PAIRS] + [(p, r) for p, _, r in PAIRS]  # batch order: chosen, then rejected


def log_distributions(model, prompt, response) -> torch.Tensor:
    """log_softmax of ``model(...).logits`` at the positions predicting ``response``, the row alone, float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(prompt) + list(response)])).logits[0].double()
    return torch.log_softmax(logits, -1)[len(prompt) - 1 : -1]


def by_hand(model, rows) -> torch.Tensor:
    return torch.tensor(
        [log_distributions(model, p, r).gather(-1, torch.tensor(r)[:, None]).sum().item() for p, r in rows],
        dtype=torch.float64,
    )


def assert_equal(values: torch.Tensor, truth: torch.Tensor) -> None:
    torch.testing.assert_close(values.double(), truth, atol=TOLERANCE, rtol=0)


def wrongness(fast, truth: torch.Tensor) -> float:
    """How far a switched-off fast path is from the truth (infinite when it cannot even run)."""
    try:
        with torch.no_grad():
            return (fast().double() - truth).abs().max().item()
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return float("inf")


def test_the_suite_covers_the_families():
    assert set(EXPECTED) == set(FAMILIES) and len(FAMILIES) >= 15
    assert all(family in FAMILIES and attention in ATTENTIONS for family, attention in UNBUILDABLE)


@pytest.mark.parametrize(("family", "attention"), sorted(UNBUILDABLE))
def test_families_transformers_cannot_build_say_why(family, attention):
    with pytest.raises(ValueError, match=UNBUILDABLE[(family, attention)]):
        build(family, attention)


@pytest.mark.parametrize(("family", "attention"), CASES)
def test_every_scoring_path_equals_the_models_own_logits(family, attention):
    model = build(family, attention)
    truth = by_hand(model, ROWS)
    projection, packing, flat = EXPECTED[family]
    flat = flat and attention == "sdpa"
    with torch.no_grad():
        assert_equal(PlainPairs.from_rows(ROWS, pad_id=0).score(model), truth)
        assert_equal(PlainPairs.from_rows(ROWS, pad_id=0, side="left").score(model), truth)
        assert_equal(PackedPairs.from_pairs(PAIRS, pad_id=0).score(model), truth)
        cached = compute_reference_logps(model, COLUMNS, pad_id=0, batch_size=2)  # longest first, two batches
        assert_equal(cached.T.reshape(-1), truth)

    assert projects_hidden_states_linearly(model) == projection
    if not projection:
        batch = PlainPairs.from_rows(ROWS, pad_id=0)
        mask = batch.response_mask[:, 1:].bool() & batch.attention_mask[:, 1:].bool()
        full = full_response_logits(model, batch.input_ids, batch.attention_mask, mask).detach()
        assert (
            wrongness(lambda: projected_response_logits(model, batch.input_ids, batch.attention_mask, mask), full)
            > WRONG
        )
    assert supports_prefix_sharing(model) == packing
    if not packing:
        assert wrongness(lambda: PackedPairs.from_pairs(PAIRS, pad_id=0).score_shared(model), truth) > WRONG
    assert supports_flat_packing(model) == flat
    assert model.config._attn_implementation == (SEGMENT_SDPA if flat else attention)  # switched back when off
    switches = []
    model.set_attn_implementation = switches.append  # once decided, a later batch switches nothing
    assert supports_flat_packing(model) == flat and not switches
    del model.set_attn_implementation
    if flat:
        with torch.no_grad():
            assert_equal(PackedPairs.from_pairs(PAIRS, pad_id=0).score_flat(model), truth)
    elif packing and attention == "sdpa":
        assert wrongness(lambda: PackedPairs.from_pairs(PAIRS, pad_id=0).score_flat(model), truth) > WRONG
    report = check_fast_paths(model)
    assert report[f"prefix_sharing [attention {attention}, weights float32, device cpu]"].startswith(
        "on" if packing else "off: "
    )
    if packing and attention == "sdpa":
        assert report["flat_packing [attention sdpa, weights float32, device cpu]"].startswith(
            "on" if flat else "off: "
        )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sampled_scores_and_token_kl_equal_the_models_own_logits(family):
    attention = next(a for a in ATTENTIONS if (family, a) not in UNBUILDABLE)
    policy, reference = build(family, attention, seed=0), build(family, attention, seed=1)
    prompts = [list(p) for p, _, _ in PAIRS]  # 30, 3 and 5 tokens: the sampler left-pads them together
    uniforms = prompt_uniforms(0, POLICY_STREAM, range(len(prompts)), 5)
    responses = sample_responses(policy, prompts, max_new_tokens=5, eos_token_id=VOCAB - 1, uniforms=uniforms)
    assert all(1 <= len(r) <= 5 for r in responses)
    scores = score_responses(policy, reference, prompts, responses, pad_token_id=0)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        log_p, log_q = log_distributions(policy, prompt, response), log_distributions(reference, prompt, response)
        target = torch.tensor(response)[:, None]
        assert scores["policy_logps"][i].item() == pytest.approx(log_p.gather(-1, target).sum().item(), abs=TOLERANCE)
        assert scores["reference_logps"][i].item() == pytest.approx(
            log_q.gather(-1, target).sum().item(), abs=TOLERANCE
        )
        kl = (log_p.exp() * (log_p - log_q)).sum().item()
        assert scores["token_kl"][i].item() == pytest.approx(kl, abs=TOLERANCE)


def tiny_t5(attention: str) -> torch.nn.Module:
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    config._attn_implementation = attention
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(config).eval()


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_t5_scores_equal_its_own_logits(attention):
    model = tiny_t5(attention)
    truth = []
    for prompt, response in ROWS:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[0, *response[:-1]]]))
        log_probs = torch.log_softmax(logits.logits[0].double(), -1)
        truth.append(log_probs.gather(-1, torch.tensor(response)[:, None]).sum().item())
    with torch.no_grad():
        assert_equal(Seq2SeqPairs.from_rows(ROWS, pad_id=0).score(model), torch.tensor(truth, dtype=torch.float64))
    assert check_fast_paths(model) == {"seq2seq": ENCODER_DECODER}
