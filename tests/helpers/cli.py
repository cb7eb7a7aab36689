"""The command line in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def run_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m gpo_lab ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "gpo_lab", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def wait_for(condition, timeout: float, what: str):
    """The first true value of ``condition()``, polled every half second; an AssertionError after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
