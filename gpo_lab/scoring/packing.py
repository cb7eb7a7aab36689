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
from gpo_lab.scoring.fast_path_checks import checked, decided, mismatch, probe_ids, probe_span, tolerance
from gpo_lab.scoring.logprobs import projects_hidden_states_linearly, row_sums, summed_logprobs
from gpo_lab.scoring.rows import Pair
from gpo_lab.scoring.segment_attention import (
    SEGMENT_SDPA,
    PairSegments,
    attention_name,
    placeholder_mask,
    use_segment_attention,
)

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
        """Flat (unpadded) when the model supports it, else with prefix sharing in padded rows, else as plain
        rows: the same result."""
        if supports_flat_packing(model):
            return self.score_flat(model)
        return self.score_shared(model) if supports_prefix_sharing(model) else self.unpack().score(model)

    def score_flat(self, model) -> torch.Tensor:
        """log pi(y|x) from every pair's tokens in one unpadded row (:mod:`gpo_lab.scoring.segment_attention`)."""
        return flat_sequence_logprobs(model, self.input_ids, self.position_ids, self.segment_ids)

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
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    mask = attention_mask_4d(segment_ids, attention_name(model), dtype)
    rows, sources, targets, slots = scored_tokens(segment_ids, input_ids)
    inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids, "use_cache": False}
    return _scored(model, inputs, (rows, sources), targets, slots, 2 * input_ids.shape[0])


def flat_sequence_logprobs(
    model, input_ids: torch.Tensor, position_ids: torch.Tensor, segment_ids: torch.Tensor
) -> torch.Tensor:
    """log pi(y|x) of packed rows run as one unpadded row, shape (2B,), in the order of ``packed_sequence_logprobs``.

    Each row's real tokens lead it, so (row, column) of a real token is column ``offset[row] + column``
    of the flat row. The segment attention reads ``pair_segments``; the 4D mask is a placeholder.
    """
    if getattr(getattr(model, "config", None), "_attn_implementation", None) != SEGMENT_SDPA:
        raise ValueError("flat-packed pairs need the segment attention: check supports_flat_packing(model) first")
    real = segment_ids != PAD
    lengths = real.sum(-1)
    counts = [(segment_ids == segment).sum(-1).tolist() for segment in (PROMPT, CHOSEN, REJECTED)]
    segments = PairSegments(*(tuple(count) for count in counts))
    rows, sources, targets, slots = scored_tokens(segment_ids, input_ids)
    flat_sources = (lengths.cumsum(0) - lengths)[rows] + sources
    inputs = {
        "input_ids": input_ids[real][None],
        "position_ids": position_ids[real][None],
        "attention_mask": placeholder_mask(segments.width, input_ids.device),
        "use_cache": False,
        "pair_segments": segments,
    }
    return _scored(model, inputs, (0, flat_sources), targets, slots, 2 * input_ids.shape[0])


def _scored(
    model, inputs: dict, sources: tuple, targets: torch.Tensor, slots: torch.Tensor, count: int
) -> torch.Tensor:
    """Summed log-probs of ``targets`` predicted at the ``sources`` index of the model's output, per slot."""
    if projects_hidden_states_linearly(model):  # projected a chunk at a time (gpo_lab.scoring.chunks)
        hidden = model.get_decoder()(**inputs).last_hidden_state
        return row_sums(model_logprobs(model, hidden[sources], targets), slots, count)
    logits = model(**inputs).logits[sources]
    return summed_logprobs(logits, targets, slots, count)


PREFIX_SHARING = "prefix_sharing"  # the fast paths' names in start-up checks and summary.json's ``fast_paths``
FLAT_PACKING = "flat_packing"


def supports_prefix_sharing(model) -> bool:
    """Whether ``model`` scores a packed batch exactly as the plain one (checked once per model and context).

    It must be a decoder-only model with an attention that takes a dense 4D mask, and a probe (three
    pairs whose rows cross every attention window the config declares) must give the plain
    log-probs: a model that ignores position ids or the mask, or whose sliding window the custom
    mask cannot express, falls back to plain rows instead of giving wrong numbers.
    """
    config = getattr(model, "config", None)
    attention = attention_name(model)
    if config is None or getattr(config, "is_encoder_decoder", False) or attention not in DENSE_MASK_ATTENTION:
        return False
    if int(getattr(config, "vocab_size", 0) or 0) < 2:
        return False
    return checked(model, PREFIX_SHARING, check_prefix_sharing)


def supports_flat_packing(model) -> bool:
    """Whether ``model`` scores pairs in one unpadded row exactly as in plain rows (checked once per model and
    context, as prefix sharing is). The model is switched to the segment attention for the check and for
    good when it passes; a model that cannot be switched, or fails, keeps its attention and padded rows."""
    if not supports_prefix_sharing(model) or decided(model, FLAT_PACKING) is False:
        return False  # a model that failed keeps its attention: no switching back and forth at every batch
    if not use_segment_attention(model):
        return False
    if checked(model, FLAT_PACKING, check_flat_packing):
        return True
    use_segment_attention(model, on=False)
    return False


def probe_pairs(model) -> PackedPairs:
    """Three pairs whose rows cross every attention window the config declares, on the model's device."""
    span = probe_span(model)
    lengths = [(span, 3, 5), (2, span, 1), (span // 2, 2, span - span // 2)]
    ids = probe_ids(model, [n for triple in lengths for n in triple])
    pairs = [(ids[3 * i], ids[3 * i + 1], ids[3 * i + 2]) for i in range(len(lengths))]
    return PackedPairs.from_pairs(pairs, pad_id=0).to(next(model.parameters()).device)


def check_prefix_sharing(model) -> str | None:
    """None when the packed probe gives the plain rows' log-probs, else why not."""
    packed = probe_pairs(model)
    shared, plain = packed.score_shared(model), packed.unpack().score(model)
    return mismatch("packed log-probs", shared, plain, tolerance(model, summed=True))


def check_flat_packing(model) -> str | None:
    """None when the probe's pairs in one unpadded row give the plain rows' log-probs, else why not."""
    packed = probe_pairs(model)
    flat, plain = packed.score_flat(model), packed.unpack().score(model)
    return mismatch("flat-packed log-probs", flat, plain, tolerance(model, summed=True))
