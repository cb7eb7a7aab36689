"""The LightningDataModule: a dataset of preference pairs in, padded chosen/rejected batches out."""

from __future__ import annotations

import dataclasses
import logging

import datasets
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Subset

from gpo_lab.data.columns import REFERENCE_LOGPS, batch_reference_logps, column_values
from gpo_lab.data.length_grouping import LengthGroupedOrder, pair_lengths
from gpo_lab.data.online_prompts import ROW, PromptRows
from gpo_lab.data.pair_checks import OFFSET, check_pairs
from gpo_lab.data.resumable import ResumableDataLoader
from gpo_lab.data.sources import DataError
from gpo_lab.data.splits import prompts_in_both, split_by_prompt
from gpo_lab.data.tokenization import Truncation, encode_pairs, encode_responses, prompt_start_token, render_texts
from gpo_lab.errors import ConfigError
from gpo_lab.parallel.ranks import shard_bounds
from gpo_lab.scoring.batches import PairBatch, PlainPairs
from gpo_lab.scoring.packing import PackedPairs
from gpo_lab.scoring.seq2seq import Seq2SeqPairs

log = logging.getLogger(__name__)

PAIR_FIELDS = ("prompt", "chosen", "rejected")
# Optional golden rewards of a pair's two responses (the synthetic task's pairs have them): kept when the
# data has them, for the ranking accuracy on held-out pairs and the training pairs' reward.
REWARD_FIELDS = ("reward_chosen", "reward_rejected")
# Above this fraction of pairs with chosen == rejected the log warns that the data is mostly degenerate;
# a training split where every pair is so is refused (the loss would stay at f(0): nothing to learn).
IDENTICAL_WARNING_FRACTION = 0.5


