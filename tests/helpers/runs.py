"""The Hydra application in-process: the config a command line composes, and its training run."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import gpo_lab.__main__  # noqa: F401  (registers the config resolvers)
from tests.helpers import CONF_DIR

# The synthetic study shrunk to seconds: a one-layer SFT policy of width 16 trained 20 steps, 64 training
# prompts and 12 held-out ones.
TINY_STUDY = [
    "+experiment=synthetic",
    "synthetic.sft.steps=20",
    "synthetic.sft.batch_size=16",
    "model.policy.hidden_size=16",
    "model.policy.num_layers=1",
    "model.policy.num_heads=2",
    "synthetic.pairs.num_train_prompts=64",
    "synthetic.pairs.num_eval_prompts=12",
    "synthetic.pairs.batch_size=64",
    "data.batch_size=8",
    "callbacks.sample_bank.num_prompts=12",
    "callbacks.progress=null",
]


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
