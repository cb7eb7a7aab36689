"""Start-up checks of the scoring fast paths: each is verified against the model's own forward pass.

A fast path (the response-only projection, prefix-shared packed rows) is an optimization of an
obvious slow path, correct only when the model behaves as the fast path assumes (logits that are a
plain projection of the last hidden state, attention that honours a custom 4D mask at every
distance). Rather than trusting a list of known families, each path is run once per model, per
attention implementation, parameter dtype, autocast state and device type, on a probe batch long enough to cross
every window the config declares, and compared with the slow path; a mismatch beyond the tolerance
switches the path off for that model, with one log line saying why. An unknown family is slower,
never wrong.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable

import torch

from gpo_lab.scoring.segment_attention import attention_name

log = logging.getLogger(__name__)

SCORING_VERSION = 3  # bumped whenever a scoring path's numbers change (part of the reference cache's key)
# Config attributes that bound how far attention reaches (a window or a chunk): the probe crosses them.
WINDOW_ATTRIBUTES = ("sliding_window", "attention_chunk_size", "window_size", "local_window_size", "chunk_size")
POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")
MIN_PROBE_SPAN = 16  # a probe row is at least this long beyond the widest window
# Nats: per entry of a log-softmax, or per summed row of log-probs; float32/float64 without autocast, or reduced.
FULL_PRECISION_TOLERANCE = {False: 1e-3, True: 1e-3}
REDUCED_PRECISION_TOLERANCE = {False: 5e-2, True: 0.25}

ON = "on"
_RESULTS: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def parameter_dtype(model) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on ``device`` right now, or None when it is off (or the device has none)."""
    if not torch.amp.is_autocast_available(device.type) or not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def context(model) -> tuple:
    """What decides whether a fast path is exact: attention implementation, weights' dtype, autocast and the
    device type (another device runs other kernels)."""
    device = next(model.parameters()).device
    return attention_name(model), parameter_dtype(model), autocast_dtype(device), device.type


def tolerance(model, summed: bool = False) -> float:
    """How far a fast path may stray from the slow one in the current context (per entry, or per summed row)."""
    _, dtype, autocast, _ = context(model)
    full = dtype in (torch.float32, torch.float64) and autocast is None
    return (FULL_PRECISION_TOLERANCE if full else REDUCED_PRECISION_TOLERANCE)[summed]


def _config_values(config, names) -> list[int]:
    """Integer values of ``names`` in the config and its text sub-config (multimodal configs nest it)."""
    configs = [config, getattr(config, "text_config", None)]
    values: list[int] = []
    for part in (c for c in configs if c is not None):
        for name in names:
            value = getattr(part, name, None)
            values.extend(v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, int))
    return [v for v in values if v > 0]


def position_limits(model) -> list[int]:
    """The longest rows the model's config allows, less 2 (none when it declares no limit)."""
    return [limit - 2 for limit in _config_values(getattr(model, "config", None), POSITION_LIMITS)]


def probe_span(model) -> int:
    """Probe rows are this long: past every declared window, within the model's positions."""
    span = max([0, *_config_values(getattr(model, "config", None), WINDOW_ATTRIBUTES)]) + MIN_PROBE_SPAN
    return min([span, *position_limits(model)])


def probe_ids(model, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Random token ids of the given lengths, from a private generator (the run's random stream is left alone)."""
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths]


def decided(model, name: str) -> bool | None:
    """What :func:`checked` decided for fast path ``name`` in the current context, None when it has not run."""
    state = _RESULTS.get(model, {}).get((name, context(model)))
    return None if state is None else state == ON


def checked(model, name: str, check: Callable[[torch.nn.Module], str | None]) -> bool:
    """Whether fast path ``name`` is exact for ``model`` in the current context; ``check(model)`` gives
    None when it is, else the reason it is not. Run once per model and context, in eval mode without
    gradients; an error in the check counts as a mismatch.

    Under autocast with full-precision weights the check runs twice: without autocast at the tight
    tolerance (a structural error, such as a window the mask ignores, cannot hide in rounding noise),
    then under the run's autocast at the reduced one.
    """
    results = _RESULTS.setdefault(model, {})
    key = (name, context(model))
    if key not in results:
        _, _, autocast, device_type = key[1]
        runs = [torch.autocast(device_type, enabled=False)] if autocast is not None else []
        reason = _run_checks(model, check, [*runs, contextlib.nullcontext()])
        results[key] = ON if reason is None else f"off: {reason}"
        if reason is not None:
            log.info("Fast path %s switched off for %s (%s): %s.", name, type(model).__name__, describe(key[1]), reason)
    return results[key] == ON


def _run_checks(model, check, contexts) -> str | None:
    was_training = model.training
    model.eval()
    try:
        for precision in contexts:
            with torch.no_grad(), precision:
                reason = check(model)
            if reason is not None:
                return reason
        return None
    except (TypeError, ValueError, RuntimeError, IndexError, AttributeError, KeyError) as error:
        return f"the check failed: {type(error).__name__}: {error}"
    finally:
        model.train(was_training)


def describe(key: tuple) -> str:
    """A context in words: ``attention sdpa, weights float32(, autocast bfloat16), device cpu``."""
    attention, dtype, autocast, device_type = key
    cast = f", autocast {str(autocast).removeprefix('torch.')}" if autocast is not None else ""
    return f"attention {attention}, weights {str(dtype).removeprefix('torch.')}{cast}, device {device_type}"


def report(model) -> dict[str, str]:
    """Every fast path checked on ``model``, per context: ``"on"`` or ``"off: <why>"`` (summary.json ``fast_paths``)."""
    return {f"{name} [{describe(key)}]": state for (name, key), state in _RESULTS.get(model, {}).items()}


def max_difference(fast: torch.Tensor, slow: torch.Tensor) -> float:
    if fast.shape != slow.shape:
        return float("inf")
    return (fast.float() - slow.float()).abs().max().item() if fast.numel() else 0.0


def mismatch(what: str, fast: torch.Tensor, slow: torch.Tensor, limit: float) -> str | None:
    """None when ``fast`` equals ``slow`` within ``limit``, else why not (NaN counts as a mismatch)."""
    difference = max_difference(fast, slow)
    if difference <= limit:
        return None
    return f"{what} differ from the model's own forward pass by {difference:.3g} (tolerance {limit:g})"