class PreferenceDataModule(pl.LightningDataModule):
    """Maps a dataset's columns onto prompt/chosen/rejected, tokenizes, truncates and batches.

    Rows are batched as ``input_ids`` of shape (2B, T): the B chosen sequences, then the B
    rejected ones, so each model needs one forward pass per batch. ``response_mask`` marks the
    response tokens whose log-probs count. With ``packing`` a batch holds B rows
    ``[prompt, chosen, rejected]`` instead (the prompt runs once; see :mod:`gpo_lab.scoring.packing`), and
    ``group_by_length`` batches pairs of similar length together, so a batch is not mostly padding.
    """

    def __init__(
        self,
        dataset: datasets.Dataset | datasets.DatasetDict,
        columns: dict[str, str] | None = None,
        max_length: int = 512,
        max_prompt_length: int | None = 256,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        val_size: float | int = 0.1,
        padding_side: str = "right",
        num_workers: int = 0,
        seed: int = 0,
        tokenizer=None,
        packing: bool = False,
        group_by_length: bool = False,
        seq2seq: bool = False,
    ):
        super().__init__()
        if padding_side not in ("left", "right"):
            raise ConfigError(f"data.padding_side must be 'left' or 'right', got {padding_side!r}.")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size or 1)):
            if value < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {value}.")
        self.raw = dataset
        self.columns = {field: field for field in PAIR_FIELDS} | dict(columns or {})
        self.truncation = Truncation(max_length, max_prompt_length)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.train_split, self.val_split, self.val_size = train_split, val_split, val_size
        self.padding_side, self.num_workers, self.seed = padding_side, num_workers, seed
        self.tokenizer = tokenizer
        self.seq2seq = seq2seq  # encoder-decoder batches: prompt and response as separate tensors
        self.packing, self.group_by_length = packing and not seq2seq, group_by_length  # packing is for causal rows
        self.stats: dict[str, int] = {}
        self.train_set = self.val_set = None
        self.online = False  # training batches are prompts only (the module draws their pairs)
        self._mean_rewards: dict[str, float | None] = {}

    def use_encoder_decoder_batches(self) -> None:
        """Prompt and response as separate tensors from now on, unpacked (packing is for causal rows).

        Tokenization does not depend on the model's kind, only batching does, so the task can say
        so once the model is built, after the data has been read and checked.
        """
        self.seq2seq, self.packing = True, False

    # ----------------------------------------------------------------- preparation
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.tokenizer is None:
            raise RuntimeError("PreferenceDataModule needs a tokenizer before setup().")
        train, val = self._splits()
        self._count_shared_prompts(train, val)
        self.train_set = self._encode(train, "train")
        self.val_set = self._encode(val, "validation")

    def _splits(self) -> tuple[datasets.Dataset, datasets.Dataset]:
        raw = self.raw
        if isinstance(raw, datasets.DatasetDict):
            if self.train_split not in raw:
                raise DataError(f"No split {self.train_split!r} (data.train_split); the dataset has {list(raw)}.")
            if self.val_split is not None:
                if self.val_split not in raw:
                    raise DataError(f"No split {self.val_split!r} (data.val_split); the dataset has {list(raw)}.")
                return self._mapped(raw[self.train_split]), self._mapped(raw[self.val_split])
            raw = raw[self.train_split]
        data = self._mapped(raw)
        if len(data) < 2:
            raise DataError(
                f"The dataset has {len(data)} pairs; at least 2 are needed (one to train, one to validate)."
            )
        return split_by_prompt(data, self.val_size, self.seed)

    def _count_shared_prompts(self, train: datasets.Dataset, val: datasets.Dataset) -> None:
        """Validation prompts seen in training make held-out metrics optimistic: count them, and warn."""
        counts = prompts_in_both(train, val)
        self.stats |= counts
        if counts["val_prompts_in_train"]:
            log.warning(
                "%d of the %d validation prompts also occur in the training pairs (data.val_split=%s).",
                counts["val_prompts_in_train"],
                counts["validation_prompts"],
                self.val_split,
            )

    def _mapped(self, data: datasets.Dataset) -> datasets.Dataset:
        """Select and rename the mapped columns, naming any that are missing, and check their values
        (:mod:`gpo_lab.data.pair_checks`) while rows are still those of the file."""
        missing = [
            f"{field} (column {column!r})" for field, column in self.columns.items() if column not in data.column_names
        ]
        if missing:
            raise DataError(
                f"The dataset lacks the mapped columns: {', '.join(missing)}. Columns found: "
                f"{data.column_names}. Set data.columns.prompt/chosen/rejected to the right names."
            )
        if len(set(self.columns.values())) < len(PAIR_FIELDS):
            raise DataError(f"data.columns maps two fields onto one column: {self.columns}.")
        rewards = [name for name in REWARD_FIELDS if name in data.column_names and name not in self.columns.values()]
        data = data.select_columns(list(self.columns.values()) + (rewards if len(rewards) == 2 else []))
        data = data.rename_columns({column: field for field, column in self.columns.items() if column != field})
        check_pairs(data, self.columns)
        return data

    def _encode(self, data: datasets.Dataset, split: str) -> datasets.Dataset:
        columns = data.to_dict()
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        texts = [render_texts(row["prompt"], row["chosen"], row["rejected"], self.tokenizer) for row in rows]
        prompts, chosen_texts, rejected_texts = (list(column) for column in zip(*texts)) if texts else ([], [], [])
        start = prompt_start_token(self.tokenizer)
        pairs = encode_pairs(prompts, chosen_texts, rejected_texts, self.tokenizer, self.truncation, start)
        encoded, identical, dropped, informative = [], 0, 0, 0
        for row, (_, chosen, rejected), pair in zip(rows, texts, pairs):
            identical += chosen == rejected
            if pair is None:
                dropped += 1
            else:
                extra = {name: float(row[name]) for name in (OFFSET, *REWARD_FIELDS) if name in row}
                encoded.append(pair | extra)
                informative += chosen != rejected
        self.stats |= {
            f"{split}_pairs": len(encoded),
            f"{split}_dropped_empty": dropped,
            f"{split}_identical": identical,
        }
        if dropped:
            log.warning(
                "%s: dropped %d of %d pairs whose chosen or rejected response is empty after "
                "truncation (data.max_length=%d, data.max_prompt_length=%s).",
                split,
                dropped,
                len(data),
                self.truncation.max_length,
                self.truncation.max_prompt_length,
            )
        self._report_identical(split, identical, len(data))
        if not encoded:
            raise DataError(
                f"Every {split} pair was dropped: no response survives truncation to data.max_length="
                f"{self.truncation.max_length} with data.max_prompt_length={self.truncation.max_prompt_length}. "
                "Raise data.max_length or lower data.max_prompt_length."
            )
        if split == "train" and not informative:
            raise DataError(
                f"Every train pair ({len(encoded)} of {len(encoded)} kept) has chosen == rejected: there is no "
                "preference to learn (the loss would stay at f(0)). Check data.columns.chosen and "
                "data.columns.rejected, or the data itself."
            )
        log.info("%s: %d pairs", split, len(encoded))
        return datasets.Dataset.from_list(encoded)

    def _report_identical(self, split: str, identical: int, total: int) -> None:
        if identical and identical > IDENTICAL_WARNING_FRACTION * total:
            log.warning(
                "%s: %d of %d pairs (%.0f%%, more than %.0f%%) have chosen == rejected; the data is mostly "
                "degenerate. Check data.columns.chosen and data.columns.rejected.",
                split,
                identical,
                total,
                100 * identical / total,
                100 * IDENTICAL_WARNING_FRACTION,
            )
        elif identical:
            log.warning("%s: %d pairs have chosen == rejected; they carry no preference signal.", split, identical)

    # ----------------------------------------------------------------- online pairs and golden rewards
    def use_online_prompts(self) -> None:
        """Training batches hold only the pairs' prompts and row numbers from now on (:class:`PromptRows`):
        the module draws each step's pairs from the policy. The order of the prompts, and its resume, is
        the offline pairs' order; validation is unchanged."""
        if self.train_set is None:
            raise RuntimeError("use_online_prompts() needs setup() first.")
        if ROW not in self.train_set.column_names:
            self.train_set = self.train_set.add_column(ROW, list(range(len(self.train_set))))
        self.online = True

    def encode_responses(
        self, prompt_ids: list[list[int]], chosen: list[str], rejected: list[str]
    ) -> list[dict | None]:
        """Pairs of response texts on encoded prompts, encoded exactly as :meth:`setup` encodes a pair's
        responses (:func:`~gpo_lab.data.tokenization.encode_responses`)."""
        return encode_responses(prompt_ids, chosen, rejected, self.tokenizer, self.truncation)

    def golden_margins(self, split: str = "validation") -> torch.Tensor | None:
        """reward(chosen) - reward(rejected) of each pair of a split, in its row order, when the data has
        the rewards (float64); None otherwise."""
        rewards = self._golden_rewards(split)
        if rewards is None:
            return None
        chosen, rejected = (torch.tensor(values, dtype=torch.float64) for values in rewards)
        return chosen - rejected

    def mean_pair_reward(self, split: str = "train") -> float | None:
        """The mean golden reward of a split's responses (both of every pair), when the data has them."""
        if split not in self._mean_rewards:
            rewards = self._golden_rewards(split)
            if rewards is None:
                return None
            values = [*rewards[0], *rewards[1]]
            self._mean_rewards[split] = sum(values) / len(values) if values else None
        return self._mean_rewards[split]

    def _golden_rewards(self, split: str) -> tuple[list, list] | None:
        """The chosen and rejected responses' golden rewards of ``train`` or ``validation``, if the data has them."""
        data = self.train_set if split == "train" else self.val_set
        if data is None or any(name not in data.column_names for name in REWARD_FIELDS):
            return None
        return column_values(data, REWARD_FIELDS[0]), column_values(data, REWARD_FIELDS[1])

    # ----------------------------------------------------------------- loaders
    def ranks(self) -> tuple[int, int]:
        """(global rank, world size) of the trainer this data module serves; (0, 1) before it has one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self.ranks()
        order = None
        if self.group_by_length:  # grouped at the global batch size: the order of one process
            lengths = pair_lengths(self.train_set, self.packing)
            order = LengthGroupedOrder(lengths, self.batch_size * world_size, self.seed)
        return ResumableDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            seed=self.seed,
            order=order,
            rank=rank,
            world_size=world_size,
            collate_fn=self.collate_prompts if self.online else self.collate,
            num_workers=self.num_workers,
        )

    def collate_prompts(self, pairs: list[dict]) -> PromptRows:
        return PromptRows(prompt_ids=[list(p["prompt_ids"]) for p in pairs], rows=[int(p[ROW]) for p in pairs])

    def val_dataloader(self) -> DataLoader:
        """This rank's contiguous share of the held-out pairs (the module gathers the values of all shares)."""
        rank, world_size = self.ranks()
        lo, hi = shard_bounds(len(self.val_set), rank, world_size)
        return DataLoader(
            self.val_set if world_size == 1 else Subset(self.val_set, range(lo, hi)),
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def collate(self, pairs: list[dict]) -> PairBatch:
        triples = [(p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]) for p in pairs]
        reference = batch_reference_logps(pairs) if REFERENCE_LOGPS in pairs[0] else None
        pad = self.tokenizer.pad_token_id
        if self.seq2seq:
            batch = Seq2SeqPairs.from_pairs(triples, pad, self.tokenizer.eos_token_id, reference_logps=reference)
        elif self.packing:
            batch = PackedPairs.from_pairs(triples, pad, reference_logps=reference)
        else:
            batch = PlainPairs.from_pairs(triples, pad, self.padding_side, reference_logps=reference)
        if OFFSET in pairs[0]:
            batch = dataclasses.replace(batch, offset=torch.tensor([p[OFFSET] for p in pairs], dtype=torch.float32))
        return batch


def pad_rows(rows: list[tuple[list[int], list[int]]], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Padded (prompt, response) rows as the keyword arguments of ``scoring.logprobs.sequence_logprobs``."""
    batch = PlainPairs.from_rows(rows, pad_id, side)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "response_mask": batch.response_mask}
