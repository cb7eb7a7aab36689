"""Response log-probs in chunks of positions: the values and gradients of the model's own logits in every
layout, and no [tokens x vocabulary] tensor made in the forward or the backward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.chunks import (
    AUTO_BUDGET,
    logprob_chunk,
    positions_per_chunk,
    projected_logprobs,
    set_logprob_chunk,
)
from gpo_lab.scoring.logprobs import position_ids_from_mask, response_token_terms, token_logprobs
from gpo_lab.scoring.packing import PackedPairs, supports_prefix_sharing

VOCAB = 3000


def model(vocab: int = VOCAB, hidden: int = 16, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        pad_token_id=0,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def pairs(vocab: int = VOCAB, seed: int = 1):
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(1, vocab, (n,), generator=g).tolist()

    return [(ids(p), ids(c), ids(r)) for p, c, r in [(5, 7, 3), (2, 9, 6), (8, 4, 11)]]


def by_own_logits(policy, batch: PlainPairs) -> torch.Tensor:
    """The slow obvious path: log_softmax of ``model(...).logits`` at every response token, summed per row."""
    logits = policy(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids_from_mask(batch.attention_mask),
    ).logits
    log_probs = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return (log_probs * (batch.response_mask[:, 1:] * batch.attention_mask[:, 1:])).sum(-1)


def values_and_gradients(policy, score) -> tuple[torch.Tensor, list[torch.Tensor]]:
    policy.zero_grad(set_to_none=True)
    values = score(policy)
    weights = torch.linspace(-1.0, 2.0, values.shape[0])  # every row's gradient counts, with its own weight
    (values * weights).sum().backward()
    return values.detach(), [p.grad.clone() for p in policy.parameters()]


def assert_same(chunked, obvious):
    (values, grads), (expected, expected_grads) = chunked, obvious
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-4)
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("chunk", [1, 4, 7, "auto"])
def test_plain_rows_match_the_models_own_logits(side, chunk):
    policy = set_logprob_chunk(model(), chunk)
    batch = PlainPairs.from_pairs(pairs(), pad_id=0, side=side)
    obvious = values_and_gradients(policy, lambda m: by_own_logits(m, batch))
    assert_same(values_and_gradients(policy, batch.score), obvious)


@pytest.mark.parametrize("chunk", [1, 5, 0])
def test_packed_rows_match_the_models_own_logits(chunk):
    policy = set_logprob_chunk(model(), chunk)
    packed = PackedPairs.from_pairs(pairs(), pad_id=0)
    assert supports_prefix_sharing(policy)
    obvious = values_and_gradients(policy, lambda m: by_own_logits(m, packed.unpack()))
    assert_same(values_and_gradients(policy, packed.score_shared), obvious)


def test_token_logprobs_in_chunks_are_the_one_piece_values():
    batch = PlainPairs.from_pairs(pairs(), pad_id=0)
    inputs = {k: getattr(batch, k) for k in ("input_ids", "attention_mask", "response_mask")}
    one_piece, rows = token_logprobs(set_logprob_chunk(model(), 0), **inputs)
    chunked, chunk_rows = token_logprobs(set_logprob_chunk(model(), 3), **inputs)
    assert torch.equal(rows, chunk_rows) and one_piece.shape == (int(batch.response_mask.sum()) - 0,)
    torch.testing.assert_close(chunked, one_piece, rtol=0, atol=1e-5)


def test_bf16_autocast_chunks_match_one_piece():
    batch = PlainPairs.from_pairs(pairs(), pad_id=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        one_piece = values_and_gradients(set_logprob_chunk(model(), 0), batch.score)
        chunked = values_and_gradients(set_logprob_chunk(model(), 3), batch.score)
    torch.testing.assert_close(chunked[0], one_piece[0], rtol=0, atol=1e-3)
    for grad, want in zip(chunked[1], one_piece[1]):  # bf16 sums of the head's gradient, rounded per chunk
        assert (grad - want).norm() <= 1e-2 * want.norm()


@pytest.mark.parametrize("chunk", [2, 0])
def test_sampler_token_terms_match_full_distributions(chunk):
    """log pi(y_t), log pi_ref(y_t) and the next-token KL, against the two models' own full log-softmax."""
    policy, reference = set_logprob_chunk(model(seed=0), chunk), model(seed=1)
    batch = PlainPairs.from_pairs(pairs(), pad_id=0)
    inputs = (batch.input_ids, batch.attention_mask, batch.response_mask)
    log_p, log_q, kl, rows = response_token_terms(policy, reference, *inputs)
    mask = (batch.response_mask[:, 1:] * batch.attention_mask[:, 1:]).bool()
    with torch.no_grad():
        full_p, full_q = (
            F.log_softmax(m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1], -1)[mask]
            for m in (policy, reference)
        )
    targets = batch.input_ids[:, 1:][mask]
    torch.testing.assert_close(log_p, full_p.gather(-1, targets[:, None]).squeeze(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_q, full_q.gather(-1, targets[:, None]).squeeze(-1), rtol=1e-5, atol=1e-5)
    expected_kl = (full_p.exp() * (full_p - full_q)).sum(-1)
    assert (expected_kl > 0).all()
    torch.testing.assert_close(kl, expected_kl, rtol=1e-4, atol=1e-6)
    assert torch.equal(rows, torch.arange(6)[:, None].expand_as(mask)[mask])


class WrappedHead(torch.nn.Linear):
    """An output layer that is not a plain nn.Linear (as a LoRA-wrapped one): its chunks are checkpointed."""


@pytest.mark.parametrize("head_type", [torch.nn.Linear, WrappedHead])
@pytest.mark.parametrize("bias", [True, False])
def test_projection_kernel_against_log_softmax_in_one_piece(head_type, bias):
    torch.manual_seed(0)
    head = head_type(6, 50, bias=bias)
    hidden = torch.randn(13, 6, requires_grad=True)
    targets = torch.randint(0, 50, (13,))
    weights = torch.randn(13)

    def run(score):
        head.zero_grad(set_to_none=True)
        hidden.grad = None
        values = score()
        (values * weights).sum().backward()
        return values.detach(), [t.grad.clone() for t in (hidden, *head.parameters())]

    obvious = run(lambda: F.log_softmax(head(hidden), -1).gather(-1, targets[:, None]).squeeze(-1))
    chunked = run(lambda: projected_logprobs(head, hidden, targets, 4, 50))
    assert_same(chunked, obvious)
    with torch.no_grad():  # no gradient: no checkpoint, the same values
        torch.testing.assert_close(projected_logprobs(head, hidden, targets, 4, 50), obvious[0])


class LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an operation made, forward and backward alike."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def memory_of_a_training_step(chunk, layout: str) -> tuple[int, int, int]:
    """(largest tensor made, largest tensor saved for backward, scored positions) of one forward + backward."""
    vocab = 20000
    policy = set_logprob_chunk(model(vocab=vocab, hidden=8), chunk)
    batch = PackedPairs.from_pairs(pairs(vocab), pad_id=0)
    batch = batch if layout == "packed" else batch.unpack()
    score = batch.score_shared if layout == "packed" else batch.score
    saved = [0]

    def pack(tensor):
        saved[0] = max(saved[0], tensor.numel())
        return tensor

    score(policy)  # the start-up checks of the fast paths run outside the measurement
    with LargestTensor() as made, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        score(policy).sum().backward()
    return made.largest, saved[0], int(batch.response_lengths().sum()) * vocab


@pytest.mark.parametrize("layout", ["plain", "packed"])
def test_no_tokens_by_vocabulary_tensor_in_forward_or_backward(layout):
    made, saved, tokens_by_vocab = memory_of_a_training_step(8, layout)
    vocab_by_hidden = 20000 * 8  # the output layer's weight and gradient: the largest that must exist
    assert made <= max(8 * 20000, vocab_by_hidden) < tokens_by_vocab / 4
    assert saved <= vocab_by_hidden
    # The measurement sees the one-piece path's (tokens x vocabulary) logits: it can fail.
    made, saved, _ = memory_of_a_training_step(0, layout)
    assert made >= tokens_by_vocab and saved >= tokens_by_vocab


def test_the_chunk_setting():
    assert logprob_chunk(model()) == "auto"
    assert positions_per_chunk("auto", 152064, torch.device("cpu")) == AUTO_BUDGET["cpu"] // 152064 == 110
    assert positions_per_chunk("auto", 152064, torch.device("cuda")) == AUTO_BUDGET["default"] // 152064 == 1765
    assert positions_per_chunk(0, 152064, torch.device("cpu")) is None
    assert positions_per_chunk(None, 152064, torch.device("cpu")) is None
    assert positions_per_chunk(64, 152064, torch.device("cpu")) == 64
    for wrong in (-1, "many", 2.5, True):
        with pytest.raises(ValueError, match="logprob_chunk"):
            set_logprob_chunk(model(), wrong)
