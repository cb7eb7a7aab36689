"""Which run a directory holds: a fingerprint of the resolved config, checked before a directory is skipped or resumed.

A directory is named by the command line's overrides, so two commands with different configs can
meet in one directory (``+experiment=smoke name=X`` and ``+experiment=bandit name=X``: ``experiment``
does not enter names). The fingerprint, stored in ``summary.json``, is a hash of the resolved,
redacted config without the keys that do not change what is trained (``NOT_IDENTIFYING``, the keys
the directory names leave out too) and with the run's own directory written as ``<run_dir>``. A
run whose fingerprint differs from the directory's is refused before anything is written, with the
differing keys read from the directory's ``config.yaml``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gpo_lab.errors import ConfigError
from gpo_lab.store.redaction import REDACTED
from gpo_lab.store.run_files import CONFIG_FILE

# Where and how a run logs, caches and is observed, not what it trains: conf/hydra/gpo_lab.yaml's
# exclude_keys leave these out of directory names too (a test keeps the lists in step; ``experiment``
# is in names' list only: its effect is in every other key of the resolved config). ``callbacks``
# (checkpoint cadence, progress bar, evaluation callbacks) may change between attempts of one run.
NOT_IDENTIFYING = (
    "overrides",
    "callbacks",
    "name",
    "skip_completed",
    "logger",
    "cluster",
    "reference_cache.dir",
    "reference_cache.batch_size",
    "synthetic.cache_dir",
)
RUN_DIR = "<run_dir>"
SHOWN = 6  # differing keys named in the message


class RunDirectoryHoldsAnotherRun(ConfigError):
    """The directory holds a run of another config; reusing it would mix the two runs' results."""


def identity(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The part of a resolved config that says what is trained, with the run's own directory made relative."""
    config = copy.deepcopy(config)
    for dotted in NOT_IDENTIFYING:
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return _relative(config, sorted({os.path.abspath(run_dir), str(Path(run_dir).resolve())}, key=len, reverse=True))


def _relative(value: Any, run_dirs: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _relative(v, run_dirs) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, run_dirs) for v in value]
    if isinstance(value, str):
        for run_dir in run_dirs:
            value = value.replace(run_dir, RUN_DIR)
    return value


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs (a redacted value, or subtree, matches anything)."""
    before, after = flatten(old), flatten(new)
    redacted = tuple(f"{k}." for k, v in [*before.items(), *after.items()] if v == REDACTED)
    missing = object()
    lines = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key, missing), after.get(key, missing)
        if (
            REDACTED in (a, b)
            or f"{key}.".startswith(redacted)
            or json.dumps(a, default=str) == json.dumps(b, default=str)
        ):
            continue
        show = lambda v: "(absent)" if v is missing else json.dumps(v, default=str)  # noqa: E731
        lines.append(f"{key}: {show(a)} -> {show(b)}")
    return lines


def stored_identity(run_dir: Path) -> dict[str, Any] | None:
    """The identity of the config the directory's run used, from its ``config.yaml`` (None when unreadable)."""
    try:
        return identity(OmegaConf.to_container(OmegaConf.load(Path(run_dir) / CONFIG_FILE)), run_dir)
    except Exception:
        return None


def check_same_run(run_dir: Path, stored: str | None, current: dict[str, Any]) -> None:
    """Refuse to reuse ``run_dir`` for ``current`` when the directory's run had another config.

    ``stored`` is the fingerprint in the directory's ``summary.json`` (None for a run written before
    fingerprints, whose ``config.yaml`` is compared key by key instead).
    """
    if stored == fingerprint(current):
        return
    previous = stored_identity(run_dir)
    if stored is None and (previous is None or not differences(previous, current)):
        return  # an older run of the same config, or one that never got as far as writing its config
    changed = differences(previous, current) if previous is not None else []
    detail = "\n  ".join(changed[:SHOWN] + ([f"... and {len(changed) - SHOWN} more"] if len(changed) > SHOWN else []))
    raise RunDirectoryHoldsAnotherRun(
        f"{run_dir} holds a run of another config, so it is neither skipped nor resumed "
        f"(its config.yaml -> this run):\n  {detail or '(its config.yaml is missing; its fingerprint differs)'}\n"
        "Nothing was changed. Give this run its own directory (another name=...), or pass skip_completed=false "
        "to move the earlier run's files to previous-<time>/ and train this config there."
    )


