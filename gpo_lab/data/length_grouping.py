"""Length-grouped batch order: batches of pairs of similar length, so a batch is not mostly padding.

The random permutation of an epoch is cut into groups of ``group_batches`` batches; each group is
sorted by length and cut into batches, and the batches are then shuffled (seeded by seed and
epoch), so the order stays random at the level of batches and any epoch can be rebuilt exactly.
Of the full batches, the one holding the longest pair goes first: a run that does not fit in
memory fails at its first step, not hours in.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import torch

from gpo_lab.data.columns import column_values


def pair_lengths(pairs: datasets.Dataset, packed: bool) -> list[int]:
    """Width of each encoded pair in a batch: prompt + chosen + rejected when packed, else its longer row."""
    columns = zip(*(column_values(pairs, name) for name in ("prompt_ids", "chosen_ids", "rejected_ids")))
    if packed:
        return [len(p) + len(c) + len(r) for p, c, r in columns]
    return [len(p) + max(len(c), len(r)) for p, c, r in columns]


class LengthGroupedOrder:
    """An ``order`` for :class:`~gpo_lab.data.resumable.SeededBatchSampler`: (permutation, epoch) -> indices.

    The indices it returns, read in consecutive chunks of ``batch_size``, are the batches; only the
    last chunk may be short, and it stays last.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group_batches: int = 64):
        if batch_size < 1 or group_batches < 1:
            raise ValueError(f"batch_size and group_batches must be >= 1, got {batch_size} and {group_batches}.")
        self.lengths = list(lengths)
        self.batch_size, self.seed, self.group_batches = batch_size, seed, group_batches

    def __call__(self, permutation: list[int], epoch: int) -> list[int]:
        group = self.batch_size * self.group_batches
        batches: list[list[int]] = []
        for start in range(0, len(permutation), group):
            ordered = sorted(permutation[start : start + group], key=lambda i: -self.lengths[i])
            batches += [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        short = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if batches:
            longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
            batches.insert(0, batches.pop(longest))
        if short is not None:
            batches.append(short)
        return [index for batch in batches for index in batch]
