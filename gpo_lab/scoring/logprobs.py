"""Summed response-token log-probabilities, log pi(y|x), for a batch of prompt+response rows.

Only positions that predict a response token are projected onto the vocabulary, so the prompt
never materialises full-vocabulary logits (the dominant cost for long prompts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Models whose logits are not a plain linear projection of the last hidden state.
_POSTPROCESSED_LOGITS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so left and right padding give the same values."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def projects_hidden_states_linearly(model) -> bool:
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if any(getattr(config, key, None) not in (None, 1, 1.0) for key in _POSTPROCESSED_LOGITS):
        return False
    return hasattr(model, "get_decoder") and model.get_output_embeddings() is not None


def response_logits(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary logits at exactly the positions that predict a response token, flattened, and
    the (rows, T - 1) mask of the predicted tokens.

    ``response_mask[i, t]`` is 1 where token t of row i belongs to the response; token t is
    predicted by position t - 1, so the first token of a row is never scored.
    """
    targets_mask = response_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    position_ids = position_ids_from_mask(attention_mask)
    if projects_hidden_states_linearly(model):
        hidden = model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return model.get_output_embeddings()(hidden[:, :-1][targets_mask]), targets_mask
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).logits
    return logits[:, :-1][targets_mask], targets_mask


def response_targets(input_ids: torch.Tensor, targets_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The row and the token id of every predicted response token, flattened in the order of :func:`response_logits`."""
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets_mask)[targets_mask]
    return rows, input_ids[:, 1:][targets_mask]


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """log softmax(logits)[target] of every scored position, float32; ``normalized`` logits are log-probs already."""
    if normalized:
        return logits.gather(-1, targets[:, None]).squeeze(-1)
    return -F.cross_entropy(logits.float(), targets, reduction="none")


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
    """Log-probs of the response tokens, flattened, with the row each belongs to."""
    logits, targets_mask = response_logits(model, input_ids, attention_mask, response_mask)
    rows, targets = response_targets(input_ids, targets_mask)
    return target_logprobs(logits, targets), rows


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """log pi(y|x) for every row: the SUM of its response-token log-probs (float32)."""
    logits, targets_mask = response_logits(model, input_ids, attention_mask, response_mask)
    rows, targets = response_targets(input_ids, targets_mask)
    return summed_logprobs(logits, targets, rows, input_ids.shape[0])
