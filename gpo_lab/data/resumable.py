"""A shuffling DataLoader whose position survives a kill: resuming replays the same data order.

Lightning saves the state of a DataLoader that has ``state_dict``/``load_state_dict`` in its
checkpoints and restores it before iterating again, so a run resumed mid-epoch sees exactly the
batches an uninterrupted run would have seen next.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class SeededBatchSampler(Sampler[list[int]]):
    """Batches of a permutation drawn from (seed, epoch), so any epoch's order can be rebuilt.

    With ``world_size`` W > 1 the order is that of one process with batches of W x ``batch_size``
    (the global batch), and rank r takes the r-th contiguous share of each: the W ranks of one
    step together see exactly the pairs one process sees at that step. A short last global batch
    is shared as evenly as it goes (shares differ by at most one pair; the module weighs each
    rank's loss by its share); one with fewer pairs than ranks is left out on every rank.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, order=None, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank} and world_size={world_size}.")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.order = order  # optional: (permutation, epoch) -> reordered indices (e.g. grouped by length)
        self.epoch, self.position = 0, 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The batches of one process with the global batch size (what all ranks see together)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        permutation = torch.randperm(self.num_items, generator=generator).tolist()
        if self.order is not None:
            permutation = self.order(permutation, epoch)
        size = self.global_batch_size
        batches = [permutation[i : i + size] for i in range(0, self.num_items, size)]
        return [batch for batch in batches if len(batch) >= self.world_size]

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's share of each global batch."""
        if self.world_size == 1:
            return self.global_batches(epoch)
        shares = []
        for batch in self.global_batches(epoch):
            lo, hi = len(batch) * self.rank // self.world_size, len(batch) * (self.rank + 1) // self.world_size
            shares.append(batch[lo:hi])
        return shares

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.global_batch_size)
        return full + (rest >= self.world_size and rest > 0)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_items": self.num_items}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state["seed"], state["num_items"]) != (self.seed, self.num_items):
            raise ValueError(
                f"The checkpoint's data order was made for seed={state['seed']} and {state['num_items']} pairs, "
                f"this run has seed={self.seed} and {self.num_items}: it is not the same run."
            )
        self.epoch, self.position = state["epoch"], state["position"]


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`SeededBatchSampler` that Lightning can checkpoint and restore."""

    def __init__(self, dataset, batch_size: int, seed: int, order=None, rank: int = 0, world_size: int = 1, **kwargs):
        sampler = SeededBatchSampler(len(dataset), batch_size, seed, order, rank, world_size)
        super().__init__(dataset, batch_sampler=sampler, **kwargs)

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)
