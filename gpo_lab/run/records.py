"""The files a run leaves behind for people and tools: ``metrics.jsonl`` and ``summary.json``.

Both are documented in docs/outputs.md; the report, the notebooks and the sweep status
read them, so their schema is an interface. Every write is atomic (:mod:`gpo_lab.run.atomic`), so
a killed run never leaves a half-written summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gpo_lab.run.atomic import atomic_write_text
from gpo_lab.run.directions import metric_mode

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
SCHEMA_VERSION = 1

__all__ = [
    "METRICS_FILE",
    "SCHEMA_VERSION",
    "SUMMARY_FILE",
    "atomic_write_text",
    "metric_mode",
    "read_json",
    "read_metrics",
    "to_jsonable",
    "write_json",
]


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
