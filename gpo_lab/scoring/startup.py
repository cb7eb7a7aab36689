"""The run's precision as a context, and the start-up check of every scoring fast path under it.

Lightning runs the policy under autocast (``bf16-mixed``, ``16-mixed``) or with its weights cast
(``bf16-true``, ...); anything that must give the policy's numbers without Lightning (the cached
reference, the start-up checks) runs in :func:`training_precision` of the same setting.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator

import torch

from gpo_lab.scoring import fast_path_checks as verify
from gpo_lab.scoring.logprobs import projects_hidden_states_linearly
from gpo_lab.scoring.packing import supports_prefix_sharing

MIXED = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}
TRUE = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64, "64": torch.float64}
ENCODER_DECODER = "no fast path: encoder-decoder rows are scored from the model's own logits"


@contextlib.contextmanager
def training_precision(model: torch.nn.Module, precision: str | int | None) -> Iterator[torch.nn.Module]:
    """The model to run as Lightning's ``precision`` runs the policy: ``model`` itself under autocast for
    the mixed settings (as Lightning's MixedPrecision does); for the true ones a copy with its weights
    cast (Lightning casts the policy the same way), so ``model``'s own weights are never rounded."""
    precision = str(precision)
    if precision in MIXED:
        device = next(model.parameters()).device
        with torch.autocast(device.type, dtype=MIXED[precision], cache_enabled=False):
            yield model
    elif precision in TRUE and verify.parameter_dtype(model) != TRUE[precision]:
        yield copy.deepcopy(model).to(TRUE[precision])
    else:
        yield model


def accelerator(default: torch.device) -> torch.device:
    """This process's GPU (``LOCAL_RANK`` under data parallelism, as Lightning assigns them), else ``default``."""
    if not torch.cuda.is_available():
        return default
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def check_fast_paths(
    model: torch.nn.Module, precision: str | int | None = None, device: str | torch.device | None = None
) -> dict[str, str]:
    """Check every fast path on ``model`` under the run's precision (each once, logged when it is switched
    off) and say what was decided: ``{path [context]: "on" | "off: <why>"}``.

    The checks run on ``device`` (by default this process's GPU when there is one: reduced precision
    on a CPU is slow) and the model goes back where it was; a context met later (another precision,
    autocast in an evaluation) is checked at first use. Under a true (cast) precision they run on the model
    as it is, and again, at first use, on the weights Lightning casts (logged, not in this report).
    """
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return {"seq2seq": ENCODER_DECODER}
    home = next(model.parameters()).device
    target = torch.device(device) if device is not None else accelerator(home)
    model.to(target)
    try:
        with training_precision(model, precision if str(precision) in MIXED else None):
            projects_hidden_states_linearly(model)
            supports_prefix_sharing(model)
    finally:
        model.to(home)
    return verify.report(model)
