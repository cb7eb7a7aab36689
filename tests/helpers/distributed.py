"""Runs of several processes and their comparison with one process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.cli import run_cli


def run_in(run_dir: Path, overrides: list[str], timeout: int = 300, env: dict | None = None):
    """``python -m gpo_lab OVERRIDES`` with its run directory at ``run_dir``, from the checkout (so that
    ``tests.helpers`` targets import in every rank)."""
    return run_cli([*overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT, timeout=timeout, env=env)


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]


def relative_differences(values: dict[str, float], expected: dict[str, float], floor: float = 1e-3) -> dict:
    """``|a - b| / max(|b|, floor)`` per key of ``expected`` (the floor keeps values near 0 from inflating it)."""
    return {k: abs(values[k] - b) / max(abs(b), floor) for k, b in expected.items()}


def tail(result, chars: int = 3000) -> str:
    return (result.stdout + result.stderr)[-chars:]
