"""Flat-packed pairs: the segment attention equals softmax attention written out by hand, and a model
scoring pairs in one unpadded row gives the plain rows' log-probs and gradients."""

from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.packing import PackedPairs, supports_flat_packing
from gpo_lab.scoring.segment_attention import (
    SDPA,
    SEGMENT_SDPA,
    PairSegments,
    attention_name,
    placeholder_mask,
    segment_sdpa_forward,
    use_segment_attention,
)
from tests.helpers.families import VOCAB, build

# (prompt, chosen, rejected) lengths: one-token responses and prompts, and a rejected longer than its prompt.
LENGTHS = [(4, 1, 3), (1, 5, 2), (6, 2, 1), (2, 3, 7)]


def by_hand(query, key, value, lengths, scale):
    """softmax(q k^T * scale) v over the keys each query may see, written out from the definition (float64):
    a token sees its own pair's prompt and its own segment's earlier tokens and itself."""
    pair, segment = [], []
    for index, (p, c, r) in enumerate(lengths):
        pair += [index] * (p + c + r)
        segment += [0] * p + [1] * c + [2] * r
    width = len(pair)
    allowed = torch.zeros(width, width, dtype=torch.bool)
    for t in range(width):
        for s in range(t + 1):
            allowed[t, s] = pair[s] == pair[t] and segment[s] in (0, segment[t])
    scores = (query @ key.transpose(-1, -2)) * scale
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return (weights @ value).transpose(1, 2)


def random_qkv(heads=4, kv_heads=2, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = sum(map(sum, LENGTHS))
    shapes = [(1, heads, width, dim), (1, kv_heads, width, dim), (1, kv_heads, width, dim)]
    return [torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True) for shape in shapes]


def test_segment_attention_equals_softmax_by_hand_in_values_and_gradients():
    query, key, value = random_qkv()
    module = SimpleNamespace(num_key_value_groups=2)
    segments = PairSegments(*zip(*LENGTHS))
    fast, _ = segment_sdpa_forward(module, query, key, value, None, scaling=0.3, pair_segments=segments)
    expanded = [tensor.repeat_interleave(2, dim=1) for tensor in (key, value)]  # grouped-query heads
    slow = by_hand(query, *expanded, LENGTHS, 0.3)
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=0)
    weights = torch.randn(slow.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast_grads = torch.autograd.grad((fast * weights).sum(), (query, key, value))
    slow_grads = torch.autograd.grad((slow * weights).sum(), (query, key, value))
    for f, s in zip(fast_grads, slow_grads):
        torch.testing.assert_close(f, s, atol=1e-12, rtol=0)


def test_without_segments_it_is_transformers_sdpa():
    query, key, value = (tensor.float().detach() for tensor in random_qkv(kv_heads=4))
    module = SimpleNamespace(num_key_value_groups=1, is_causal=True)
    mask = torch.ones(1, 1, query.shape[2], query.shape[2], dtype=torch.bool).tril()
    for attention_mask in (None, mask):
        ours, _ = segment_sdpa_forward(module, query, key, value, attention_mask, scaling=0.5)
        theirs, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=0.5)
        assert torch.equal(ours, theirs)


def test_the_placeholder_mask_is_refused_without_segments_and_unsupported_options_are_named():
    query, key, value = (tensor.detach() for tensor in random_qkv(kv_heads=4))
    module = SimpleNamespace(num_key_value_groups=1, is_causal=True)
    width = query.shape[2]
    placeholder = placeholder_mask(width, query.device)
    assert placeholder.shape == (1, 1, width, width) and placeholder.untyped_storage().nbytes() == 1
    with pytest.raises(ValueError, match="do not pass pair_segments"):
        segment_sdpa_forward(module, query, key, value, placeholder)
    segments = PairSegments(*zip(*LENGTHS))
    with pytest.raises(ValueError, match="sliding_window"):
        segment_sdpa_forward(module, query, key, value, placeholder, pair_segments=segments, sliding_window=4)
    with pytest.raises(ValueError, match="one row of"):
        segment_sdpa_forward(module, query[:, :, 1:], key[:, :, 1:], value[:, :, 1:], None, pair_segments=segments)


def tiny(family="llama", attention="sdpa"):
    """The conformance suite's tiny ``family`` model (grouped-query heads), in float64."""
    return build(family, attention).double()


def batch(seed=2):
    generator = torch.Generator().manual_seed(seed)
    pairs = [tuple(torch.randint(1, VOCAB, (n,), generator=generator).tolist() for n in triple) for triple in LENGTHS]
    return pairs, PackedPairs.from_pairs(pairs, pad_id=0)


def plain_rows(pairs):
    """Every response in its own prompt + response row: the slow, obvious layout."""
    return PlainPairs.from_rows([(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs], pad_id=0)


def gradients(model, score):
    model.zero_grad()
    (score(model) * torch.arange(1.0, 9.0, dtype=torch.float64)).sum().backward()
    return torch.cat([parameter.grad.flatten() for parameter in model.parameters()])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_model_scores_flat_pairs_as_plain_rows_in_values_and_gradients(checkpointing):
    model = tiny()
    pairs, packed = batch()
    assert supports_flat_packing(model) and model.config._attn_implementation == SEGMENT_SDPA
    assert attention_name(model) == SDPA
    if checkpointing:
        model.activation_checkpointing_enable()
        model.train()
    seen = []
    model.model.embed_tokens.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    torch.testing.assert_close(packed.score(model), plain_rows(pairs).score(model), atol=1e-10, rtol=0)
    real_tokens = sum(map(sum, LENGTHS))
    assert seen[0] == (1, real_tokens) and real_tokens < packed.input_ids.numel()  # one row, no padding
    flat, plain = gradients(model, packed.score_flat), gradients(model, lambda m: plain_rows(pairs).score(m))
    torch.testing.assert_close(flat, plain, atol=1e-6 * plain.abs().max().item(), rtol=0)
    torch.testing.assert_close(flat, gradients(model, packed.score_shared), atol=1e-10, rtol=0)


def test_a_switched_model_generates_as_before():
    model = tiny()
    prompts = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (prompts != 0).long()
    options = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    before = model.generate(prompts, **options)
    assert use_segment_attention(model)
    assert torch.equal(model.generate(prompts, **options), before)


def test_models_that_cannot_use_it_keep_their_attention_and_padded_rows():
    eager = tiny("llama", "eager")
    assert not supports_flat_packing(eager) and eager.config._attn_implementation == "eager"
    windowed = tiny("mistral_sliding_window")
    pairs, packed = batch()
    torch.testing.assert_close(packed.score(windowed), plain_rows(pairs).score(windowed), atol=1e-10, rtol=0)
    assert not supports_flat_packing(windowed) and windowed.config._attn_implementation == SDPA
    with pytest.raises(ValueError, match="supports_flat_packing"):
        packed.score_flat(windowed)
