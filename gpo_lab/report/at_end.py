"""A sweep that ends in its report: a Hydra callback that runs ``python -m gpo_lab.report`` on the sweep
directory once every job has run, in the launching process (``+experiment=tldr_rehearsal`` uses it).

Registered under ``hydra.callbacks`` after ``exit_codes``: a sweep with a failed job still gets its
report of the jobs that completed before that callback ends it with code 1.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gpo_lab.report.__main__ import main as report_main


class ReportAtEnd(Callback):
    def __init__(self, wandb: str = "auto") -> None:
        self.wandb = wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report_main([str(config.hydra.sweep.dir), "--wandb", self.wandb])
