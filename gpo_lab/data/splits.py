"""The held-out split, by prompt: every comparison of a prompt on one side, so validation prompts are unseen.

Datasets such as TL;DR hold several comparisons per prompt; a split by pair would put most
held-out prompts in training too. Prompts are shuffled from the seed with the permutation
``datasets.Dataset.train_test_split`` draws, and taken in that order until the validation side
holds at least ``val_size`` pairs, so with one pair per prompt the split is exactly that of
``train_test_split`` and with more it holds about ``val_size`` pairs (at most a prompt's
comparisons over).
"""

from __future__ import annotations

import json
import logging
import math

import datasets
import numpy as np

from gpo_lab.data.columns import column_values
from gpo_lab.data.sources import DataError

log = logging.getLogger(__name__)


def prompt_key(prompt) -> str:
    """A hashable key equal for equal prompts, texts or chat conversations alike."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def validation_target(val_size: float | int, num_pairs: int) -> int:
    """How many pairs ``data.val_size`` asks for: a fraction in (0, 1) (rounded up, as datasets does) or a count,
    leaving at least one pair on each side."""
    fix = f"use a fraction in (0, 1) or a number of pairs from 1 to {num_pairs - 1}"
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise DataError(f"data.val_size={val_size!r} is not a number: {fix}.")
    target = math.ceil(val_size * num_pairs) if isinstance(val_size, float) else val_size
    if (isinstance(val_size, float) and not 0 < val_size < 1) or not 1 <= target <= num_pairs - 1:
        raise DataError(f"data.val_size={val_size!r} cannot split the {num_pairs} pairs of the dataset: {fix}.")
    return int(target)


def split_by_prompt(
    data: datasets.Dataset, val_size: float | int, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, validation) with no prompt on both sides, deterministic from ``seed``.

    A dataset with a single prompt cannot be split so; its pairs are split as pairs, with a warning.
    """
    target = validation_target(val_size, len(data))
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(column_values(data, "prompt")):
        groups.setdefault(prompt_key(prompt), []).append(index)
    if len(groups) == 1:
        log.warning("Every pair has the same prompt: the validation split holds out pairs, not prompts.")
        order = np.random.default_rng(seed).permutation(len(data))
        return data.select(order[target:]), data.select(order[:target])
    members = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(members))
    held, count = 0, 0
    while held < len(order) - 1 and count < target:  # at least one prompt stays in training
        count += len(members[order[held]])
        held += 1
    validation = [i for group in order[:held] for i in members[group]]
    train = [i for group in order[held:] for i in members[group]]
    return data.select(train), data.select(validation)


def prompts_in_both(train: datasets.Dataset, validation: datasets.Dataset) -> dict[str, int]:
    """Distinct prompts on each side and how many validation prompts also occur in training."""
    train_prompts = {prompt_key(p) for p in column_values(train, "prompt")}
    validation_prompts = {prompt_key(p) for p in column_values(validation, "prompt")}
    return {
        "train_prompts": len(train_prompts),
        "validation_prompts": len(validation_prompts),
        "val_prompts_in_train": len(validation_prompts & train_prompts),
    }
