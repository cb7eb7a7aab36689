"""Start-up checks of the values a run needs, before any model or dataset is loaded.

Misspelt keys are already refused by Hydra (the config is in struct mode: ``beta2=1`` fails
with "Key 'beta2' is not in struct"); this checks types and ranges, with the fix in the message.
"""

from __future__ import annotations

import math
from numbers import Number

from omegaconf import DictConfig, OmegaConf

from gpo_lab.errors import ConfigError
from gpo_lab.losses import validate_beta


def _number(cfg: DictConfig, key: str, minimum: float, inclusive: bool, integer: bool = False, optional=False):
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    bound = f">= {minimum}" if inclusive else f"> {minimum}"
    valid = isinstance(value, Number) and not isinstance(value, bool) and math.isfinite(value)
    if valid and integer:
        valid = float(value).is_integer()
    if valid:
        valid = value >= minimum if inclusive else value > minimum
    if not valid:
        raise ConfigError(f"{key} must be {kind} {bound}, got {value!r}. Set it on the command line, e.g. {key}=...")


def validate_run_config(cfg: DictConfig) -> None:
    """Raise a ConfigError naming the first value that cannot work."""
    _number(cfg, "seed", 0, inclusive=True, integer=True)
    _number(cfg, "optim.lr", 0, inclusive=False)
    _number(cfg, "optim.warmup_steps", 0, inclusive=True, integer=True)
    _number(cfg, "trainer.max_steps", 1, inclusive=True, integer=True)
    interval = OmegaConf.select(cfg, "trainer.val_check_interval")
    if isinstance(interval, float) and not float(interval).is_integer():
        _number(cfg, "trainer.val_check_interval", 0, inclusive=False)
        if interval > 1:
            raise ConfigError(
                f"trainer.val_check_interval={interval}: use an integer number of steps, or a "
                "fraction of an epoch in (0, 1]."
            )
    else:
        _number(cfg, "trainer.val_check_interval", 1, inclusive=True, integer=True, optional=True)
    if OmegaConf.select(cfg, "data.batch_size") is not None:
        _number(cfg, "data.batch_size", 1, inclusive=True, integer=True)
        _number(cfg, "data.eval_batch_size", 1, inclusive=True, integer=True, optional=True)
    if OmegaConf.select(cfg, "data.max_length") is not None:
        _number(cfg, "data.max_length", 2, inclusive=True, integer=True)
        _number(cfg, "data.max_prompt_length", 1, inclusive=True, integer=True, optional=True)
        prompt, total = OmegaConf.select(cfg, "data.max_prompt_length"), cfg.data.max_length
        if prompt is not None and prompt >= total:
            raise ConfigError(
                f"data.max_prompt_length={prompt} leaves no room for a response in data.max_length="
                f"{total}; make max_prompt_length smaller than max_length."
            )
    validate_beta(cfg.beta)  # the one check of beta: every task reads it from here on
