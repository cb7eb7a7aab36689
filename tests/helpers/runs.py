"""The Hydra application in-process: the config a command line composes, and its training run."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import gpo_lab.__main__  # noqa: F401  (registers the config resolvers)
from tests.helpers import CONF_DIR


def compose_config(overrides: list[str], run_dir: Path | None = None):
    """The config ``python -m gpo_lab OVERRIDES`` would run, with its Hydra runtime set up."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_training(overrides: list[str], run_dir: Path) -> dict:
    """Train in this process exactly as the command line would, returning summary.json's content."""
    from gpo_lab.run.train import train

    cfg = compose_config(overrides, run_dir)
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return train(plain, run_dir)
