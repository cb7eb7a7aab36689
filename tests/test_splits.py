"""The held-out split is by prompt: no validation prompt occurs in training, and summary.json counts the
ones that do when the user's own validation split overlaps the training split."""

from __future__ import annotations

import logging

import datasets
import pytest

from gpo_lab.data.datamodule import PreferenceDataModule
from gpo_lab.models.tokenizers import byte_tokenizer


def comparisons(num_prompts: int = 40) -> list[dict]:
    """Like TL;DR: each post has one to four comparisons (summaries of it), rows in no particular order."""
    rows = [
        {"prompt": f"post {p}", "chosen": f"good {p}.{c}", "rejected": f"bad {p}.{c}"}
        for p in range(num_prompts)
        for c in range(1 + p % 4)
    ]
    return rows[::2] + rows[1::2]


def module_of(data, **kwargs) -> PreferenceDataModule:
    module = PreferenceDataModule(data, tokenizer=byte_tokenizer(), max_length=64, max_prompt_length=32, **kwargs)
    module.setup("fit")
    return module


def texts(encoded: datasets.Dataset, column: str) -> list[str]:
    return byte_tokenizer().batch_decode(list(encoded[column]), skip_special_tokens=True)


@pytest.mark.parametrize("val_size", [0.2, 17])
def test_every_comparison_of_a_prompt_is_on_one_side(val_size):
    rows = comparisons()
    module = module_of(datasets.Dataset.from_list(rows), val_size=val_size, seed=3)
    train, validation = texts(module.train_set, "prompt_ids"), texts(module.val_set, "prompt_ids")
    assert len(train) + len(validation) == len(rows)
    assert not set(train) & set(validation)
    per_prompt = {p: sum(r["prompt"] == p for r in rows) for p in {r["prompt"] for r in rows}}
    assert all(validation.count(p) == per_prompt[p] for p in set(validation))  # whole prompts held out
    target = 17 if val_size == 17 else 0.2 * len(rows)
    assert target <= len(validation) < target + max(per_prompt.values())  # about val_size pairs
    assert module.stats["validation_prompts"] == len(set(validation))
    assert module.stats["train_prompts"] == len(set(train))
    assert module.stats["val_prompts_in_train"] == 0


def test_the_split_is_deterministic_from_the_seed():
    data = datasets.Dataset.from_list(comparisons())
    first, again, other = (module_of(data, val_size=0.2, seed=seed) for seed in (3, 3, 4))
    assert texts(first.val_set, "chosen_ids") == texts(again.val_set, "chosen_ids")
    assert texts(first.train_set, "chosen_ids") == texts(again.train_set, "chosen_ids")
    assert set(texts(first.val_set, "prompt_ids")) != set(texts(other.val_set, "prompt_ids"))


@pytest.mark.parametrize("val_size", [0.25, 3])
def test_with_one_pair_per_prompt_the_split_is_that_of_train_test_split(val_size):
    rows = [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(13)]
    data = datasets.Dataset.from_list(rows)
    module = module_of(data, val_size=val_size, seed=5)
    expected = data.train_test_split(test_size=val_size, seed=5, shuffle=True)
    assert texts(module.val_set, "prompt_ids") == list(expected["test"]["prompt"])
    assert texts(module.train_set, "prompt_ids") == list(expected["train"]["prompt"])


def test_a_given_validation_split_that_shares_prompts_is_counted_and_warned_about(caplog):
    rows = comparisons(10)
    train = datasets.Dataset.from_list(rows)
    validation = datasets.Dataset.from_list(
        [{"prompt": p, "chosen": "a", "rejected": "b"} for p in ("post 1", "post 2", "unseen 1", "unseen 2", "post 2")]
    )
    with caplog.at_level(logging.WARNING):
        module = module_of(datasets.DatasetDict(train=train, test=validation), val_split="test")
    assert module.stats["validation_prompts"] == 4 and module.stats["val_prompts_in_train"] == 2
    assert "2 of the 4 validation prompts also occur in the training pairs" in caplog.text


def test_a_single_prompt_is_split_by_pair_and_reported():
    rows = [{"prompt": "same", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(6)]
    module = module_of(datasets.Dataset.from_list(rows), val_size=2)
    assert module.stats["validation_pairs"] == 2 and module.stats["train_pairs"] == 4
    assert module.stats["val_prompts_in_train"] == 1
