"""How a run appears on a wandb dashboard: its group, its short name and its config columns.

A dashboard compares the jobs of one sweep: each invocation of a multirun is one group (the sweep
directory's name and the time the sweep started, read from the ``multirun.yaml`` Hydra writes there
when it starts, so every job of the invocation, requeued ones included, agrees); a single run is a
group of its own. A name says what differs between the jobs, short enough for a legend:
``logistic-b0.1-lr0.001-s0``, then the job's values of any other key the sweep varies. Every
override of the job is also a top-level config column (``optim.lr``, ``data.batch_size``, ...), so
the runs table can sort and group by it. Overrides are read as typed and named as in
:mod:`gpo_lab.run.dirnames`, so a secret never reaches a name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from gpo_lab.run.dirnames import item_name, short_hash
from gpo_lab.store.config_file import read_config_file
from gpo_lab.store.redaction import secret_environment_values

GROUP_FILE = "group"  # in <run_dir>/wandb/: the group the run logged to (the report's summary run joins it)
SWEEP_RECORD = "multirun.yaml"  # written by Hydra's sweeper into the sweep directory when a multirun starts
NAMED_KEYS = ("loss", "beta", "optim.lr", "seed")  # in the name's first part
MAX_EXTRA = 40  # the other overrides' part of a name; longer ones become a hash


def job_overrides(overrides: Iterable[str], exclude_keys: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(key, override as it may be shown) of a job's overrides, the excluded keys left out, sorted by key."""
    excluded = set(exclude_keys)
    secrets = secret_environment_values()
    kept = [(override_key(str(line)), item_name(str(line), secrets)) for line in overrides]
    return sorted((key, shown) for key, shown in kept if key not in excluded)


def override_key(line: str) -> str:
    """The key (or config group) an override sets: ``+data.x=1`` -> ``data.x``, ``model@m=hf`` -> ``model``."""
    return line.partition("=")[0].lstrip("+~").partition("@")[0]


def _is_sweep(line: str) -> bool:
    try:
        return OverridesParser.create().parse_override(line).is_sweep_override()
    except Exception:  # a redacted or otherwise unparsable value: a comma still says several values
        return "," in line.partition("=")[2]


def number(value: Any) -> str:
    """A short form of a number for a name: 0.1, 1e-05 -> 1e-5, 3."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{value:g}").replace("e+", "e")


def swept_keys(sweep_dir: str | Path | None) -> set[str]:
    """The keys a multirun sweeps (several values on its command line, or its sweep file's ``params``)."""
    record = read_config_file(Path(sweep_dir) / SWEEP_RECORD) if sweep_dir else {}
    hydra = record.get("hydra") or {}
    lines = [str(o) for o in (hydra.get("overrides") or {}).get("task") or []]
    keys = {override_key(line) for line in lines if _is_sweep(line)}
    return keys | {override_key(str(key)) for key in (hydra.get("sweeper") or {}).get("params") or {}}


def short_name(columns: Mapping[str, Any], overrides: Iterable[tuple[str, str]] = (), swept: Iterable[str] = ()) -> str:
    """``LOSS-bBETA-lrLR-sSEED``, then ``-`` and the job's values of the other swept keys (a hash when long)."""
    name = f"{columns.get('loss')}-b{number(columns.get('beta'))}-lr{number(columns.get('lr'))}-s{columns.get('seed')}"
    swept = set(swept)
    extra = ",".join(shown for key, shown in overrides if key in swept and key not in NAMED_KEYS)
    if extra:
        name += "-" + (extra if len(extra) <= MAX_EXTRA else short_hash(extra))
    return name


def sweep_group(save_dir: str | Path, sweep_dir: str | Path | None) -> str | None:
    """``SWEEP-YYYYmmdd-HHMMSS`` for a job of a multirun (its directory inside ``sweep_dir``), else None."""
    if not sweep_dir:
        return None
    sweep, job = Path(sweep_dir).resolve(), Path(save_dir).resolve()
    record = sweep / SWEEP_RECORD
    if sweep not in job.parents or not record.is_file():
        return None
    return f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(record.stat().st_mtime))}"


def override_columns(full_config: Mapping[str, Any], overrides: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Each override's key with its resolved value in the run's config (a config group: its choice as typed)."""
    columns: dict[str, Any] = {}
    for key, shown in overrides:
        value: Any = full_config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, (Mapping, list)) or value is None:
            value = shown.partition("=")[2]
        columns[key] = value
    return columns
