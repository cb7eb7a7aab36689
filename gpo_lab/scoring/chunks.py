"""Response log-probs a chunk of positions at a time, so that no [tokens x vocabulary] tensor exists at once.

Projecting N response positions onto a vocabulary of V tokens makes (N, V) logits, their
log-softmax and, in the backward pass, their gradients: at today's vocabularies (128k-152k) that
outgrows the rest of a step's activations. Here the output layer and the log-softmax run on
``chunk`` positions at a time and the backward pass recomputes each chunk's logits instead of
keeping them: the peak holds one (chunk, V) block, whatever N is. A plain ``nn.Linear`` output
layer (every Hugging Face causal LM's) goes through one autograd function that also sums the
weight's gradient in place over the chunks, so no (V, d) gradient is made per chunk; any other
output layer (LoRA-wrapped, ...) runs each chunk under activation checkpointing. The values and
gradients are those of the one-piece path (the same operations per position). Plain and packed
rows of a causal LM are chunked; encoder-decoder rows and models that fail the projection's
start-up check score through the model's own full logits, in one piece.

The chunk size is an attribute of the model (:func:`set_logprob_chunk`, from the config's
``logprob_chunk``): a number of positions, ``0``/``None`` for one piece, or ``"auto"`` (the
default): as many positions as fit :data:`AUTO_BUDGET` logit elements on the model's device. A GPU
needs large blocks to keep the projection compute-bound; a CPU gains nothing from them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

ATTRIBUTE = "logprob_chunk"  # where a model carries its chunk size
AUTO = "auto"
# Logit elements of one chunk under "auto", per device type (float32: 64 MB on a CPU, 1 GB on a GPU).
AUTO_BUDGET = {"cpu": 1 << 24, "default": 1 << 28}
Chunk = int | str | None


def valid_chunk(chunk: Chunk) -> Chunk:
    """``chunk`` checked: a number of positions >= 0, ``None`` or ``"auto"``."""
    if chunk is None or chunk == AUTO:
        return chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
        raise ValueError(
            f"logprob_chunk={chunk!r}: give a number of response positions per chunk (e.g. 256), "
            "0 or null for all positions at once, or auto."
        )
    return chunk


def set_logprob_chunk(model: torch.nn.Module, chunk: Chunk) -> torch.nn.Module:
    """Score ``model``'s responses ``chunk`` positions at a time (see the module docstring); returns ``model``."""
    object.__setattr__(model, ATTRIBUTE, valid_chunk(chunk))
    return model


def logprob_chunk(model) -> Chunk:
    """The chunk size ``model`` carries, ``"auto"`` when none was set."""
    return valid_chunk(getattr(model, ATTRIBUTE, AUTO))


def positions_per_chunk(chunk: Chunk, vocabulary: int, device: torch.device) -> int | None:
    """The number of positions per chunk, None for one piece."""
    if chunk == AUTO:
        budget = AUTO_BUDGET.get(device.type, AUTO_BUDGET["default"])
        return max(1, budget // max(1, vocabulary))
    return int(chunk) if chunk else None  # type: ignore[arg-type]  # valid_chunk leaves an int here


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """log softmax(logits)[target] of every scored position, float32; ``normalized`` logits are log-probs already."""
    if normalized:
        return logits.gather(-1, targets[:, None]).squeeze(-1)
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer computes in: autocast's when it is on for the tensor's device, else the tensor's."""
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else tensor.dtype


class LinearLogprobs(torch.autograd.Function):
    """log softmax(hidden @ W^T + b)[targets] in chunks of ``size`` rows, with the gradient computed the same way.

    The forward pass keeps only its inputs; the backward pass recomputes each chunk's logits and
    adds its weight gradient into one buffer. Under autocast the products run in autocast's dtype
    and the log-softmax in float32, as ``nn.Linear`` and :func:`target_logprobs` do.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, size: int, dtype: torch.dtype):  # type: ignore[override]
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.size, ctx.dtype = size, dtype
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], size):
            logits = F.linear(hidden[start : start + size].to(dtype), w, b)
            out[start : start + size] = target_logprobs(logits, targets[start : start + size])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, weight, bias, targets = ctx.saved_tensors
        dtype, size = ctx.dtype, ctx.size
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if needs_bias else None
        for start in range(0, hidden.shape[0], size):
            h = hidden[start : start + size].to(dtype)
            # d log p[t] / d logits = onehot(t) - softmax(logits), times the incoming gradient.
            grad = torch.softmax(F.linear(h, w, b).float(), dim=-1).neg_()
            grad[torch.arange(grad.shape[0], device=grad.device), targets[start : start + size]] += 1
            grad = grad.mul_(grad_out[start : start + size, None]).to(dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + size] = grad @ w
            if grad_weight is not None:
                if grad.dtype == torch.float32:
                    grad_weight.addmm_(grad.T, h)
                else:
                    grad_weight.add_(grad.T @ h)
            if grad_bias is not None:
                grad_bias.add_(grad.sum(0))
        return (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
        )


def _projected(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return target_logprobs(head(hidden), targets)


def projected_logprobs(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: Chunk, vocabulary: int
) -> torch.Tensor:
    """log softmax(head(hidden))[targets] of every position (N,), float32, ``chunk`` positions at a time.

    ``hidden`` (N, d) are the decoder's hidden states at the scored positions, ``head`` the output
    layer and ``vocabulary`` its width. The backward pass recomputes each chunk's (chunk, V) logits
    rather than keeping them: in :class:`LinearLogprobs` for a plain ``nn.Linear``, by activation
    checkpointing for any other layer.
    """
    size = positions_per_chunk(chunk, vocabulary, hidden.device)
    if size is None or hidden.shape[0] <= size:
        return _projected(head, hidden, targets)
    if type(head) is torch.nn.Linear and not (head._forward_hooks or head._forward_pre_hooks):
        dtype = compute_dtype(hidden)
        return LinearLogprobs.apply(hidden, head.weight, head.bias, targets, size, dtype)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    step = functools.partial(checkpoint, _projected, use_reentrant=False) if recompute else _projected
    pieces = [
        step(head, hidden[start : start + size], targets[start : start + size])
        for start in range(0, hidden.shape[0], size)
    ]
    return torch.cat(pieces)


def model_logprobs(model, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`projected_logprobs` through ``model``'s output layer, in the chunks ``model`` carries."""
    head = model.get_output_embeddings()
    vocabulary = getattr(head, "out_features", None) or getattr(model.config, "vocab_size", None) or 1
    return projected_logprobs(head, hidden, targets, logprob_chunk(model), int(vocabulary))
