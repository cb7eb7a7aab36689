"""Prefix-shared preference batches: prompt, chosen and rejected packed into one row.

A pair's prompt is run once instead of twice. Each row is ``[prompt, chosen, rejected, pad...]``;
the rejected segment takes the positions that directly follow the prompt (its position ids
restart at ``len(prompt)``) and a 4D attention mask keeps it from seeing the chosen segment, so
each response is scored exactly as in its own ``prompt + response`` row. The first token of each
response is predicted from the last prompt position.

Two traps decide the mask's form: with restarted positions the explicit mask is mandatory (a 2D
mask would let the model guess a packed-sequence layout of its own), and the eager attention path
adds the mask to the scores, so it must be an additive float mask there (a boolean one would be
silently ignored). sdpa takes a boolean mask, a quarter of the memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from gpo_lab.scoring.batches import PairBatch, PlainPairs
from gpo_lab.scoring.chunks import model_logprobs
from gpo_lab.scoring.fast_path_checks import checked, mismatch, probe_ids, probe_span, tolerance
from gpo_lab.scoring.logprobs import projects_hidden_states_linearly, row_sums, summed_logprobs
from gpo_lab.scoring.rows import Pair

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3
# Attention implementations that take an arbitrary dense 4D mask.
DENSE_MASK_ATTENTION = ("sdpa", "eager")


@dataclasses.dataclass(frozen=True, eq=False)
class PackedPairs(PairBatch):
    """B rows ``[prompt, chosen, rejected]`` (right-padded) with their position and segment ids."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    reference_logps: torch.Tensor | None = None
    offset: torch.Tensor | None = None  # (B,) a per-pair margin offset from the data (ODPO)

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair], pad_id: int, reference_logps: torch.Tensor | None = None) -> PackedPairs:
        """One row ``prompt + chosen + rejected`` per pair, right-padded; ids may be lists or tensors."""
        width = max(len(p) + len(c) + len(r) for p, c, r in pairs)
        ids, positions, segments = [], [], []
        for prompt, chosen, rejected in pairs:
            if not len(prompt) or not len(chosen) or not len(rejected):
                raise ValueError(
                    "A packed pair needs a non-empty prompt (its last position predicts the first "
                    "response token) and non-empty responses."
                )
            p, c, r = len(prompt), len(chosen), len(rejected)
            padding = width - p - c - r
            ids.append([*map(int, prompt), *map(int, chosen), *map(int, rejected)] + [pad_id] * padding)
            positions.append([*range(p + c), *range(p, p + r)] + [0] * padding)
            segments.append([PROMPT] * p + [CHOSEN] * c + [REJECTED] * r + [PAD] * padding)
        input_ids, position_ids, segment_ids = (
            torch.tensor(rows, dtype=torch.long) for rows in (ids, positions, segments)
        )
        return cls(input_ids, position_ids, segment_ids, reference_logps)

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0]

    def score(self, model) -> torch.Tensor:
        """With prefix sharing when the model supports it, as plain rows otherwise: the same result."""
        return self.score_shared(model) if supports_prefix_sharing(model) else self.unpack().score(model)

    def score_shared(self, model) -> torch.Tensor:
        """log pi(y|x) from the packed rows themselves, whether or not the model honours them."""
        return packed_sequence_logprobs(model, self.input_ids, self.position_ids, self.segment_ids)

    def response_lengths(self) -> torch.Tensor:
        return torch.cat([(self.segment_ids == CHOSEN).sum(-1), (self.segment_ids == REJECTED).sum(-1)])

    def unpack(self) -> PlainPairs:
        """The same pairs as plain right-padded rows, for models that cannot share prefixes."""
        rows = [
            (ids[segments == PROMPT], ids[segments == response])
            for response in (CHOSEN, REJECTED)
            for ids, segments in zip(self.input_ids, self.segment_ids)
        ]
        return PlainPairs.from_rows(rows, pad_id=0, reference_logps=self.reference_logps, device=self.input_ids.device)


pack_pairs = PackedPairs.from_pairs  # its name before the typed batches


