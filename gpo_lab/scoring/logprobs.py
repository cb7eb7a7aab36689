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


def token_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens, flattened, with the row each belongs to."""
    logits, targets_mask = response_logits(model, input_ids, attention_mask, response_mask)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets_mask)[targets_mask]
    targets = input_ids[:, 1:][targets_mask]
    return -F.cross_entropy(logits.float(), targets, reduction="none"), rows


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """log pi(y|x) for every row: the SUM of its response-token log-probs (float32)."""
    values, rows = token_logprobs(model, input_ids, attention_mask, response_mask)
    totals = torch.zeros(input_ids.shape[0], dtype=values.dtype, device=values.device)
    return totals.index_add(0, rows, values)
