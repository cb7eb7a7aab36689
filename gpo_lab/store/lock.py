"""File locks: one process per run directory, and turns for jobs that build one cache entry.

Both are ``fcntl`` locks, which the kernel drops when the holder dies (even by SIGKILL), so a
stale lock never blocks a resume.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpo_lab.errors import ConfigError
from gpo_lab.store.run_files import RunFiles


class RunDirectoryBusy(ConfigError):
    """Another process is training in the same run directory."""


class RunLock:
    """An exclusive ``fcntl`` lock on ``<run_dir>/.lock`` held while a run trains.

    The kernel drops it when the process dies, even by SIGKILL, so a stale lock never blocks a
    resume; a second process started on the same directory is refused instead of clobbering it.
    """

    def __init__(self, run_dir: Path):
        self.path = RunFiles(run_dir).lock
        self.handle = None

    def __enter__(self) -> RunLock:
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
        path = RunFiles(run_dir).lock
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
