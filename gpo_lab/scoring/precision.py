"""The run's precision as a context, for what must give the policy's numbers outside Lightning.

Lightning runs the policy under autocast (``bf16-mixed``, ``16-mixed``) or with its weights cast
(``bf16-true``, ...); anything that must give the policy's numbers without Lightning (the cached
reference, the start-up checks of the fast paths) runs in :func:`training_precision` of the same setting.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch

from gpo_lab.scoring.fast_path_checks import parameter_dtype

MIXED = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}
TRUE = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64, "64": torch.float64}


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
    elif precision in TRUE and parameter_dtype(model) != TRUE[precision]:
        yield copy.deepcopy(model).to(TRUE[precision])
    else:
        yield model
