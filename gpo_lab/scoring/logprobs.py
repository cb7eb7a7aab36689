"""Summed response-token log-probabilities, log pi(y|x), for a batch of prompt+response rows.

Only positions that predict a response token are projected onto the vocabulary, so the prompt
never materialises full-vocabulary logits (the dominant cost for long prompts). That fast path is
checked against the model's own logits once per model (:mod:`gpo_lab.scoring.fast_path_checks`),
and projects the response positions a chunk at a time (:mod:`gpo_lab.scoring.chunks`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpo_lab.scoring.chunks import logprob_chunk, model_logprobs, positions_per_chunk, target_logprobs
from gpo_lab.scoring.fast_path_checks import checked, mismatch, probe_ids, probe_span, tolerance
from gpo_lab.scoring.rows import padded_rows

PROJECTION = "response_projection"  # the fast path's name in start-up checks and summary.json's ``fast_paths``


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so left and right padding give the same values."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def projects_hidden_states_linearly(model) -> bool:
    """Whether the response-only projection applies to ``model`` and gives its own logits.

    It needs a decoder-only model with a decoder and an output layer; whether the output layer
    applied to the decoder's hidden states really is ``model(...).logits`` (no scaling, soft-capping
    or other post-processing) is checked once per model and context, not assumed from its family.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if not hasattr(model, "get_decoder") or model.get_output_embeddings() is None:
        return False
    return checked(model, PROJECTION, check_projection)


def _model_inputs(input_ids, attention_mask):
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_mask(attention_mask),
        "use_cache": False,
    }


def response_hidden_states(model, input_ids, attention_mask, targets_mask) -> torch.Tensor:
    """The decoder's hidden states (N, d) at the positions that predict a response token, flattened."""
    hidden = model.get_decoder()(**_model_inputs(input_ids, attention_mask)).last_hidden_state
    return hidden[:, :-1][targets_mask]


def projected_response_logits(model, input_ids, attention_mask, targets_mask) -> torch.Tensor:
    """The fast path: the output layer applied to the decoder's hidden states at the scored positions only."""
    return model.get_output_embeddings()(response_hidden_states(model, input_ids, attention_mask, targets_mask))


def full_response_logits(model, input_ids, attention_mask, targets_mask) -> torch.Tensor:
    """The slow obvious path: the model's own ``forward(...).logits`` at the scored positions."""
    return model(**_model_inputs(input_ids, attention_mask)).logits[:, :-1][targets_mask]


def check_projection(model) -> str | None:
    """None when the projection gives the model's own log-softmax at every scored position of a probe
    batch whose rows cross every attention window, else why not."""
    span = probe_span(model)
    lengths = [(2, span), (span // 2, span - span // 2), (1, 3)]
    ids = probe_ids(model, [n for pair in lengths for n in pair])
    rows = [(ids[2 * i], ids[2 * i + 1]) for i in range(len(lengths))]
    device = next(model.parameters()).device
    input_ids, attention_mask, response_mask = (tensor.to(device) for tensor in padded_rows(rows, pad_id=0))
    targets_mask = response_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    fast = projected_response_logits(model, input_ids, attention_mask, targets_mask)
    slow = full_response_logits(model, input_ids, attention_mask, targets_mask)
    return mismatch(
        "projected log-probs", F.log_softmax(fast.float(), -1), F.log_softmax(slow.float(), -1), tolerance(model)
    )


def response_logits(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary logits at exactly the positions that predict a response token, flattened, and
    the (rows, T - 1) mask of the predicted tokens.

    ``response_mask[i, t]`` is 1 where token t of row i belongs to the response; token t is
    predicted by position t - 1, so the first token of a row is never scored.
    """
    targets_mask = response_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    path = projected_response_logits if projects_hidden_states_linearly(model) else full_response_logits
    return path(model, input_ids, attention_mask, targets_mask), targets_mask


def response_targets(input_ids: torch.Tensor, targets_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The row and the token id of every predicted response token, flattened in the order of :func:`response_logits`."""
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets_mask)[targets_mask]
    return rows, input_ids[:, 1:][targets_mask]


def row_sums(
    values: torch.Tensor, rows: torch.Tensor, num_rows: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Flattened per-token values summed into the row each belongs to."""
    return torch.zeros(num_rows, dtype=dtype, device=values.device).index_add(0, rows, values.to(dtype))


def summed_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    num_rows: int,
    normalized: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The log-prob kernel of every layout: log pi(y|x) per row, the SUM of its tokens' log-probs.

    ``logits`` (N, V) are taken at the N scored positions only, ``targets`` (N,) are the tokens they
    predict and ``rows`` (N,) the output row each token counts towards.
    """
    return row_sums(target_logprobs(logits, targets, normalized), rows, num_rows, dtype)


def token_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens, flattened, with the row each belongs to (float32).

    On the fast path the positions are projected a chunk at a time (:mod:`gpo_lab.scoring.chunks`).
    """
    targets_mask = response_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    rows, targets = response_targets(input_ids, targets_mask)
    if projects_hidden_states_linearly(model):
        hidden = response_hidden_states(model, input_ids, attention_mask, targets_mask)
        return model_logprobs(model, hidden, targets), rows
    return target_logprobs(full_response_logits(model, input_ids, attention_mask, targets_mask), targets), rows


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """log pi(y|x) for every row: the SUM of its response-token log-probs (float32)."""
    values, rows = token_logprobs(model, input_ids, attention_mask, response_mask)
    return row_sums(values, rows, input_ids.shape[0])


def _scored_positions(model, input_ids, attention_mask, targets_mask) -> tuple[torch.Tensor, torch.nn.Module | None]:
    """What to project at the scored positions: the hidden states and the output layer on the fast path, else the
    model's own logits (and no layer)."""
    if projects_hidden_states_linearly(model):
        return response_hidden_states(model, input_ids, attention_mask, targets_mask), model.get_output_embeddings()
    return full_response_logits(model, input_ids, attention_mask, targets_mask), None


@torch.no_grad()
def response_token_terms(
    policy, reference, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per response token, flattened (float32): log pi(y_t), log pi_ref(y_t) and the exact next-token
    KL(pi || pi_ref) given the prefix, with the row each token belongs to.

    Both distributions are made a chunk of positions at a time (the policy's ``logprob_chunk``), so no
    [tokens x vocabulary] tensor exists at once on the fast path.
    """
    targets_mask = response_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    rows, targets = response_targets(input_ids, targets_mask)
    (p_in, p_head), (q_in, q_head) = (
        _scored_positions(m, input_ids, attention_mask, targets_mask) for m in (policy, reference)
    )
    vocabulary = int(getattr(getattr(policy, "config", None), "vocab_size", 0) or 1)
    size = positions_per_chunk(logprob_chunk(policy), vocabulary, input_ids.device) or max(1, targets.shape[0])
    policy_logps, reference_logps, kl = [], [], []
    for start in range(0, targets.shape[0], size):
        part = slice(start, start + size)
        log_p, log_q = (
            F.log_softmax((values[part] if head is None else head(values[part])).float(), dim=-1)
            for values, head in ((p_in, p_head), (q_in, q_head))
        )
        policy_logps.append(log_p.gather(-1, targets[part, None]).squeeze(-1))
        reference_logps.append(log_q.gather(-1, targets[part, None]).squeeze(-1))
        kl.append((log_p.exp() * (log_p - log_q)).sum(-1))
    empty = torch.zeros(0, device=input_ids.device)
    return (*(torch.cat(v) if v else empty for v in (policy_logps, reference_logps, kl)), rows)  # type: ignore[return-value]
