"""A run's resolved ``config.yaml``, read as plain data (the wandb logger and the report read it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def read_config_file(path: str | os.PathLike | None) -> dict[str, Any]:
    """The run's resolved ``config.yaml`` (written before the loggers are built), or {} if absent."""
    if path is None or not Path(path).is_file():
        return {}
    return yaml.safe_load(Path(path).read_text()) or {}
