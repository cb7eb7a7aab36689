"""A model's fast-path report (summary.json's ``data.fast_paths``): every scoring fast path checked at
start-up, under the run's precision, on this process's accelerator.

How one path is checked, and the results kept per model and context, is :mod:`gpo_lab.scoring.fast_path_checks`.
"""

from __future__ import annotations

import os

import torch

from gpo_lab.scoring.fast_path_checks import report
from gpo_lab.scoring.logprobs import projects_hidden_states_linearly
from gpo_lab.scoring.packing import supports_flat_packing
from gpo_lab.scoring.precision import MIXED, training_precision

ENCODER_DECODER = "no fast path: encoder-decoder rows are scored from the model's own logits"


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
            supports_flat_packing(model)  # checks prefix sharing first
    finally:
        model.to(home)
    return report(model)
