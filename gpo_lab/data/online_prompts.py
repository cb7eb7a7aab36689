"""What a training batch holds when the pairs are drawn online: the prompts, and their rows in the
training set (which, with the step, name the random streams of the pairs drawn for them)."""

from __future__ import annotations

from dataclasses import dataclass

ROW = "row"  # the training set's column of row numbers, added when the pairs are drawn online


@dataclass(frozen=True)
class PromptRows:
    prompt_ids: list[list[int]]
    rows: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device, non_blocking: bool = False) -> PromptRows:
        """Token ids stay Python lists: the sampler moves them itself."""
        return self
