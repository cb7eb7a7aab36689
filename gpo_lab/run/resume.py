"""Where a run starts in its directory: fresh, resumed from its last good checkpoint, or afresh after
the previous outcome is moved aside (nothing is ever deleted)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from gpo_lab.run.checkpoints import usable_checkpoint
from gpo_lab.run.metrics_file import MetricsFileLogger
from gpo_lab.store.records import read_json, read_metrics
from gpo_lab.store.run_files import METRICS_FILE, OUTCOME, PER_PROMPT_FILE, SAMPLES_FILE, RunFiles

log = logging.getLogger(__name__)


def has_run_files(run_dir: Path) -> bool:
    return RunFiles(run_dir).has_outcome()


def stored_fingerprint(run_dir: Path) -> str | None:
    try:
        return read_json(RunFiles(run_dir).summary).get("config_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def archive_previous_run(run_dir: Path, names: tuple[str, ...] = OUTCOME, exist_ok: bool = False) -> Path:
    """Move a finished run's files (``names`` of them) to ``previous-<time>/`` (nothing is deleted) so the
    directory can train afresh."""
    archive = run_dir / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
    archive.mkdir(exist_ok=exist_ok)
    for name in names:
        if (run_dir / name).exists():
            shutil.move(str(run_dir / name), archive / name)
    return archive


def resume_point(run_dir: Path, metrics_file: MetricsFileLogger) -> tuple[Path | None, int]:
    """The checkpoint to resume from (damaged ones moved aside), with ``metrics.jsonl`` cut back to match.

    Without a checkpoint the run starts at step 0, so the records of an earlier attempt (killed
    before its first checkpoint, or whose checkpoint was removed) are moved to ``previous-<time>/``:
    every step appears once in ``metrics.jsonl`` (and ``per_prompt.jsonl``, ``samples.jsonl``), and nothing
    is deleted.
    """
    resume_from, step = usable_checkpoint(RunFiles(run_dir).checkpoints)
    if resume_from is not None:
        log.info("Resuming from %s (step %d).", resume_from, step)
        metrics_file.truncate_after(step)
    elif read_metrics(metrics_file.path):
        # The per-step files of the same attempt go with its metrics.
        archive = archive_previous_run(run_dir, (METRICS_FILE, PER_PROMPT_FILE, SAMPLES_FILE), exist_ok=True)
        log.info(
            "No usable checkpoint in %s: training from step 0; the earlier attempt's %s is in %s.",
            run_dir,
            METRICS_FILE,
            archive,
        )
    return resume_from, step
