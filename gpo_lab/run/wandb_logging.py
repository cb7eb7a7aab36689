"""Weights & Biases logging for a gpo_lab run: online when a key is configured, offline otherwise.

Offline runs are written under ``<run_dir>/wandb/`` and uploaded later with ``wandb sync``; the
local ``metrics.jsonl`` and ``summary.json`` are written whatever the logger, so nothing is lost
either way. The API key is never read into a config or written to a log: only whether one
exists is checked, without any network call.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import string
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from gpo_lab.errors import ConfigError
from gpo_lab.run.logger_steps import UpdateStepLogging
from gpo_lab.store.atomic import atomic_write_text
from gpo_lab.store.directions import metric_mode
from gpo_lab.store.redaction import redact_override

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
STEP_METRIC = "trainer/global_step"
RUN_ID_FILE = "run_id"  # inside <save_dir>/wandb/: a resumed job continues the same wandb run


def has_credentials() -> bool:
    """Whether wandb would find an API key (environment, ``wandb login``'s netrc, settings).

    Reads local state only; the key itself is neither returned nor logged.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        return bool(wbauth.read_netrc_auth(host=settings.base_url) or settings.api_key)
    except ImportError:  # another wandb version: its public (deprecated) accessor reads the same places
        import wandb

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(wandb.api.api_key)
    except Exception as error:  # an unreadable netrc or settings file means no usable key
        log.debug("wandb credentials check failed: %s", error)
        return False


def resolve_mode(mode: str | None = None) -> str:
    """The wandb mode to run in: ``mode`` if given, else ``WANDB_MODE``, else online iff a key exists."""
    requested = mode or os.environ.get("WANDB_MODE") or None
    if requested is None:
        return "online" if has_credentials() else "offline"
    requested = {"dryrun": "offline", "run": "online"}.get(requested, requested)
    if requested not in MODES:
        raise ConfigError(
            f"Unknown wandb mode {requested!r}. Use one of {', '.join(MODES)} "
            "(logger.wandb.mode=..., or the WANDB_MODE environment variable), or leave it unset."
        )
    return requested


def read_config_file(path: str | os.PathLike | None) -> dict[str, Any]:
    """The run's resolved ``config.yaml`` (written before the loggers are built), or {} if absent."""
    if path is None or not Path(path).is_file():
        return {}
    return yaml.safe_load(Path(path).read_text()) or {}


class WandbLogger(UpdateStepLogging, LightningWandbLogger):
    """Lightning's WandbLogger with gpo_lab's conventions.

    - ``mode``: online with a key, else offline (one log line says where the files are and how
      to upload them); an explicit ``mode`` or ``WANDB_MODE`` wins.
    - ``config`` holds the identifying numbers (loss, beta, lr, seed, ...) as top-level keys, and
      the whole resolved run config under ``config``.
    - Validation metrics are logged at the number of optimizer updates applied, as in
      ``metrics.jsonl`` (Lightning logs them one step lower during fit), against
      ``trainer/global_step``; each ``val/`` metric's summary keeps its last value, and its best
      where the metric declares which way is better (:mod:`gpo_lab.store.directions`).
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
        **kwargs: Any,
    ):
        self.mode = resolve_mode(mode)
        self._why = "as configured" if mode or os.environ.get("WANDB_MODE") else "no API key configured"
        save_dir = Path(save_dir)
        run_config = dict(config or {})
        full_config = read_config_file(config_file)
        if full_config:
            run_config["config"] = full_config
        super().__init__(
            name=name,
            save_dir=str(save_dir),
            id=self._run_id(save_dir),
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
        from gpo_lab.run.train import last_checkpoint

        path = save_dir / "wandb" / RUN_ID_FILE
        if path.is_file() and last_checkpoint(save_dir) is not None:
            return path.read_text().strip()
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        atomic_write_text(path, run_id + "\n")
        return run_id

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            import wandb

            if wandb.run is not None and wandb.run.id != self._id:
                wandb.run.finish()  # the previous job of this process; Lightning would reuse its run
            argv, sys.argv = sys.argv, [redact_override(arg) for arg in sys.argv]  # wandb records the command line
            try:
                run = super().experiment
            finally:
                sys.argv = argv
            if self.mode == "offline":
                sync_dir = run.settings.sync_dir
                log.info(
                    "wandb is offline (%s): the run is saved in %s; upload it later with: wandb sync %s",
                    self._why,
                    sync_dir,
                    shlex.quote(sync_dir),
                )
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name in metrics:
            if name.startswith("val/") and name not in self._defined and not name.endswith("_se"):
                mode = metric_mode(name)
                self.experiment.define_metric(name, step_metric=STEP_METRIC, summary=f"{mode},last" if mode else "last")
                self._defined.add(name)
        super().log_metrics(metrics, self.step_of(metrics, step))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status != "success" and self._experiment is not None:
            self._experiment.finish(exit_code=1)  # a successful run stays open for a last validation
