"""File locks: one process per run directory, and turns for jobs that build one cache entry.

Both are ``fcntl`` locks, which the kernel drops when the holder dies (even by SIGKILL), so a
stale lock never blocks a resume.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpo_lab.errors import ConfigError
from gpo_lab.store.run_files import RunFiles

log = logging.getLogger("gpo_lab")
WAIT_POLL_S = 0.5  # how often a waiter tries the lock again
WAIT_REPORT_S = 60.0  # how often a waiter says it still waits


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
    that build one cache entry take turns, and the kernel frees the lock if a holder dies.

    The holder removes the file before it lets go, so no lock file outlives its use (even when the
    work under it failed); a waiter that then gets the lock of the removed file sees that the path
    no longer names it, and locks the path afresh.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _locked(path)
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # while still held: every waiter on this file retries on the path
        except OSError:
            pass
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _locked(path: Path, report_every_s: float = WAIT_REPORT_S):
    """An open handle of ``path`` holding its lock, where ``path`` still names the locked file.

    A lock held by another process is waited for, saying which file and who holds it (the holder
    writes its pid, host and start time into the file) at once and every ``report_every_s`` seconds:
    a job that waits on another job's cache entry is never silent."""
    waited_since, reported = None, 0.0
    while True:
        handle = open(path, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                waited_since = waited_since if waited_since is not None else now
                if now - reported >= report_every_s or reported == 0.0:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    log.info(
                        "Waiting for %s, held by %s (waited %.0f s): it builds what this job needs; "
                        "the kernel frees the lock if that process dies.",
                        path,
                        holder,
                        now - waited_since,
                    )
                    reported = now
                handle.close()
                time.sleep(WAIT_POLL_S)
                continue
            held = os.fstat(handle.fileno())
            current = os.stat(path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}")
                handle.flush()
                return handle
        except FileNotFoundError:
            pass  # removed by the holder before us: lock the path afresh
        except BaseException:
            handle.close()
            raise
        handle.close()
