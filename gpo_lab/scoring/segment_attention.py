"""Attention over flat-packed pairs: every pair's ``[prompt, chosen, rejected]`` in one unpadded row.

Packing pairs one per row pads every row to the batch's longest pair (8% of the tokens of
length-grouped ShareGPT-shaped batches), and the dense 4D mask that keeps a rejected response from
seeing the chosen one makes attention compute the whole padded square, with no kernel that skips
what is masked. Here the batch is one row of real tokens only, and attention runs pair by pair as
two plain calls of torch's ``scaled_dot_product_attention``: the prompt and chosen response
causally (``is_causal``: GPU flash kernels skip the masked half), and the rejected response's
queries against the prompt's and its own keys with a lower-right causal bias. No mask of the row's
size is built.

The function is registered with transformers' ``AttentionInterface`` as :data:`SEGMENT_SDPA`.
Called without ``pair_segments`` it is transformers' own sdpa attention, so a model switched to it
(:func:`use_segment_attention`) behaves as before everywhere else (sampling with a cache, plain
rows). Whether a model routes its attention through it, and exactly, is not assumed: the packing
layer checks each model against plain rows before using it.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

SEGMENT_SDPA = "gpo_lab_segment_sdpa"
SDPA = "sdpa"
# Attention features a flat row cannot express pair by pair: a model that passes one falls back to padded rows.
UNSUPPORTED = ("softcap", "sliding_window", "position_bias", "s_aux", "sinks")


@dataclasses.dataclass(frozen=True)
class PairSegments:
    """The lengths of each pair's prompt, chosen and rejected segments, in the order they follow in the row."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]

    @property
    def width(self) -> int:
        return sum(self.prompt) + sum(self.chosen) + sum(self.rejected)

    def pairs(self):
        """(prompt, chosen, rejected) lengths of every pair."""
        return zip(self.prompt, self.chosen, self.rejected)


def segment_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    pair_segments: PairSegments | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, or, given ``pair_segments``, attention within each pair of a flat row."""
    if pair_segments is None and is_placeholder(attention_mask):
        raise ValueError("the model's layers do not pass pair_segments on to their attention")
    if pair_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    named = [name for name in UNSUPPORTED if kwargs.get(name) is not None]
    if named:
        raise ValueError(f"flat-packed pairs cannot express this model's attention option(s) {named}")
    if query.shape[0] != 1 or query.shape[2] != pair_segments.width:
        raise ValueError(f"flat-packed pairs need one row of {pair_segments.width} tokens, got {tuple(query.shape)}")
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    # One split per tensor (its backward is one concatenation); slicing the row per pair would make every
    # slice's backward fill a zero tensor of the whole row.
    sizes = [n for p, c, r in pair_segments.pairs() for n in (p + c, r)]
    queries, keys, values = (tensor.split(sizes, dim=2) for tensor in (query, key, value))
    pieces = []
    for i, (p, _, r) in enumerate(pair_segments.pairs()):
        shared, rejected = 2 * i, 2 * i + 1  # [prompt, chosen] causally; rejected against [prompt, rejected]
        k, v = keys[shared], values[shared]
        pieces.append(
            F.scaled_dot_product_attention(queries[shared], k, v, dropout_p=dropout, is_causal=True, scale=scaling)
        )
        k_rejected = torch.cat([k[:, :, :p], keys[rejected]], dim=2)
        v_rejected = torch.cat([v[:, :, :p], values[rejected]], dim=2)
        bias = causal_lower_right(r, p + r)
        pieces.append(
            F.scaled_dot_product_attention(
                queries[rejected], k_rejected, v_rejected, attn_mask=bias, dropout_p=dropout, scale=scaling
            )
        )
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def placeholder_mask(width: int, device: torch.device) -> torch.Tensor:
    """The 4D mask a flat row is given: it keeps transformers from building a (width x width) mask of its own
    and takes no memory. It allows everything, so no layer may use it: the segment attention refuses it
    unless ``pair_segments`` came with it."""
    return torch.ones((), dtype=torch.bool, device=device).expand(1, 1, width, width)


def is_placeholder(mask: torch.Tensor | None) -> bool:
    return (
        mask is not None
        and mask.dtype == torch.bool
        and mask.dim() == 4
        and mask.shape[-1] > 1
        and not any(mask.stride())
    )


def register() -> None:
    """Make :data:`SEGMENT_SDPA` a name transformers knows (its masks are sdpa's); idempotent."""
    if SEGMENT_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENT_SDPA, sdpa_mask)


def attention_name(model) -> str | None:
    """The model's attention implementation, with :data:`SEGMENT_SDPA` read as the sdpa it extends."""
    name = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return SDPA if name == SEGMENT_SDPA else name


def use_segment_attention(model, on: bool = True) -> bool:
    """Switch an sdpa model to :data:`SEGMENT_SDPA` (or back); False when it cannot be switched.

    Only models whose attention goes through transformers' ``AttentionInterface`` can; the switch is
    for the model's life (it changes nothing for calls without ``pair_segments``).
    """
    config = getattr(model, "config", None)
    switch = getattr(model, "set_attn_implementation", None)
    if config is None or switch is None or attention_name(model) != SDPA:
        return False
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if can_switch is None or not can_switch():
        return False
    register()
    wanted = SEGMENT_SDPA if on else SDPA
    if config._attn_implementation != wanted:
        switch(wanted)
    return config._attn_implementation == wanted
