"""The random draws of the samplers: one private stream per prompt, and one sampling step.

Each prompt's draws come from its own stream, named by ``(seed, stream, prompt index)``, so a
response depends on its prompt alone: not on the batch it is drawn in, not on the other prompts,
not on how many ranks share the work. A token is drawn by inverting the CDF of softmax(logits)
at the prompt's next uniform.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

# Stream numbers, so that no two uses of one seed draw the same numbers.
POLICY_STREAM, REFERENCE_STREAM = 0, 1


def prompt_uniforms(seed: int, stream: int, indices: Iterable[int], length: int) -> torch.Tensor:
    """(prompts, length) float64 uniforms on [0, 1): row i from the private stream of prompt ``indices[i]``."""
    rows = []
    for index in indices:
        words = np.random.SeedSequence([seed % 2**63, stream, int(index)]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
        rows.append(torch.rand(length, generator=generator, dtype=torch.float64))
    return torch.stack(rows) if rows else torch.zeros(0, length, dtype=torch.float64)


def draw_next(
    logits: torch.Tensor,
    uniforms: torch.Tensor,
    finished: torch.Tensor,
    lengths: torch.Tensor,
    step: int,
    pad_token_id: int,
    eos_token_id: int,
) -> torch.Tensor:
    """One token per row from softmax(logits), at the row's uniform (padding for rows already finished).

    The token is the first whose cumulative probability exceeds the uniform (float64, so a token
    of probability p is drawn with probability p up to float64 rounding). Rows that draw EOS now are
    marked in ``finished`` and get ``lengths = step + 1`` (EOS belongs to the response), in place.
    """
    cdf = torch.softmax(logits.double(), dim=-1).cumsum(-1)
    u = uniforms.to(device=cdf.device, dtype=cdf.dtype)[:, None].contiguous()
    token = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)
    token = torch.where(finished, torch.full_like(token, pad_token_id), token)
    ended = (token == eos_token_id) & ~finished
    lengths[ended] = step + 1
    finished |= ended
    return token
