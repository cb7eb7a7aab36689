"""The optimization every task's LightningModule shares: the configured optimizer on the trainable
parameters, its learning rate warmed up linearly over ``optim.warmup_steps`` steps, then constant."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def optimization_options(cfg: DictConfig) -> dict[str, Any]:
    """The ``optimizer`` factory (``optim.optimizer``, a partial) and ``warmup_steps`` a module takes."""
    return {"optimizer": instantiate(cfg.optim.optimizer), "warmup_steps": cfg.optim.get("warmup_steps", 0)}


def warmed_up_optimizer(
    factory: OptimizerFactory, parameters: Iterable[torch.nn.Parameter], warmup_steps: int = 0
) -> dict[str, Any]:
    """What ``configure_optimizers`` returns: the optimizer and a per-step schedule, linear warm-up then constant."""
    optimizer = factory(params=list(parameters))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
