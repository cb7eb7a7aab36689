"""One sampling step shared by the causal and the encoder-decoder samplers."""

from __future__ import annotations

import torch


def draw_next(
    logits: torch.Tensor,
    generator: torch.Generator,
    finished: torch.Tensor,
    lengths: torch.Tensor,
    step: int,
    pad_token_id: int,
    eos_token_id: int,
) -> torch.Tensor:
    """One token per row from softmax(logits) (padding for rows already finished).

    Rows that draw EOS now are marked in ``finished`` and get ``lengths = step + 1`` (EOS belongs to
    the response), in place.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    token = torch.where(finished, torch.full_like(token, pad_token_id), token)
    ended = (token == eos_token_id) & ~finished
    lengths[ended] = step + 1
    finished |= ended
    return token
