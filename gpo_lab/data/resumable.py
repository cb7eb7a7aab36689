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
    """Batches of a permutation drawn from (seed, epoch), so any epoch's order can be rebuilt."""

    def __init__(self, num_items: int, batch_size: int, seed: int, order=None):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.order = order  # optional: (permutation, epoch) -> reordered indices (e.g. grouped by length)
        self.epoch, self.position = 0, 0

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        permutation = torch.randperm(self.num_items, generator=generator).tolist()
        if self.order is not None:
            permutation = self.order(permutation, epoch)
        return [permutation[i : i + self.batch_size] for i in range(0, self.num_items, self.batch_size)]

    def __len__(self) -> int:
        return -(-self.num_items // self.batch_size)

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

    def __init__(self, dataset, batch_size: int, seed: int, order=None, **kwargs):
        super().__init__(dataset, batch_sampler=SeededBatchSampler(len(dataset), batch_size, seed, order), **kwargs)

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)
