"""Checkpoint files that a kill cannot corrupt, and that never unpickle arbitrary objects."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from gpo_lab.run.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it and renames it into place: a kill
    mid-write leaves the previous checkpoint intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"`Trainer.save_checkpoint(..., storage_options=...)` is not supported by {type(self).__name__}."
            )
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        # Checkpoints hold tensors and plain containers only: never unpickle arbitrary objects.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
