"""The files a run leaves behind for people and tools: ``metrics.jsonl`` and ``summary.json``.

Both are documented in docs/outputs.md; the report, the notebooks and the sweep status
read them, so their schema is an interface. Every write is atomic (:mod:`gpo_lab.store.atomic`), so
a killed run never leaves a half-written summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpo_lab.store.atomic import atomic_write_text
from gpo_lab.store.directions import metric_mode
from gpo_lab.store.run_files import METRICS_FILE, SUMMARY_FILE

SCHEMA_VERSION = 1

__all__ = [
    "METRICS_FILE",
    "SCHEMA_VERSION",
    "SUMMARY_FILE",
    "atomic_write_text",
    "metric_mode",
    "JobFiles",
    "read_job_files",
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
    """Records of a ``metrics.jsonl``; a torn last line (from a kill mid-write) is ignored.

    So is any line that is not a JSON object (a foreign or damaged file): readers of a sweep
    must list every other job whatever one file holds. An unreadable file raises ``OSError``.
    """
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _numeric(record: dict[str, Any]) -> dict[str, Any] | None:
    """A record with an integer step (or none) and its numeric values only; ``None`` for a foreign one."""
    step = record.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        return None
    return {k: v for k, v in record.items() if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


@dataclass
class JobFiles:
    """What a job directory's files say, read so that no file's content can stop a listing.

    ``problem`` names the damaged or unreadable file and why (``None`` when both read cleanly);
    ``summary`` is ``{}`` when ``summary.json`` is missing or damaged.
    """

    summary: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def read_job_files(run_dir: Path) -> JobFiles:
    """``summary.json`` and ``metrics.jsonl`` of one job, the one reader of the status command and the report."""
    run_dir, files = Path(run_dir), JobFiles()
    problems = []
    summary_path = run_dir / SUMMARY_FILE
    try:
        if summary_path.exists() or summary_path.is_symlink():
            summary = json.loads(summary_path.read_bytes().decode("utf-8"))
            if isinstance(summary, dict):
                files.summary = summary
            else:
                problems.append(f"{SUMMARY_FILE} holds {type(summary).__name__}, not a JSON object")
    except UnicodeDecodeError as error:
        problems.append(f"{SUMMARY_FILE} is not UTF-8 text (byte {error.start})")
    except json.JSONDecodeError as error:
        problems.append(f"{SUMMARY_FILE} is not valid JSON ({error.msg} at line {error.lineno})")
    except OSError as error:
        problems.append(f"{SUMMARY_FILE} cannot be read ({error.strerror or error})")
    try:
        files.records = [clean for record in read_metrics(run_dir / METRICS_FILE) if (clean := _numeric(record))]
    except OSError as error:
        problems.append(f"{METRICS_FILE} cannot be read ({error.strerror or error})")
    if problems:
        files.problem = (
            "; ".join(problems) + f" in {run_dir} (move the file aside; the job's command then runs it again)"
        )
    return files
