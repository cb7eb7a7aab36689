"""Atomic writes: a file or directory that others read is built beside its target and renamed into place.

A reader (another job of the sweep, the report, a resume) therefore sees the old content or the new,
never half of one; a writer that fails or is killed leaves at most a hidden temporary behind. The
temporary is created as a plain ``open(path, "w")`` or ``mkdir`` would create it, under the
process umask, and is published with that mode even where a writer replaced it by its own private
file (safetensors does), so files of a shared sweep or cache stay readable by the team.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceLeft(OSError):
    """A write that failed because its disk (or the user's quota) is full; its message names the folder.

    An ``OSError`` (errno ENOSPC), so that code handling a failed write handles this one too.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` reports a full disk: an ``OSError`` (ENOSPC, EDQUOT), or a writer's own error
    that quotes the system's words for one (safetensors: ``I/O error: No space left on device``)."""
    if isinstance(error, OSError):
        return error.errno in DISK_FULL
    return any(os.strerror(code) in str(error) for code in DISK_FULL)


def no_space_left(folder: str | os.PathLike, what: str, error: BaseException, fix: str = "") -> NoSpaceLeft:
    """The error to raise for ``error``, a full disk met while writing ``what`` into ``folder``."""
    while isinstance(error, NoSpaceLeft) and error.__cause__ is not None:
        error = error.__cause__  # the writer's own words, once
    reason = " ".join(str(getattr(error, "strerror", None) or error).split())
    return NoSpaceLeft(
        errno.ENOSPC,
        f"No space left on {folder} (writing {what}: {reason}). Nothing there was replaced: what it held "
        f"before is intact. Free space there{fix}, then run the same command again.",
    )


@contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yields a new temporary file (or directory) in ``target``'s directory to fill.

    On a clean exit its contents are synced to disk and it is renamed over ``target``; on any
    error it is removed (a full disk is raised as :class:`NoSpaceLeft`). A directory target that
    already exists is removed just before the rename: replacing a directory is atomic only for
    readers that hold the writer's lock.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temporary(target, directory)
    except OSError as error:
        if is_disk_full(error):
            raise no_space_left(target.parent, target.name, error) from error
        raise
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        yield tmp
        _settle_tree(tmp, mode)
        if directory and target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _sync(target.parent)
    except BaseException as error:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if is_disk_full(error) and not isinstance(error, NoSpaceLeft):
            raise no_space_left(target.parent, target.name, error) from error
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _create_temporary(target: Path, directory: bool) -> Path:
    """A fresh hidden name beside ``target``, created with the umask's permissions (exclusively: never shared)."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _settle_tree(path: Path, mode: int) -> None:
    """Give a file, or everything under a directory, the mode a plain open or mkdir gives, and fsync it,
    so that the rename publishes written, readable bytes."""
    if not path.is_dir():
        return _settle(path, mode)
    for root, _, files in os.walk(path):
        for name in files:
            _settle(Path(root) / name, mode & 0o666)
        _settle(Path(root), mode)


def _settle(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)
    _sync(path)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():  # some file systems cannot sync a directory; the rename is atomic all the same
            raise
    finally:
        os.close(fd)
