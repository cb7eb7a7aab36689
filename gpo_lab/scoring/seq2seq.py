"""Encoder-decoder (T5-style) scoring: the prompt goes to the encoder, the response is the decoder's target.

A causal LM reads prompt + response as one row; an encoder-decoder needs them apart, so its
batches carry the prompt as ``input_ids``/``attention_mask`` (encoder side) and the response as
``response_ids``/``response_mask`` (decoder side), each padded on its own. log pi(y|x) is the
SUM of the response tokens' log-probabilities, as for causal models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from gpo_lab.scoring.batches import PairBatch
from gpo_lab.scoring.logprobs import summed_logprobs
from gpo_lab.scoring.rows import Pair, Row, chosen_then_rejected


def _right_padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[i, : len(sequence)] = 1
    return ids, mask


@dataclasses.dataclass(frozen=True, eq=False)
class Seq2SeqPairs(PairBatch):
    """Encoder rows (the prompts) and decoder rows (the responses): the B chosen rows, then the B rejected."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    reference_logps: torch.Tensor | None = None
    offset: torch.Tensor | None = None  # (B,) a per-pair margin offset from the data (ODPO)

    @classmethod
    def from_rows(
        cls, rows: Sequence[Row], pad_id: int, eos_id: int | None = None, reference_logps: torch.Tensor | None = None
    ) -> Seq2SeqPairs:
        """Pad (prompt, response) rows into encoder and decoder tensors (both right-padded).

        With ``eos_id``, a prompt that does not end with it gets it appended, as T5 tokenizers end
        every encoder input.
        """
        prompts = [list(p) + ([eos_id] if eos_id is not None and (not p or p[-1] != eos_id) else []) for p, _ in rows]
        input_ids, attention_mask = _right_padded(prompts, pad_id)
        response_ids, response_mask = _right_padded([list(r) for _, r in rows], pad_id)
        return cls(input_ids, attention_mask, response_ids, response_mask, reference_logps)

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[Pair], pad_id: int, eos_id: int | None = None, reference_logps: torch.Tensor | None = None
    ) -> Seq2SeqPairs:
        return cls.from_rows(chosen_then_rejected(pairs), pad_id, eos_id, reference_logps)

    @property
    def num_pairs(self) -> int:
        return self.response_ids.shape[0] // 2

    def score(self, model) -> torch.Tensor:
        return seq2seq_sequence_logprobs(
            model, self.input_ids, self.attention_mask, self.response_ids, self.response_mask
        )

    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)


def decoder_inputs(model, response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's inputs: the response shifted right behind the decoder start token."""
    start = model.config.decoder_start_token_id
    if start is None:
        raise ValueError(
            f"{type(model).__name__} has no config.decoder_start_token_id; set it to the token the "
            "decoder starts from (the pad token for T5)."
        )
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else start
    shifted = torch.full_like(response_ids, pad)
    shifted[:, 0] = start
    shifted[:, 1:] = response_ids[:, :-1].masked_fill(~response_mask[:, :-1].bool(), pad)
    return shifted


def seq2seq_response_logits(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder's logits at the response positions, flattened (N, V), the tokens they predict (N,)
    and the row each belongs to (N,); the sample bank's token KL reads the whole distributions."""
    decoder_mask = torch.ones_like(response_mask)
    decoder_mask[:, 1:] = response_mask[:, :-1]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_inputs(model, response_ids, response_mask),
        decoder_attention_mask=decoder_mask,
        use_cache=False,
    ).logits
    keep = response_mask.bool()
    rows = torch.arange(response_ids.shape[0], device=response_ids.device)[:, None].expand_as(keep)[keep]
    return logits[keep], response_ids[keep], rows


def seq2seq_sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """log pi(y|x) for every row of an encoder-decoder batch: the SUM of its response-token log-probs (float32)."""
    logits, targets, rows = seq2seq_response_logits(model, input_ids, attention_mask, response_ids, response_mask)
    return summed_logprobs(logits, targets, rows, response_ids.shape[0])
