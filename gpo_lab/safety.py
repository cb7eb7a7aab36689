"""Guards that keep a run's files trustworthy: one process per run directory, atomic
checkpoints, no secrets in saved configs, and a stop at the first non-finite loss or gradient."""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from gpo_lab.errors import ConfigError

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password)", re.IGNORECASE)
REDACTED = "<redacted>"


class RunDirectoryBusy(ConfigError):
    """Another process is training in the same run directory."""


class RunLock:
    """An exclusive ``fcntl`` lock on ``<run_dir>/.lock`` held while a run trains.

    The kernel drops it when the process dies, even by SIGKILL, so a stale lock never blocks a
    resume; a second process started on the same directory is refused instead of clobbering it.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.handle = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise RunDirectoryBusy(
                f"Another process is already training in {self.path.parent}. Wait for it, or give this run "
                "another directory (another name=... or other overrides)."
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

    @staticmethod
    def is_held(run_dir: Path) -> bool:
        """Whether a live process holds the lock of ``run_dir`` (used by the sweep status)."""
        path = Path(run_dir) / ".lock"
        if not path.exists():
            return False
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Block until this process holds an exclusive ``fcntl`` lock on ``path``: concurrent jobs
    that build one cache entry take turns, and the kernel frees the lock if a holder dies."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file and renames it into place: a kill mid-write
    leaves the previous checkpoint intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        # Checkpoints hold tensors and plain containers only: never unpickle arbitrary objects.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def redact_secrets(value: Any) -> Any:
    """A copy of a plain config container with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if SECRET_KEY.search(str(k)) and v is not None else redact_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str):
        return redact_override(value)  # command-line overrides recorded in the config
    return value


def redact_override(override: str) -> str:
    """``+x.api_key=abc`` becomes ``+x.api_key=<redacted>``; other overrides are unchanged."""
    key, sep, value = override.partition("=")
    return f"{key}={REDACTED}" if sep and SECRET_KEY.search(key) else override


class NonFiniteError(FloatingPointError):
    """A NaN or infinity in the loss or the gradients; the run stops before applying it."""


def check_finite_loss(step: int, losses: torch.Tensor, rho: torch.Tensor) -> None:
    if torch.isfinite(losses).all():
        return
    bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    raise NonFiniteError(
        f"Non-finite loss at step {step}: examples {bad[:8]} of the batch have loss "
        f"{losses[bad[:8]].tolist()} with rho {rho.detach()[bad[:8]].tolist()}. The last good checkpoint is kept; "
        "lower optim.lr or beta, or check the data of this batch."
    )


def check_finite_gradients(step: int, named_parameters) -> torch.Tensor:
    """The global gradient norm, after making sure no gradient holds a NaN or an infinity."""
    norms, bad = [], []
    for name, parameter in named_parameters:
        if parameter.grad is None:
            continue
        norm = parameter.grad.detach().norm(2)
        norms.append(norm)
        if not torch.isfinite(norm):
            bad.append(name)
    if bad:
        raise NonFiniteError(
            f"Non-finite gradient at step {step} in {len(bad)} parameters, e.g. {', '.join(bad[:4])}. The update "
            "was not applied and the last good checkpoint is kept; lower optim.lr or set trainer.gradient_clip_val."
        )
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
