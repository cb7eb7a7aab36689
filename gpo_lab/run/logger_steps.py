"""One step convention for every logger: a record's step is the number of optimizer updates applied.

Lightning logs training records at that number but validation records during fit one lower (the
step counter moves after the validation's step). Loggers that mix this class in before their
Lightning base log validation records at ``trainer.global_step`` instead, so ``metrics.jsonl``,
wandb and ``summary.json`` agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class UpdateStepLogging:
    """Finds the trainer when Lightning hands the module to the loggers (``log_graph``, at the start
    of fit and validate), and re-dates validation records with :meth:`step_of`."""

    trainer = None

    def log_graph(self, model, input_array=None) -> None:
        self.trainer = getattr(model, "_trainer", None)
        super().log_graph(model, input_array)

    def step_of(self, metrics: Mapping[str, Any], step: int | None) -> int | None:
        if self.trainer is not None and any(name.startswith("val/") for name in metrics):
            return self.trainer.global_step
        return step
