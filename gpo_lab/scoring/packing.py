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

import weakref

import torch

from gpo_lab.scoring.logprobs import projects_hidden_states_linearly, sequence_logprobs, summed_logprobs

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3
PACKED_KEY = "segment_ids"  # a batch holding it is packed
# Attention implementations that take an arbitrary dense 4D mask.
DENSE_MASK_ATTENTION = ("sdpa", "eager")


def pack_pairs(pairs: list[tuple[list[int], list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows ``[prompt, chosen, rejected]`` (right-padded) with their position and segment ids."""
    width = max(len(p) + len(c) + len(r) for p, c, r in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(pairs), width), dtype=torch.long)
    segment_ids = torch.full((len(pairs), width), PAD, dtype=torch.long)
    for i, (prompt, chosen, rejected) in enumerate(pairs):
        if not prompt or not chosen or not rejected:
            raise ValueError("A packed pair needs a non-empty prompt (its last position predicts the first response "
                             "token) and non-empty responses.")
        p, c, r = len(prompt), len(chosen), len(rejected)
        input_ids[i, :p + c + r] = torch.tensor(prompt + chosen + rejected)
        position_ids[i, :p + c + r] = torch.cat([torch.arange(p + c), torch.arange(p, p + r)])
        segment_ids[i, :p + c + r] = torch.tensor([PROMPT] * p + [CHOSEN] * c + [REJECTED] * r)
    return {"input_ids": input_ids, "position_ids": position_ids, PACKED_KEY: segment_ids}


def is_packed(batch: dict[str, torch.Tensor]) -> bool:
    return PACKED_KEY in batch


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


def packed_sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log pi(y|x) of a packed batch, shape (2B,): the B chosen responses, then the B rejected ones."""
    input_ids, segment_ids = batch["input_ids"], batch[PACKED_KEY]
    config = getattr(model, "config", None)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    mask = attention_mask_4d(segment_ids, getattr(config, "_attn_implementation", None), dtype)
    rows, sources, targets, slots = scored_tokens(segment_ids, input_ids)
    inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": batch["position_ids"], "use_cache": False}
    if projects_hidden_states_linearly(model):
        hidden = model.get_decoder()(**inputs).last_hidden_state
        logits = model.get_output_embeddings()(hidden[rows, sources])
    else:
        logits = model(**inputs).logits[rows, sources]
    return summed_logprobs(logits, targets, slots, 2 * input_ids.shape[0])


def unpack(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same pairs as plain right-padded rows (B chosen, then B rejected), for models that cannot share prefixes."""
    input_ids, segment_ids = batch["input_ids"], batch[PACKED_KEY]
    rows = []
    for response in (CHOSEN, REJECTED):
        for ids, segments in zip(input_ids, segment_ids):
            rows.append((ids[segments == PROMPT], ids[segments == response]))
    width = max(len(p) + len(r) for p, r in rows)
    plain = {key: torch.zeros((len(rows), width), dtype=torch.long, device=input_ids.device)
             for key in ("input_ids", "attention_mask", "response_mask")}
    for i, (prompt, response) in enumerate(rows):
        p, r = len(prompt), len(response)
        plain["input_ids"][i, :p + r] = torch.cat([prompt, response])
        plain["attention_mask"][i, :p + r] = 1
        plain["response_mask"][i, p:p + r] = 1
    return plain


_PROBE_RESULTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def supports_prefix_sharing(model) -> bool:
    """Whether ``model`` scores a packed batch exactly as the plain one (checked once per model and attention).

    It must be a decoder-only model with an attention that takes a dense 4D mask, and a small probe
    (three pairs of different lengths) must give the plain log-probs: a model that ignores position
    ids or the mask falls back to plain rows instead of giving wrong numbers.
    """
    config = getattr(model, "config", None)
    attention = getattr(config, "_attn_implementation", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or attention not in DENSE_MASK_ATTENTION:
        return False
    cached = _PROBE_RESULTS.get(model)
    if cached is not None and cached[0] == attention:
        return cached[1]
    result = _probe(model)
    _PROBE_RESULTS[model] = (attention, result)
    return result


def _probe(model) -> bool:
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 2:
        return False
    generator = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(0, vocab, (n,), generator=generator).tolist()

    pairs = [(ids(5), ids(3), ids(4)), (ids(2), ids(6), ids(1)), (ids(7), ids(2), ids(2))]
    device = next(model.parameters()).device
    packed = {k: v.to(device) for k, v in pack_pairs(pairs, pad_id=0).items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shared = packed_sequence_logprobs(model, packed)
            plain = sequence_logprobs(model, **unpack(packed))
    except (TypeError, ValueError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    tolerance = 1e-4 if dtype == torch.float32 or dtype == torch.float64 else 5e-2
    return bool(torch.allclose(shared, plain, rtol=tolerance, atol=tolerance))


def pair_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log pi(y|x) of every response of a batch, shape (2B,): chosen first, then rejected.

    Takes plain batches (``input_ids``, ``attention_mask``, ``response_mask``) and packed ones
    (:func:`pack_pairs`); a packed batch runs with prefix sharing when the model supports it and
    as plain rows otherwise, with the same result.
    """
    if not is_packed(batch):
        return sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    if supports_prefix_sharing(model):
        return packed_sequence_logprobs(model, batch)
    return sequence_logprobs(model, **unpack(batch))
