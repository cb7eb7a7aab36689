"""Typed preference batches that score themselves, and the log-probs a scored batch gives.

A batch of B pairs holds them in one layout (:class:`PlainPairs` here, ``PackedPairs`` in
:mod:`gpo_lab.scoring.packing`, ``Seq2SeqPairs`` in :mod:`gpo_lab.scoring.seq2seq`) and
``batch.score(model)`` gives log pi(y|x) of shape (2B,): the B chosen responses, then the B
rejected ones. ``reference_logps`` (2B,), in the same order, rides along when the reference's
values were cached. Every batch has ``.to(device)``, which is what Lightning calls to move it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from gpo_lab.scoring.logprobs import sequence_logprobs
from gpo_lab.scoring.rows import Pair, Row, as_ids, chosen_then_rejected, padded_rows


class PairBatch:
    """What every layout has: the device move, the number of pairs and ``score``."""

    reference_logps: torch.Tensor | None
    offset: torch.Tensor | None

    def to(self, device: torch.device | str, non_blocking: bool = False):
        """The same batch with every tensor on ``device``."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]  # every layout is a dataclass
        tensors = {f.name: getattr(self, f.name) for f in fields}
        return dataclasses.replace(  # type: ignore[type-var]
            self,
            **{
                name: value.to(device, non_blocking=non_blocking)
                for name, value in tensors.items()
                if value is not None
            },
        )

    @property
    def num_pairs(self) -> int:
        raise NotImplementedError

    def score(self, model) -> torch.Tensor:
        """log pi(y|x) of every response, shape (2B,): chosen first, then rejected (float32)."""
        raise NotImplementedError

    def response_lengths(self) -> torch.Tensor:
        """The number of scored tokens of every response, shape (2B,), in the order of ``score``."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, eq=False)
class PlainPairs(PairBatch):
    """Causal rows ``prompt + response``, padded to one width: the B chosen rows, then the B rejected.

    ``response_mask`` marks the response tokens whose log-probs count. Built from any (prompt,
    response) rows it is also the plain padded-rows batch of the sampler and its scoring.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    reference_logps: torch.Tensor | None = None
    offset: torch.Tensor | None = None  # (B,) a per-pair margin offset from the data (ODPO)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Row],
        pad_id: int,
        side: str = "right",
        reference_logps: torch.Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> PlainPairs:
        """Pad (prompt, response) rows on ``side``; ids may be lists or tensors (then built on ``device``)."""
        width = max(len(prompt) + len(response) for prompt, response in rows)
        if all(isinstance(ids, list) for row in rows for ids in row):  # the data loader's rows: one tensor each
            input_ids, attention_mask, response_mask = padded_rows(rows, pad_id, side, width)
            return cls(input_ids, attention_mask, response_mask, reference_logps)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        response_mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, (prompt, response) in enumerate(rows):
            length = len(prompt) + len(response)
            start = 0 if side == "right" else width - length
            input_ids[i, start : start + length] = torch.cat([as_ids(prompt), as_ids(response)])
            attention_mask[i, start : start + length] = 1
            response_mask[i, start + len(prompt) : start + length] = 1
        return cls(input_ids, attention_mask, response_mask, reference_logps)

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[Pair], pad_id: int, side: str = "right", reference_logps: torch.Tensor | None = None
    ) -> PlainPairs:
        return cls.from_rows(chosen_then_rejected(pairs), pad_id, side, reference_logps)

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    def score(self, model) -> torch.Tensor:
        return sequence_logprobs(model, self.input_ids, self.attention_mask, self.response_mask)

    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)


@dataclasses.dataclass(frozen=True, eq=False)
class PairLogps:
    """log pi and log pi_ref of a batch's chosen and rejected responses, one value per pair each.

    The responses' token counts (``chosen_length``, ``rejected_length``) ride along for the losses
    that normalize by length or shift by it; ``offset`` is a per-pair margin offset (ODPO).
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_length: torch.Tensor | None = None
    rejected_length: torch.Tensor | None = None
    offset: torch.Tensor | None = None

    @classmethod
    def from_scores(
        cls, policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> PairLogps:
        """From (2B,) scores (and token counts) in batch order (chosen first, then rejected)."""
        half = policy.shape[0] // 2
        chosen_length, rejected_length = (None, None) if lengths is None else (lengths[:half], lengths[half:])
        return cls(policy[:half], policy[half:], reference[:half], reference[half:], chosen_length, rejected_length)

    @classmethod
    def cat(cls, parts: Sequence[PairLogps]) -> PairLogps:
        """Several batches' values as one (an evaluation set's, for exact statistics)."""
        values = {f.name: [getattr(p, f.name) for p in parts] for f in dataclasses.fields(cls)}
        joined = {k: None if any(v is None for v in vs) else torch.cat(vs) for k, vs in values.items()}
        return cls(**joined)  # type: ignore[arg-type]  # the four log-prob fields are never None

    def detach(self) -> PairLogps:
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).detach()
                for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None
            },
        )

    @property
    def chosen_log_ratio(self) -> torch.Tensor:
        """log pi(y_w|x) - log pi_ref(y_w|x)."""
        return self.policy_chosen - self.reference_chosen

    @property
    def rejected_log_ratio(self) -> torch.Tensor:
        """log pi(y_l|x) - log pi_ref(y_l|x)."""
        return self.policy_rejected - self.reference_rejected

    @property
    def rho(self) -> torch.Tensor:
        """The log-ratio margin that the GPO losses take, chosen minus rejected."""
        return self.chosen_log_ratio - self.rejected_log_ratio
