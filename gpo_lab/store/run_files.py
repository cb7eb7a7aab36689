"""The names of every file a run directory holds, in one place.

``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``per_prompt.jsonl``, ``samples.jsonl`` and ``checkpoints/`` are
interfaces (docs/outputs.md): the report, the status command, the notebooks and users read them by
these names. Everything that writes or reads a run's files names them through :class:`RunFiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PER_PROMPT_FILE = "per_prompt.jsonl"
SAMPLES_FILE = "samples.jsonl"  # each evaluation's prompts, samples and judge scores as text
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
LOCK_FILE = ".lock"
HYDRA_DIR = ".hydra"

# What a run's outcome consists of: moved aside together when a finished directory trains afresh.
OUTCOME = (SUMMARY_FILE, METRICS_FILE, PER_PROMPT_FILE, SAMPLES_FILE, CONFIG_FILE, CHECKPOINT_DIR)


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run directory's files."""

    dir: Path

    def __init__(self, run_dir: str | Path) -> None:
        object.__setattr__(self, "dir", Path(run_dir))

    @property
    def config(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS_FILE

    @property
    def summary(self) -> Path:
        return self.dir / SUMMARY_FILE

    @property
    def per_prompt(self) -> Path:
        return self.dir / PER_PROMPT_FILE

    @property
    def samples(self) -> Path:
        return self.dir / SAMPLES_FILE

    @property
    def checkpoints(self) -> Path:
        return self.dir / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def lock(self) -> Path:
        return self.dir / LOCK_FILE

    @property
    def hydra_config(self) -> Path:
        """Hydra's own copy of the config, for directories written before ``config.yaml`` existed."""
        return self.dir / HYDRA_DIR / CONFIG_FILE

    def has_outcome(self) -> bool:
        """Whether any file of a run's outcome is here (the directory is not fresh)."""
        return any((self.dir / name).exists() for name in OUTCOME if name not in (PER_PROMPT_FILE, SAMPLES_FILE))
