"""Length-grouped batches: every pair once per epoch, far less padding, reproducible and resumable."""

import random

import pytest

from gpo_lab.data.length_grouping import LengthGroupedOrder, pair_lengths
from gpo_lab.data.resumable import SeededBatchSampler

_rng = random.Random(0)
LENGTHS = [_rng.randint(20, 500) for _ in range(203)]  # 203 = 25 batches of 8, and 3


def padded_area(batches, lengths):
    """Tokens a batch computes on, padding included: its size times its longest member."""
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def sampler(seed=0, group_batches=8):
    return SeededBatchSampler(len(LENGTHS), 8, seed, order=LengthGroupedOrder(LENGTHS, 8, seed, group_batches))


def test_every_pair_exactly_once_per_epoch_and_only_the_last_batch_short():
    batches = list(sampler())
    assert sorted(i for batch in batches for i in batch) == list(range(len(LENGTHS)))
    assert [len(b) for b in batches] == [8] * 25 + [3]


def test_grouping_cuts_the_padding():
    grouped = padded_area(sampler().batches(0), LENGTHS)
    random_order = padded_area(SeededBatchSampler(len(LENGTHS), 8, 0).batches(0), LENGTHS)
    assert grouped <= 0.85 * random_order
    # Within a group each batch is a run of the sorted lengths: its spread is small.
    spreads = [max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in sampler(group_batches=25).batches(0)]
    assert sorted(spreads)[len(spreads) // 2] < 60


def test_the_longest_batch_comes_first():
    first = sampler().batches(0)[0]
    assert max(LENGTHS) in [LENGTHS[i] for i in first]


def test_same_seed_and_epoch_same_order_other_epochs_differ():
    assert sampler().batches(3) == sampler().batches(3)
    assert sampler().batches(0) != sampler().batches(1)
    assert sampler(seed=0).batches(0) != sampler(seed=1).batches(0)


def test_resuming_mid_epoch_replays_the_remaining_batches():
    full = sampler()
    expected = list(full)
    first = sampler()
    iterator = iter(first)
    seen = [next(iterator) for _ in range(10)]
    resumed = sampler()
    resumed.load_state_dict(first.state_dict())
    assert seen + list(resumed) == expected


def test_pair_length_counts_what_a_row_holds():
    pairs = {"prompt_ids": [[1] * 10, [1]], "chosen_ids": [[2] * 4, [2] * 3], "rejected_ids": [[3] * 6, [3]]}
    assert pair_lengths(pairs, packed=True) == [20, 5]
    assert pair_lengths(pairs, packed=False) == [16, 4]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedOrder(LENGTHS, 0)
