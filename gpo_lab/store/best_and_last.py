"""The last and the best value of every validation metric, as ``summary.json`` stores them.

One piece for the run (which feeds it each validation) and the report (which replays a running
job's ``metrics.jsonl``), so both agree on what "best" is. Lightning-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpo_lab.store.directions import PREFIX, metric_mode


class BestAndLast:
    """``final``: the latest value of each ``val/`` metric. ``best``: for each metric with a declared
    direction, ``{"value", "step", "mode"}`` of its best value (the first one on a tie), plus ``"se"``
    when the metric's standard error was logged with it."""

    def __init__(self, final: dict[str, float] | None = None, best: dict[str, dict[str, Any]] | None = None):
        self.final: dict[str, float] = dict(final or {})
        self.best: dict[str, dict[str, Any]] = dict(best or {})

    def update(self, step: int | None, values: Mapping[str, Any]) -> None:
        """Take the ``val/`` values measured at ``step`` (None values, e.g. a non-finite one read back, are skipped)."""
        values = {k: v for k, v in values.items() if k.startswith(PREFIX) and v is not None}
        self.final.update(values)
        for name, value in values.items():
            mode = metric_mode(name)
            if mode is None:
                continue
            current = self.best.get(name)
            if current is None or (value > current["value"] if mode == "max" else value < current["value"]):
                self.best[name] = {"value": value, "step": step, "mode": mode}
                if f"{name}_se" in values:
                    self.best[name]["se"] = values[f"{name}_se"]

    def replay(self, records: list[Mapping[str, Any]]) -> BestAndLast:
        """Feed the records of a ``metrics.jsonl`` in order."""
        for record in records:
            self.update(record.get("step"), record)
        return self
