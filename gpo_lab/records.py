"""The files a run leaves behind for people and tools: ``metrics.jsonl`` and ``summary.json``.

Both are documented in README.md ("Outputs"); the report, the notebooks and the sweep status
read them, so their schema is an interface. Every write is atomic (a temporary file renamed over
the target), so a killed run never leaves a half-written summary.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
SCHEMA_VERSION = 1

# Validation metrics for which larger is better; every other one is better smaller.
_HIGHER_IS_BETTER = ("win_rate", "accuracies", "margins", "rewards/chosen", "reward", "rho_mean")


def metric_mode(name: str) -> str:
    return "max" if any(key in name for key in _HIGHER_IS_BETTER) else "min"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def to_jsonable(value: Any) -> Any:
    """Plain JSON: tensors and numpy scalars become floats, NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl``; a torn last line (from a kill mid-write) is ignored."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsFileLogger(Logger):
    """A Lightning logger that appends one JSON object per logging call to ``metrics.jsonl``.

    ``step`` counts the optimizer updates applied before the values were measured: training
    records carry Lightning's step; validation records carry ``trainer.global_step`` (Lightning
    itself logs them one lower), so they match the steps in ``summary.json``. Each line is
    written and flushed at once, so a kill loses at most the line being written.
    """

    def __init__(self, save_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(save_dir) / METRICS_FILE
        self.trainer = None  # set by the run, to date validation records

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
        if self.trainer is not None and any(key.startswith("val/") for key in metrics):
            step = self.trainer.global_step
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
