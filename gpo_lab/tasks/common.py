"""What every task shares: building a run's (module, datamodule) from its config."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def build_task(cfg: DictConfig) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The loss, then the task named by ``builder`` (a function ``build(cfg, loss, beta)``), seeded by ``seed``.

    ``beta`` and the other values were checked at start-up (:func:`gpo_lab.run.checks.validate_run_config`).
    """
    loss = instantiate(cfg.loss)
    log.info("loss %r", loss)
    pl.seed_everything(cfg.seed, workers=True)
    return get_method(cfg.builder)(cfg, loss, float(cfg.beta))
