"""Weights & Biases logging for a gpo_lab run: online when a key is configured, offline otherwise.

Offline runs are written under ``<run_dir>/wandb/`` and uploaded later with ``wandb sync``; the
local ``metrics.jsonl`` and ``summary.json`` are written whatever the logger, so nothing is lost
either way. Which mode applies is decided by :mod:`gpo_lab.run.wandb_mode`.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shlex
import shutil
import string
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from gpo_lab.run.logger_steps import UpdateStepLogging
from gpo_lab.run.wandb_mode import reachable_mode, resolve_mode
from gpo_lab.run.wandb_names import GROUP_FILE, job_overrides, override_columns, short_name, sweep_group, swept_keys
from gpo_lab.store.atomic import atomic_write_text
from gpo_lab.store.config_file import read_config_file
from gpo_lab.store.directions import metric_mode
from gpo_lab.store.redaction import redact_override
from gpo_lab.store.run_files import RunFiles

log = logging.getLogger(__name__)

STEP_METRIC = "trainer/global_step"
RUN_ID_FILE = "run_id"  # inside <save_dir>/wandb/: a resumed job continues the same wandb run
SAVED_CONFIG = "run_config.yaml"  # the run's config.yaml, in the wandb run's files
SAMPLES_KEY = "val/samples"


def _finish_if_open(run) -> None:
    if not getattr(run, "_is_finished", True):
        run.finish()


class WandbLogger(UpdateStepLogging, LightningWandbLogger):
    """Lightning's WandbLogger with gpo_lab's conventions.

    - ``mode``: online with a key, else offline (one log line says where the files are and how
      to upload them); an explicit ``mode`` or ``WANDB_MODE`` wins. An online run whose server
      does not answer within seconds logs offline instead, with a warning (one check a process).
    - ``group`` None: one group per sweep invocation, a single run its own; ``name`` None:
      ``logistic-b0.1-lr0.001-s0`` and the job's values of other swept keys (:mod:`gpo_lab.run.wandb_names`).
    - ``config`` holds the identifying numbers (loss, beta, lr, seed, ...) and every override of
      the job as top-level keys, and the whole resolved run config under ``config`` (the run's
      ``config.yaml`` in ``save_dir``, unless ``config_file`` names another file), which is also
      saved among the run's files as ``run_config.yaml``.
    - Every metric is plotted against ``trainer/global_step``; validation metrics are logged at the
      number of optimizer updates applied, as in ``metrics.jsonl`` (Lightning logs them one step
      lower during fit); a metric's summary keeps its last value, and its best where the metric
      declares which way is better (:mod:`gpo_lab.store.directions`).
    - Each evaluation's samples are the ``val/samples`` table (:meth:`log_samples`).
    - A job resumed from its checkpoint continues the same wandb run (the id is kept in
      ``<save_dir>/wandb/run_id``); a fresh start is a fresh run.
    - Sequential jobs of one process (Hydra's basic launcher) each get their own run.
    """

    def __init__(
        self,
        project: str = "gpo_lab",
        name: str | None = None,
        group: str | None = None,
        tags: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
        config_file: str | os.PathLike | None = None,
        save_dir: str | os.PathLike = ".",
        mode: str | None = None,
        entity: str | None = None,
        job_type: str = "train",
        overrides: Iterable[str] = (),
        exclude_keys: Iterable[str] = (),
        sweep_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ):
        self.mode, unreachable = reachable_mode(resolve_mode(mode))
        self._why = unreachable or (
            "as configured" if mode or os.environ.get("WANDB_MODE") else "no API key configured"
        )
        save_dir = Path(save_dir)
        self._config_path = Path(config_file) if config_file is not None else RunFiles(save_dir).config
        full_config = read_config_file(self._config_path)
        typed = job_overrides(overrides or full_config.get("overrides") or [], exclude_keys)  # as typed, redacted
        run_config = {**override_columns(full_config, typed), **(config or {})}
        if full_config:
            run_config["config"] = full_config
        run_id = self._run_id(save_dir)
        sweep = sweep_group(save_dir, sweep_dir)  # None: not a job of a multirun
        group = group or sweep or f"{run_config.get('sweep') or project}-{run_id}"
        atomic_write_text(save_dir / "wandb" / GROUP_FILE, group + "\n")  # where the report attaches its run
        super().__init__(
            name=name or short_name(run_config, typed, swept_keys(sweep_dir) if sweep else ()),
            save_dir=str(save_dir),
            id=run_id,
            project=project,
            entity=entity,
            group=group,
            tags=[str(tag) for tag in tags],
            config=run_config,
            mode=self.mode,
            job_type=job_type,
            **kwargs,
        )
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # wandb warns that the setting is obsolete
        self._defined: set[str] = set()

    @staticmethod
    def _run_id(save_dir: Path) -> str:
        """The stored id when the run resumes from a checkpoint; a new one (stored) otherwise."""
        path = save_dir / "wandb" / RUN_ID_FILE
        if path.is_file() and RunFiles(save_dir).last_checkpoint.is_file():
            return path.read_text().strip()
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        atomic_write_text(path, run_id + "\n")
        return run_id

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            import wandb  # slow to import: only when a run actually logs to wandb

            if wandb.run is not None and wandb.run.id != self._id:
                wandb.run.finish()  # the previous job of this process; Lightning would reuse its run
            argv, sys.argv = sys.argv, [redact_override(arg) for arg in sys.argv]  # wandb records the command line
            try:
                run = super().experiment
            finally:
                sys.argv = argv
            self._prepare(run)
            if self.mode == "offline":
                sync_dir = run.settings.sync_dir
                log.info(
                    "wandb is offline (%s): the run is saved in %s; upload it later with: wandb sync %s",
                    self._why,
                    sync_dir,
                    shlex.quote(sync_dir),
                )
        return self._experiment

    def _prepare(self, run) -> None:
        """Steps, the config file, and a finish of the run before the interpreter's own shutdown."""
        run.define_metric(STEP_METRIC)
        run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
        if self._config_path.is_file():  # files/config.yaml is wandb's own: the run's config sits beside it
            saved = Path(run.dir) / SAVED_CONFIG
            shutil.copyfile(self._config_path, saved)
            run.save(str(saved), base_path=run.dir, policy="now")
        # Left to wandb's exit hook, a run open at exit is closed after wandb's service has hung up: its
        # message reader waits on an abandoned handle (a HandleAbandonedError traceback in debug.log).
        # Finishing first, from a hook registered after wandb's (exit hooks run last-in first-out), closes it cleanly.
        atexit.register(_finish_if_open, run)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name in metrics:
            if name not in self._defined and name != STEP_METRIC and not name.endswith("_se"):
                mode = metric_mode(name)
                self.experiment.define_metric(name, step_metric=STEP_METRIC, summary=f"{mode},last" if mode else "last")
                self._defined.add(name)
        super().log_metrics(metrics, self.step_of(metrics, step))

    @rank_zero_only
    def log_samples(self, rows: list[Mapping[str, Any]], step: int) -> None:
        """One evaluation's samples (:mod:`gpo_lab.eval.samples_file`) as the ``val/samples`` table."""
        import wandb

        columns = list(dict.fromkeys(key for row in rows for key in row if key != "step"))
        table = wandb.Table(columns=columns, data=[[row.get(key) for key in columns] for row in rows])
        self.experiment.log({SAMPLES_KEY: table, STEP_METRIC: step})

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status != "success" and self._experiment is not None:
            self._experiment.finish(exit_code=1)  # a successful run stays open for a last validation
