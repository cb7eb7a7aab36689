"""Files that belong to someone else: a sweep another user owns, read-only or private to its owner.

Permission bits do not bind root, so as root the files are handed to another uid and the command
runs without the capabilities that let root ignore them (``setpriv``); as anyone else a chmod does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

OTHER_UID = 12345


def as_other_user(path: Path, mode: int) -> None:
    """Give ``path`` to another user (as root) with ``mode``, so this user may not write (or read) it."""
    if os.getuid() == 0:
        os.chown(path, OTHER_UID, OTHER_UID)
    os.chmod(path, mode)


def run_without_override(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` bound by permission bits even when this is root."""
    prefix = []
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise RuntimeError("setpriv (util-linux) is needed to drop root's permission override")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    return subprocess.run(
        [*prefix, sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