# What a sweep's report compares across its jobs: jobs of one experiment may differ in these and in
# the grid's own keys, nothing else (a differing loss adds a loss to the sweep, not an experiment).
REPORT_AXES = ("loss", "beta", "optim.lr", "seed")
MULTIRUN_FILE = "multirun.yaml"


class SweepDirectoryHoldsAnotherExperiment(ConfigError):
    """The sweep directory holds the jobs of another experiment; one report over both would mix them."""


def sweep_identity(config: Any, sweep_dir: Path) -> tuple[dict[str, Any], set[str]]:
    """A sweep's config as Hydra composes it for a multirun (unresolved, without ``hydra``) and its grid's keys."""
    container = OmegaConf.to_container(config, resolve=False) if not isinstance(config, dict) else dict(config)
    hydra = container.pop("hydra", None) or {}
    params = (hydra.get("sweeper") or {}).get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list((hydra.get("overrides") or {}).get("task") or [])
    swept = set()
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_sweep_override() or override.key_or_group in params:
            swept.add(override.key_or_group)
    return identity(container, sweep_dir), swept


def check_same_experiment(sweep_dir: Path, config: Any) -> None:
    """Refuse a sweep into a directory whose earlier sweep (its ``multirun.yaml``) was another experiment.

    Called before Hydra writes the new ``multirun.yaml``. Keys swept by either grid, and the report's axes,
    may differ; any other difference (``+experiment=smoke`` then ``+experiment=bandit``) is refused.
    """
    sweep_dir = Path(sweep_dir)
    previous = sweep_dir / MULTIRUN_FILE
    if not previous.is_file() or not any(
        path.is_dir() and (path / CONFIG_FILE).exists() for path in sweep_dir.iterdir()
    ):
        return  # no earlier sweep's jobs to mix with
    try:
        before, swept_before = sweep_identity(OmegaConf.load(previous), sweep_dir)
    except Exception:
        return  # an unreadable multirun.yaml: the report and status still tell experiments apart by their jobs
    after, swept_now = sweep_identity(config, sweep_dir)
    free = tuple(f"{key}." for key in {*REPORT_AXES, *swept_before, *swept_now})
    changed = [line for line in differences(before, after) if not f"{line.split(': ', 1)[0]}.".startswith(free)]
    changed.sort(key=lambda line: "(absent)" in line)  # values both sides set first: builder, model, data
    if not changed:
        return
    detail = "\n  ".join(changed[:SHOWN] + ([f"... and {len(changed) - SHOWN} more"] if len(changed) > SHOWN else []))
    raise SweepDirectoryHoldsAnotherExperiment(
        f"{sweep_dir} holds the jobs of another experiment (its {MULTIRUN_FILE} -> this sweep):\n  {detail}\n"
        "Nothing was started: one report over both would mix them. Give this sweep its own directory (another "
        "name=..., or hydra.sweep.dir=...), or sweep the differing key in one grid (key=a,b)."
    )


def refuse_another_experiment(config: Any) -> None:
    """Exit with code 2 and one message when :func:`check_same_experiment` refuses the sweep (a Hydra callback's
    exception would print a traceback)."""
    try:
        check_same_experiment(Path(config.hydra.sweep.dir), config)
    except SweepDirectoryHoldsAnotherExperiment as error:
        print(error, file=sys.stderr)
        sys.exit(2)  # as for every other input the user must fix
