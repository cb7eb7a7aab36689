"""``summary.json``: what a run was, how it ended, and its final and best validation metrics."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from gpo_lab.errors import bounded, error_text
from gpo_lab.store.best_and_last import BestAndLast
from gpo_lab.store.directions import METRIC_DIRECTIONS
from gpo_lab.store.records import SCHEMA_VERSION, read_json, to_jsonable, write_json
from gpo_lab.store.run_files import SUMMARY_FILE

log = logging.getLogger(__name__)

LOSS_CURVE_POINTS = 61  # f on [-3, 3] every 0.1, for the report's loss_functions.png
LOSS_CURVE_RANGE = 3.0
MAX_TRACEBACK_CHARS = 1000  # each of the traceback's last entries
TRACEBACK_ENTRIES = 8


class ValidationTracker(pl.Callback):
    """Keeps the last and the best value (with its step) of every ``val/`` metric (see :class:`BestAndLast`)."""

    def __init__(self):
        self.values = BestAndLast()
        self.step = 0
        self._undeclared: set[str] = set()

    @property
    def final(self) -> dict[str, float]:
        return self.values.final

    @property
    def best(self) -> dict[str, dict[str, Any]]:
        return self.values.best

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.step = trainer.global_step
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self._warn_undeclared(values)
        self.values.update(self.step, values)

    def _warn_undeclared(self, values: dict[str, float]) -> None:
        for name in sorted(set(values) - METRIC_DIRECTIONS.keys() - self._undeclared):
            if not (name.endswith("_se") and name[: -len("_se")] in values):
                log.warning("%s has no direction in gpo_lab.store.directions; no best value is kept for it.", name)
            self._undeclared.add(name)

    def state_dict(self) -> dict[str, Any]:
        return {"final": self.final, "best": self.best, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values, self.step = BestAndLast(state["final"], state["best"]), state["step"]


class RunSummary:
    """Writes ``summary.json`` at every change of state, atomically."""

    def __init__(self, run_dir: Path, run: dict[str, Any]):
        self.path = Path(run_dir) / SUMMARY_FILE
        self.started = time.time()
        self.data: dict[str, Any] = {"schema": SCHEMA_VERSION, "status": "running", **run}

    @staticmethod
    def status_of(run_dir: Path) -> str | None:
        path = Path(run_dir) / SUMMARY_FILE
        try:
            summary = read_json(path)
        except (OSError, ValueError):
            return None
        return summary.get("status") if isinstance(summary, dict) else None

    @staticmethod
    def read(run_dir: Path) -> dict[str, Any]:
        return read_json(Path(run_dir) / SUMMARY_FILE)

    def update(self, **fields: Any) -> None:
        self.data.update(to_jsonable(fields))
        self.data["wall_time_s"] = round(time.time() - self.started, 3)
        write_json(self.path, self.data)

    def completed(self, trainer: pl.Trainer, tracker: ValidationTracker, **extra: Any) -> None:
        self.update(status="completed", steps=trainer.global_step, final=tracker.final, best=tracker.best, **extra)

    def failed(
        self, error: BaseException, trainer: pl.Trainer | None = None, tracker: ValidationTracker | None = None
    ) -> None:
        self.update(
            status="failed",
            error=error_text(error),
            traceback=[
                bounded(entry, MAX_TRACEBACK_CHARS) for entry in traceback.format_exception(error)[-TRACEBACK_ENTRIES:]
            ],
            steps=trainer.global_step if trainer is not None else 0,
            final=tracker.final if tracker else {},
            best=tracker.best if tracker else {},
        )

    def interrupted(
        self, signal_name: str, trainer: pl.Trainer | None = None, tracker: ValidationTracker | None = None
    ) -> None:
        """Stopped from outside (SIGTERM, Ctrl-C): not a failure; the same command resumes it."""
        steps = trainer.global_step if trainer is not None else 0
        self.update(
            status="interrupted",
            error=f"stopped by {signal_name} at step {steps}; the same command resumes it from its last checkpoint",
            steps=steps,
            final=tracker.final if tracker else {},
            best=tracker.best if tracker else {},
        )


def loss_function_record(loss: Any) -> dict[str, Any] | None:
    """What the report needs of an f(beta * rho) loss, recorded at training time so the report needs no torch.

    f(0), f'(0), f''(0) and f''(0)/|f'(0)| from the loss's ``derivatives`` (exact for the GPO members,
    central differences for the others), and f on a grid of z for the loss_functions figure. None for a
    loss that is not a function of beta * rho (it has no derivatives).
    """
    derivatives = getattr(loss, "derivatives", None)
    if derivatives is None:
        return None
    z = torch.linspace(-LOSS_CURVE_RANGE, LOSS_CURVE_RANGE, LOSS_CURVE_POINTS, dtype=torch.float64)
    with torch.no_grad():
        values = loss.per_example(z, 1.0)  # f(1 * z)
    return {
        "f0": float(derivatives.f0),
        "d1": float(derivatives.d1),
        "d2": float(derivatives.d2),
        "regularization_ratio": float(derivatives.regularization_ratio),
        "z": [round(float(v), 6) + 0.0 for v in z],  # + 0.0: no -0.0
        "f": [float(v) for v in values.double()],
    }
