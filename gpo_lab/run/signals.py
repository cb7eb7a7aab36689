"""SIGTERM (``kill``, schedulers, ``timeout``) and SIGINT (Ctrl-C): a run or a sweep asked to stop ends ``interrupted``.

A run records ``status: interrupted`` in ``summary.json`` and the same command resumes it; the process exits
with the shell's code for the signal (143 for SIGTERM, 130 for SIGINT), never 0. A process that was asked to
stop starts no further job: a sweep's launching process hands the signal on to the processes that run its jobs,
waits for them to record it, and ends them; a worker that got the signal refuses every job it is handed after.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpo_lab.store.lock import RunLock

log = logging.getLogger("gpo_lab")
HANDLED = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 20.0  # how long a sweep waits for its jobs to record their interruption before it ends their processes


class Interrupted(BaseException):
    """This process was asked to stop by ``signum``; a BaseException, as KeyboardInterrupt, so nothing swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal_name(signum)}")

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


class _State:
    """What this process received; whether a running trainer stops at its next batch by itself (Lightning's TERM)."""

    received: int | None = None
    in_fit = False
    launching_pid: int | None = None
    sweep_dir: Path | None = None
    before_sweep: dict = {}


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended (143 TERM, 130 INT)."""
    return 128 + int(signum)


def received() -> int | None:
    return _State.received


def stop_signal(error: BaseException) -> int | None:
    """The signal that ended this process's work, if any: once a stop was asked for, whatever error follows
    (Lightning's SIGTERMException, the SystemExit(1) it makes of Ctrl-C, a DataLoader worker gone) is its doing."""
    if _State.received is not None:
        return _State.received
    if isinstance(error, SystemExit) and type(error).__name__ == "SIGTERMException":  # Lightning's, by name:
        # importing Lightning here would slow down the commands that never train (``--help``, ``--cfg``)
        return signal.SIGTERM
    if isinstance(error, KeyboardInterrupt):
        return signal.SIGINT
    return None


def refuse_if_stopping() -> None:
    """A process asked to stop starts no new job (a pool worker handed one more job after the signal)."""
    if _State.received is not None:
        raise Interrupted(_State.received)


def in_launching_process() -> bool:
    """Whether this process launched the sweep (the basic launcher runs its jobs here too)."""
    return _State.launching_pid == os.getpid()


def sweep_dir() -> Path | None:
    return _State.sweep_dir


def _on_run_signal(signum, frame) -> None:
    first = _State.received is None
    _State.received = _State.received or signum
    if first and not (_State.in_fit and signum == signal.SIGTERM):  # Lightning stops at the batch's end
        raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While a run trains here: SIGTERM and SIGINT end it as :class:`Interrupted` (the first one; later ones are
    only noted, so that a second Ctrl-C does not break the recording of the first)."""
    with _handlers(_on_run_signal):
        yield


@contextmanager
def trainer_running() -> Iterator[None]:
    """Around ``trainer.fit``/``validate``: Lightning, which hands SIGTERM on to this module's handler, raises
    at the end of the current batch, so a TERM stops the run between two steps rather than inside one."""
    _State.in_fit = True
    try:
        yield
    finally:
        _State.in_fit = False


def _on_sweep_signal(signum, frame) -> None:
    if _State.received is not None:
        return
    _State.received = signum
    children = _child_pids()
    log.warning(
        "%s: stopping the sweep; %d job process(es) told to record their state.", signal_name(signum), len(children)
    )
    for pid in children:
        try:
            os.kill(pid, signum)
        except OSError:
            continue
    deadline = time.time() + GRACE_S
    while time.time() < deadline and _jobs_training(_State.sweep_dir):
        time.sleep(0.2)
    raise Interrupted(signum)


def watch_sweep(sweep_dir: Path) -> None:
    """In the launching process, from the start of a multirun: a signal stops the whole sweep (see the module)."""
    _State.launching_pid, _State.sweep_dir = os.getpid(), Path(sweep_dir)
    if threading.current_thread() is threading.main_thread():
        _State.before_sweep = {signum: signal.signal(signum, _on_sweep_signal) for signum in HANDLED}


def unwatch_sweep() -> None:
    """The handlers from before the sweep, once it ended (a process may go on after it: a test, a notebook)."""
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _State.before_sweep.items():
            signal.signal(signum, handler)
    _State.before_sweep = {}


@contextmanager
def _handlers(handler) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _child_pids() -> list[int]:
    """This process's children (the pool's workers, submitit's local jobs), read from ``/proc``."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry))
    return found


def _jobs_training(sweep: Path | None) -> bool:
    if sweep is None or not sweep.is_dir():
        return False
    try:
        return any(RunLock.is_held(job) for job in sweep.iterdir() if job.is_dir())
    except OSError:
        return False
