"""Checkpoints that a kill cannot corrupt, that never unpickle arbitrary objects, and that are checked on resume."""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from gpo_lab.store.atomic import atomic_path
from gpo_lab.store.run_files import LAST_CHECKPOINT

log = logging.getLogger(__name__)
# What torch says when a write into its zip archive stopped short, its only report of a full disk.
SHORT_WRITE = "unexpected pos"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it and renames it into place: a kill or a full
    disk mid-write leaves the previous checkpoint intact instead of a truncated one, and a full disk
    is reported as such (:class:`~gpo_lab.store.atomic.NoSpaceLeft`), not in torch's words."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"`Trainer.save_checkpoint(..., storage_options=...)` is not supported by {type(self).__name__}."
            )
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            save_reporting_write_errors(checkpoint, handle)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        # Checkpoints hold tensors and plain containers only: never unpickle arbitrary objects.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


class _Stream:
    """A file handle that keeps the error of a failed write, which torch replaces by its own."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_reporting_write_errors(checkpoint: dict[str, Any], handle) -> None:
    """``torch.save(checkpoint, handle)``, raising a failed write's own ``OSError``.

    torch turns it into ``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos``,
    which says nothing of a full disk; a write that stopped short without an error is one too.
    """
    stream = _Stream(handle)
    try:
        torch.save(checkpoint, stream)
    except RuntimeError as error:
        if stream.error is not None:
            raise stream.error from error
        if SHORT_WRITE in str(error):
            raise OSError(errno.ENOSPC, f"the write stopped short ({' '.join(str(error).split())})") from error
        raise


def usable_checkpoint(checkpoint_dir: Path) -> tuple[Path | None, int]:
    """The checkpoint to resume from and its step: ``last.ckpt``, else the newest other ``*.ckpt`` that loads.

    A checkpoint is data, not code, and may be damaged (a full disk, a bad copy, a file written by
    another tool): one that does not load as a Lightning checkpoint is moved aside to
    ``<name>.damaged-<time>`` (never deleted) and named in the log, and the next one is tried;
    with none left the run starts from step 0.
    """
    candidates = sorted(
        Path(checkpoint_dir).glob("*.ckpt"), key=lambda p: (p.name != LAST_CHECKPOINT, -p.stat().st_mtime)
    )
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if not isinstance(state, dict) or "state_dict" not in state:
                raise ValueError("not a Lightning checkpoint (no state_dict)")
            return path, int(state["global_step"])
        except PermissionError:
            raise
        except Exception as error:
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            log.warning("Checkpoint %s cannot be read (%s); moved it to %s.", path, reason, aside.name)
    return None, 0