def allowed_attention(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean: query t may attend to key s when s <= t and s is in the prompt or in t's segment.

    Padding attends to earlier padding (never an empty row, which would give NaN); real tokens never see it.
    """
    t = torch.arange(segment_ids.shape[1], device=segment_ids.device)
    causal = t[None, :] <= t[:, None]
    same_or_prompt = (segment_ids[:, None, :] == PROMPT) | (segment_ids[:, None, :] == segment_ids[:, :, None])
    return (causal & same_or_prompt)[:, None]


def attention_mask_4d(segment_ids: torch.Tensor, attn_implementation: str | None, dtype: torch.dtype) -> torch.Tensor:
    """The mask in the form the attention implementation honours: boolean for sdpa, additive float otherwise."""
    allowed = allowed_attention(segment_ids)
    if attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def scored_tokens(segment_ids: torch.Tensor, input_ids: torch.Tensor):
    """Every response token of a packed batch: (row, predicting column, target id, output slot).

    A response token is predicted by the column before it, except the first rejected token, which
    is predicted by the last prompt column. Slot i is the chosen response of pair i, slot B + i its
    rejected one.
    """
    batch = segment_ids.shape[0]
    response = (segment_ids == CHOSEN) | (segment_ids == REJECTED)
    rows, columns = response.nonzero(as_tuple=True)
    segment = segment_ids[rows, columns]
    last_prompt = (segment_ids == PROMPT).sum(-1) - 1
    first_rejected = (segment == REJECTED) & (segment_ids[rows, columns - 1] != REJECTED)
    sources = torch.where(first_rejected, last_prompt[rows], columns - 1)
    slots = rows + batch * (segment == REJECTED).long()
    return rows, sources, input_ids[rows, columns], slots


def packed_sequence_logprobs(
    model, input_ids: torch.Tensor, position_ids: torch.Tensor, segment_ids: torch.Tensor
) -> torch.Tensor:
    """log pi(y|x) of packed rows, shape (2B,): the B chosen responses, then the B rejected ones."""
    config = getattr(model, "config", None)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    mask = attention_mask_4d(segment_ids, getattr(config, "_attn_implementation", None), dtype)
    rows, sources, targets, slots = scored_tokens(segment_ids, input_ids)
    inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids, "use_cache": False}
    if projects_hidden_states_linearly(model):  # projected a chunk at a time (gpo_lab.scoring.chunks)
        hidden = model.get_decoder()(**inputs).last_hidden_state
        return row_sums(model_logprobs(model, hidden[rows, sources], targets), slots, 2 * input_ids.shape[0])
    logits = model(**inputs).logits[rows, sources]
    return summed_logprobs(logits, targets, slots, 2 * input_ids.shape[0])


PREFIX_SHARING = "prefix_sharing"  # the fast path's name in start-up checks and summary.json's ``fast_paths``


def supports_prefix_sharing(model) -> bool:
    """Whether ``model`` scores a packed batch exactly as the plain one (checked once per model and context).

    It must be a decoder-only model with an attention that takes a dense 4D mask, and a probe (three
    pairs whose rows cross every attention window the config declares) must give the plain
    log-probs: a model that ignores position ids or the mask, or whose sliding window the custom
    mask cannot express, falls back to plain rows instead of giving wrong numbers.
    """
    config = getattr(model, "config", None)
    attention = getattr(config, "_attn_implementation", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or attention not in DENSE_MASK_ATTENTION:
        return False
    if int(getattr(config, "vocab_size", 0) or 0) < 2:
        return False
    return checked(model, PREFIX_SHARING, check_prefix_sharing)


def check_prefix_sharing(model) -> str | None:
    """None when the packed probe gives the plain rows' log-probs, else why not."""
    span = probe_span(model)
    lengths = [(span, 3, 5), (2, span, 1), (span // 2, 2, span - span // 2)]
    ids = probe_ids(model, [n for triple in lengths for n in triple])
    pairs = [(ids[3 * i], ids[3 * i + 1], ids[3 * i + 2]) for i in range(len(lengths))]
    packed = PackedPairs.from_pairs(pairs, pad_id=0).to(next(model.parameters()).device)
    shared, plain = packed.score_shared(model), packed.unpack().score(model)
    return mismatch("packed log-probs", shared, plain, tolerance(model, summed=True))
