"""A job's directory name from its command-line overrides: readable, flat, bounded, unambiguous, and secret-free.

The one place that turns overrides into a directory name: the run itself (the ``gpo_lab.job_dirname``
resolver of ``conf/hydra/gpo_lab.yaml``), the wandb run name and ``python -m gpo_lab.status`` all call
:func:`job_dirname`. It reads the overrides as typed, never their resolved values, so an
interpolation such as ``${oc.env:WANDB_API_KEY}`` is never expanded into a name.

Ordinary overrides keep Hydra's form (``beta=0.1,loss=hinge``: sorted, joined by ``,``). An item
whose key looks secret, or whose value holds a secret environment value, becomes ``KEY=redacted``;
one whose value is path-like, overlong or has other characters (``/``, ``,``, ``$``, spaces, ...)
becomes ``KEY=HINT~HASH`` (``data.dataset.path=pairs.jsonl~1a2b3c4d``: the file's base name and a
hash of the whole item), so two files of one base name get two names. A name longer than
``MAX_NAME`` is cut and ends in ``~`` and a hash of the whole name. ``~`` never appears in a
readable value, so a hashed item cannot be mistaken for a typed one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import Container, OmegaConf

from gpo_lab.store.redaction import is_secret_name, secret_environment_values

DEFAULT = "default"  # the name of a run without overrides
MAX_VALUE = 48  # a longer value is shortened to a hint and a hash
MAX_NAME = 240  # ASCII, so below the 255 bytes a file name may have on most file systems
HINT = 24
READABLE_KEY = re.compile(r"[+~]{0,2}[A-Za-z0-9_.@-]+")
READABLE_VALUE = re.compile(r"[A-Za-z0-9_.:@%+-]*")
SECRET_VALUE = "redacted"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def sanitized(text: str) -> str:
    """The readable characters of ``text``, other runs of characters replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("_.")


def item_name(override: str, secrets: list[str]) -> str:
    """One override's part of the name (see the module docstring)."""
    key, sep, value = override.partition("=")
    if not sep:  # a deletion (``~key``) has no value
        return override if READABLE_KEY.fullmatch(override) else f"{sanitized(override)}~{short_hash(override)}"
    safe_key = key if READABLE_KEY.fullmatch(key) else sanitized(key)
    if is_secret_name(key) or any(secret in value for secret in secrets):
        return f"{safe_key}={SECRET_VALUE}"
    if safe_key == key and READABLE_VALUE.fullmatch(value) and len(value) <= MAX_VALUE:
        return override
    path_like = "/" in value or "\\" in value
    hint = sanitized(re.split(r"[/\\]", value.rstrip("/\\"))[-1] if path_like else value)[:HINT]
    return f"{safe_key}={hint}~{short_hash(override)}"


def job_dirname(overrides: Iterable[str], exclude_keys: Iterable[str] = ()) -> str:
    """The directory name of a job run with ``overrides`` (as typed), leaving out those of ``exclude_keys``."""

    overrides = [str(o) for o in overrides]
    excluded = set(exclude_keys)
    parsed = OverridesParser.create().parse_overrides(overrides)
    lines = sorted(line for line, o in zip(overrides, parsed) if o.key_or_group not in excluded)
    secrets = secret_environment_values()
    name = ",".join(item_name(line, secrets) for line in lines) or DEFAULT
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}~{short_hash(name)}"
    return name


def job_dirname_resolver(overrides, exclude_keys=()) -> str:
    """The ``gpo_lab.job_dirname`` resolver: Hydra passes the override list unresolved, as typed."""

    def plain(node):
        return OmegaConf.to_container(node, resolve=False) if isinstance(node, Container) else list(node or [])

    return job_dirname(plain(overrides), plain(exclude_keys))
