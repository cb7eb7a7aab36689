"""Start-up checks of the values a run needs, before any model or dataset is loaded.

Misspelt keys are already refused by Hydra (the config is in struct mode: ``beta2=1`` fails
with "Key 'beta2' is not in struct"); this checks types and ranges, with the fix in the message.
"""

from __future__ import annotations

import math
import tempfile
from numbers import Number
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import validate_beta
from gpo_lab.store.run_files import CHECKPOINT_DIR


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


MAX_BETA = 1e4  # beyond it beta * rho and the gradient overflow float32 (beta=1e300 is inf, so NaN at step 0)
# What to set for the mandatory values (``???``) of the shipped options.
MISSING_HINTS = {
    "loss.fn": "loss=custom needs your f, an importable function of a tensor: add loss.fn=mypkg.losses.my_f",
    "data.dataset.path": "data=hf needs its data: add data.dataset.path=ORG/NAME for a hub dataset, or "
    "data.dataset.path=pairs.jsonl for a local .jsonl, .json, .csv or .parquet file",
}


def check_no_missing_values(cfg: DictConfig) -> None:
    """Name every mandatory value left unset (``???``), with what to set, instead of OmegaConf's raw error."""
    missing = sorted(key for key in OmegaConf.missing_keys(cfg) if not str(key).startswith("hydra."))
    if missing:
        hints = [MISSING_HINTS.get(key, f"set it on the command line: {key}=...") for key in missing]
        details = "; ".join(f"{key} is not set: {hint}" for key, hint in zip(missing, hints))
        raise ConfigError(f"Missing value(s): {details}.")


def check_writable(run_dir: Path) -> None:
    """The run directory and its checkpoint folder must take files, or hours of training would be lost at the end."""

    run_dir = Path(run_dir)
    checkpoints = run_dir / CHECKPOINT_DIR
    if checkpoints.exists() and not checkpoints.is_dir():
        raise ConfigError(
            f"{checkpoints} is a file, so no checkpoint can be written there. Move it aside, or run in another "
            "directory (hydra.run.dir=... / hydra.sweep.dir=...)."
        )
    for directory in (run_dir, checkpoints):
        if not directory.exists():
            continue
        try:
            with tempfile.TemporaryFile(dir=directory, prefix=".write-test-"):
                pass
        except OSError as error:
            raise ConfigError(
                f"Cannot write into {directory} ({error.strerror or error}): the run would lose its checkpoints "
                "and summary.json. Make it writable for this user, or run in another directory "
                "(hydra.run.dir=... / hydra.sweep.dir=...)."
            ) from None


def validate_run_config(cfg: DictConfig) -> None:
    """Raise a ConfigError naming the first value that cannot work."""
    check_no_missing_values(cfg)
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
    if cfg.beta > MAX_BETA:
        raise ConfigError(
            f"beta={cfg.beta!r} is too large: beta * rho and its gradient overflow float32 above beta={MAX_BETA:g} "
            "(the loss is NaN from step 0). Use a beta in the paper's range, e.g. beta=0.1 ... 10."
        )
