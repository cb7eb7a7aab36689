"""``samples.jsonl``: what the policy and the reference wrote at each evaluation, as text.

The KL and win-rate numbers say how far the policy moved; these lines let a reader see it. One
JSON object per held-out prompt per evaluation, in the sample bank's fixed prompt order::

    {"step": 200, "index": 0, "prompt": "...", "policy": "...", "reference": "...",
     "policy_length": 37, "reference_length": 41,
     "policy_reward": 1.2, "reference_reward": 0.4, "win": 1.0}

``step`` counts the optimizer updates applied, as in ``metrics.jsonl``; lengths are in tokens (EOS
included when the response reached it); the judge's fields come from the win-rate callback when
it ran on this evaluation (``win``: the judge's score of policy against reference, 1, 1/2, 0 or a
probability; the rewards when the judge is a reward judge), and are absent otherwise. For the
synthetic task the texts are the words of its closed vocabulary.

The file follows ``metrics.jsonl``'s rules (:mod:`gpo_lab.run.metrics_file`): global rank 0 writes,
one evaluation at a time, flushed; a torn last line is skipped by :func:`read_samples`. At the start
of training the lines after the step it starts from are dropped (a resume evaluates them again;
a fresh start keeps none), and a second evaluation at one step replaces the first. Every logger
with a ``log_samples(rows, step)`` method (the wandb logger: a ``val/samples`` table) gets the rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from gpo_lab.eval.sample_bank import find_bank
from gpo_lab.eval.sampling import SampleBank
from gpo_lab.eval.win_rate import WinRateCallback
from gpo_lab.store.records import atomic_write_text, read_metrics, to_jsonable
from gpo_lab.store.run_files import RunFiles


def read_samples(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of a run's ``samples.jsonl`` (a missing file: none; a torn line skipped)."""
    return [r for r in read_metrics(RunFiles(run_dir).samples) if isinstance(r.get("step"), int)]


def sample_rows(bank: SampleBank, tokenizer: Any = None, scores: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per prompt of ``bank``: texts, lengths in tokens and, with ``scores``, the judge's per-prompt values."""
    columns = {name: _floats(values) for name, values in (scores or {}).items()}
    rows = []
    for i in range(len(bank)):
        prompt = bank.prompts[i]
        if not isinstance(prompt, str):  # a conversation: its text as the model saw it
            prompt = tokenizer.decode(bank.prompt_ids[i], skip_special_tokens=True) if tokenizer else json.dumps(prompt)
        row = {
            "step": int(bank.step),
            "index": i,
            "prompt": prompt,
            "policy": bank.policy_texts[i],
            "reference": bank.reference_texts[i],
            "policy_length": len(bank.policy_ids[i]),
            "reference_length": len(bank.reference_ids[i]),
        }
        row.update({name: values[i] for name, values in columns.items()})
        rows.append(row)
    return rows


class SamplesFile:
    """Writes evaluations' rows to one run's ``samples.jsonl``."""

    def __init__(self, run_dir: str | Path):
        self.path = RunFiles(run_dir).samples

    def keep_until(self, step: int) -> None:
        """Drop the lines of evaluations after ``step`` (all of them at step 0: a fresh start)."""
        self._rewrite(lambda at: at <= step and step > 0)

    def append(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Write one evaluation's rows, replacing any earlier ones at the same step."""
        self._rewrite(lambda at: at != step)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write("".join(json.dumps(to_jsonable(row)) + "\n" for row in rows))
            handle.flush()

    def _rewrite(self, keep) -> None:
        records = read_metrics(self.path)
        kept = [r for r in records if isinstance(r.get("step"), int) and keep(r["step"])]
        if len(kept) != len(records) or (self.path.exists() and not self._ends_clean()):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def _ends_clean(self) -> bool:
        data = self.path.read_bytes()
        return not data or data.endswith(b"\n")


class SamplesCallback(pl.Callback):
    """Writes each evaluation's sample bank to ``samples.jsonl`` and hands the rows to the loggers.

    Needs ``callbacks.sample_bank`` (it reads that bank, drawing nothing of its own); the judge's
    scores are those the win-rate callback gave the same bank. Runs at the end of the validation,
    after every callback's epoch end, whatever the order of the ``callbacks`` entries.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            SamplesFile(trainer.default_root_dir).keep_until(trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bank = find_bank(trainer, "samples").current(trainer, pl_module)
        if bank is None or not trainer.is_global_zero:
            return
        scores = None
        for callback in trainer.callbacks:
            if isinstance(callback, WinRateCallback) and id(bank) in callback.scored:
                scores = callback.scored[id(bank)]
        tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        rows = sample_rows(bank, tokenizer, scores)
        step = trainer.global_step
        SamplesFile(trainer.default_root_dir).append(step, [{**row, "step": step} for row in rows])
        for logger in trainer.loggers:
            log_samples = getattr(logger, "log_samples", None)
            if callable(log_samples):
                log_samples(rows, step)


def _floats(values: Any) -> list[float]:
    if hasattr(values, "detach"):
        values = values.detach().double().cpu().flatten().tolist()
    return [float(v) for v in values]
