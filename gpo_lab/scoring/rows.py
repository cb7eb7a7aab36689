"""Token rows and their padding: the (prompt, response) rows every plain layout is built from.

Here, below both the batches and the log-prob kernel, so that the kernel's start-up probe can pad its
rows without importing the batches that call the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Row = tuple[Sequence[int], Sequence[int]]  # (prompt, response) token ids
Pair = tuple[Sequence[int], Sequence[int], Sequence[int]]  # (prompt, chosen, rejected) token ids


def chosen_then_rejected(pairs: Sequence[Pair]) -> list[Row]:
    """The rows of pairs in batch order: every (prompt, chosen), then every (prompt, rejected)."""
    return [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]


def as_ids(ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Token ids as a long tensor (an empty list included)."""
    return torch.as_tensor(ids, dtype=torch.long)


def padded_rows(
    rows: Sequence[Row], pad_id: int, side: str = "right", width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and response_mask of list rows padded on ``side`` to ``width`` (by default the
    longest row), each built by one ``torch.tensor`` call."""
    width = max(len(prompt) + len(answer) for prompt, answer in rows) if width is None else width
    ids, attention, response = [], [], []
    for prompt, answer in rows:
        padding = width - len(prompt) - len(answer)
        row_ids = [*prompt, *answer]
        row_attention = [1] * len(row_ids)
        row_response = [0] * len(prompt) + [1] * len(answer)
        if side == "right":
            ids.append(row_ids + [pad_id] * padding)
            attention.append(row_attention + [0] * padding)
            response.append(row_response + [0] * padding)
        else:
            ids.append([pad_id] * padding + row_ids)
            attention.append([0] * padding + row_attention)
            response.append([0] * padding + row_response)
    return (
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(attention, dtype=torch.long),
        torch.tensor(response, dtype=torch.long),
    )
