"""``python -m gpo_lab``: the Hydra application over ``conf/``.

    python -m gpo_lab +experiment=smoke loss=hinge beta=0.1
    python -m gpo_lab -m +experiment=smoke loss=logistic,hinge beta=0.1,1
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gpo_lab.errors import user_facing_cause
from gpo_lab.losses import register_loss_configs

log = logging.getLogger("gpo_lab")


def job_dirname(override_dirname: str) -> str:
    """A job's directory is named by its overrides; a job without any gets ``default``."""
    return override_dirname or "default"


OmegaConf.register_new_resolver("gpo_lab.job_dirname", job_dirname, replace=True)
register_loss_configs()  # loss=dpo, loss=ipo, loss=slic: the registry's aliases


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from gpo_lab.run.train import train  # heavy imports after Hydra has parsed the command line

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        train(cfg, run_dir)
    except Exception as error:
        cause = user_facing_cause(error)
        message = str(cause) if cause is not None else f"{type(error).__name__}: {error}"
        log.error("Run failed (%s): %s", run_dir, message)
        if multirun:
            return  # the failure is in this job's summary.json; the other jobs of the sweep go on
        if cause is not None:
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
