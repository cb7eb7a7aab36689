"""The Lightning logger behind ``metrics.jsonl`` (kept apart from the file helpers, which the
report and status commands import without loading Lightning)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from gpo_lab.run.logger_steps import UpdateStepLogging
from gpo_lab.store.records import atomic_write_text, read_metrics, to_jsonable
from gpo_lab.store.run_files import METRICS_FILE


class MetricsFileLogger(UpdateStepLogging, Logger):
    """A Lightning logger that appends one JSON object per logging call to ``metrics.jsonl``.

    ``step`` counts the optimizer updates applied before the values were measured, as in
    ``summary.json`` (see :mod:`gpo_lab.run.logger_steps`). Each line is written and flushed at
    once, so a kill loses at most the line being written.
    """

    def __init__(self, save_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(save_dir) / METRICS_FILE

    @property
    def name(self) -> str:
        return "metrics"

    @property
    def version(self) -> str:
        return "0"

    @property
    @rank_zero_experiment
    def experiment(self) -> Path:
        return self.path

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = self.step_of(metrics, step)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **to_jsonable(metrics)}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Forget what a resume from a checkpoint at ``step`` will log again.

        Training at ``step`` and later is repeated; the validation at ``step`` itself is not
        (Lightning saves the checkpoint just before it and does not rerun it on restart).
        """

        def kept(record: dict) -> bool:
            at = record.get("step")
            if at is None or at < step:
                return True
            return at == step and not any(key.startswith("train/") for key in record)

        records = read_metrics(self.path)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records if kept(r)))
