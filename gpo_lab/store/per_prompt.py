"""``per_prompt.jsonl``: each evaluation's per-prompt values, for a bootstrap over evaluation prompts.

One JSON object per line, ``{"step": S, NAME: [v_0, v_1, ...], ...}``: the values of one
evaluation callback at step S (optimizer updates applied, as in ``metrics.jsonl``), one per
held-out prompt in the sample bank's fixed prompt order, so index i is the same prompt at every
step and in every job of a sweep. The win-rate callback writes ``win_rate`` (the judge's score of
each prompt: 1, 1/2, 0 or a probability), the KL callback ``kl_seq`` and ``kl_token``; both write
lines of their own, and a reader merges the lines of one step.

The file follows ``metrics.jsonl``'s rules (:mod:`gpo_lab.run.metrics_file`): written by global
rank 0 only, one line flushed at a time, a torn last line ignored by the reader. A run that
resumes from a checkpoint evaluates again the steps after it: the first write of each writer in a
process drops that writer's earlier values at that step and later ones, and the reader keeps the
last value of a name at a step, so no step appears twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gpo_lab.store.records import atomic_write_text, read_metrics, to_jsonable
from gpo_lab.store.run_files import PER_PROMPT_FILE


class PerPromptFile:
    """Appends one evaluation's per-prompt values of a fixed set of names to ``per_prompt.jsonl``."""

    def __init__(self, run_dir: str | Path, names: Iterable[str]):
        self.path = Path(run_dir) / PER_PROMPT_FILE
        self.names = frozenset(names)
        self._written: set[int] = set()  # steps this writer has written in this process
        self._started = False

    def append(self, step: int, values: Mapping[str, Iterable[float]]) -> None:
        unknown = set(values) - self.names
        if unknown:
            raise ValueError(f"{PER_PROMPT_FILE}: this writer writes {sorted(self.names)}, not {sorted(unknown)}")
        if not self._started:
            self._drop(lambda at: at >= step)  # an earlier attempt's values, evaluated again from here
            self._started = True
        elif step in self._written:  # a second evaluation at one step (the closing validate): the last one stands
            self._drop(lambda at: at == step)
        record = {"step": int(step), **{name: [float(v) for v in vs] for name, vs in values.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(to_jsonable(record)) + "\n")
            handle.flush()
        self._written.add(int(step))

    def _drop(self, at_step) -> None:
        """Rewrite the file without this writer's names at the chosen steps (and without a torn line)."""
        if not self.path.exists():
            return
        kept = []
        for record in read_metrics(self.path):
            step = record.get("step")
            if isinstance(step, int) and at_step(step):
                record = {k: v for k, v in record.items() if k not in self.names}
                if set(record) <= {"step"}:
                    continue
            kept.append(record)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_per_prompt(run_dir: str | Path) -> dict[int, dict[str, list[float | None]]]:
    """Step -> name -> per-prompt values; the lines of one step merged, the last value of a name kept.

    A missing file gives ``{}``; a torn or foreign line is skipped. ``None`` stands for a value that
    was not finite when written.
    """
    steps: dict[int, dict[str, list[float | None]]] = {}
    for record in read_metrics(Path(run_dir) / PER_PROMPT_FILE):
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        for name, values in record.items():
            if name != "step" and isinstance(values, list):
                steps.setdefault(step, {})[name] = values
    return dict(sorted(steps.items()))


def write_from_callback(callback: Any, trainer: Any, names: Iterable[str], values: Mapping[str, Any]) -> None:
    """Rank 0 of a training run appends ``values`` at the trainer's step; other ranks write nothing.

    The writer lives on the callback (``_per_prompt_file``), created at its first evaluation in the
    run directory (``trainer.default_root_dir``, where ``metrics.jsonl`` is).
    """
    if not getattr(trainer, "is_global_zero", True):
        return
    writer = getattr(callback, "_per_prompt_file", None)
    run_dir = Path(trainer.default_root_dir)
    if writer is None or writer.path.parent != run_dir:
        writer = PerPromptFile(run_dir, names)
        callback._per_prompt_file = writer
    writer.append(trainer.global_step, {name: _floats(v) for name, v in values.items()})


def _floats(values: Any) -> list[float]:
    if hasattr(values, "detach"):
        values = values.detach().double().cpu().flatten().tolist()
    return [float(v) for v in values]
