"""A disk cache for expensive, deterministic results (the SFT policy, the offline pairs, the reference
log-probs), keyed by a hash of everything that determines them.

An entry is a directory ``<kind>-<key>/`` holding what its builder wrote and ``spec.json``, the
description it is keyed by. It is built in a temporary directory and renamed into place
(:mod:`gpo_lab.store.atomic`), so a reader never sees half an entry; a file lock makes concurrent
jobs of a sweep build it once while the others wait and then read it.

Every read goes through :meth:`ContentCache.read_or_build`, which checks the entry: one that cannot be
read (a truncated or garbage file, a spec.json that is not its spec, a file missing) is a miss. It is
named in the log, moved aside to ``<kind>-<key>.damaged-<time>`` (never deleted) and built again, so a
damaged entry never blocks later runs. A cache folder that cannot be written (read-only, a file where
the folder should be, a full disk) is reported once, naming ``GPO_LAB_CACHE`` and the fix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gpo_lab.errors import ConfigError
from gpo_lab.store.atomic import atomic_path, is_disk_full, no_space_left
from gpo_lab.store.lock import file_lock

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
CACHE_ENV = "GPO_LAB_CACHE"  # the folder every cache of a run lives under (conf/config.yaml)
UNUSABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
Value = TypeVar("Value")


class CacheNotWritable(ConfigError):
    """The cache folder cannot hold a new entry: read-only, not a folder, or not ours to write."""


def canonical_json(spec: dict[str, Any]) -> str:
    """The one spelling of a JSON-able description that its key is the hash of."""
    return json.dumps(spec, sort_keys=True, default=str)


def spec_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description (64 bits; the stored spec rules out a collision)."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


class ContentCache:
    """A directory of entries ``<kind>-<key>``, each built once by ``build(tmp_dir)`` and then only read.

    ``fix`` completes the message of a cache that cannot be written: how its user points it elsewhere
    or switches it off (``", or ..."``).
    """

    def __init__(self, root: str | os.PathLike, fix: str = ""):
        self.root = Path(root)
        self.fix = fix

    def entry(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def find(self, kind: str, spec: dict[str, Any]) -> Path | None:
        """The entry for ``spec`` if it is there with its spec.json, else None (damaged or absent)."""
        entry = self.entry(kind, spec_key(spec))
        return entry if entry.is_dir() and self._damage(entry, spec, lambda _: None)[1] is None else None

    def get_or_build(self, kind: str, spec: dict[str, Any], build: Callable[[Path], None]) -> tuple[Path, bool]:
        """The entry for ``spec``, built by ``build(tmp_dir)`` if absent or damaged; and whether this call built it."""
        _, entry, built = self.read_or_build(kind, spec, build, lambda entry: entry)
        return entry, built

    def read_or_build(
        self, kind: str, spec: dict[str, Any], build: Callable[[Path], None], read: Callable[[Path], Value]
    ) -> tuple[Value, Path, bool]:
        """``read(entry)`` of the entry for ``spec``, the entry, and whether this call built it.

        ``read`` loads and checks what the builder wrote, raising if it cannot: such an entry is
        moved aside and built again. Concurrent callers with the same spec take turns on a file
        lock: the first builds, the others read its entry. A build that fails leaves nothing behind.
        """
        entry, damage = self.entry(kind, spec_key(spec)), None
        if entry.is_dir():  # the common case, without the lock: a published entry only ever moves aside
            value, damage = self._damage(entry, spec, read)
            if damage is None:
                return value, entry, False
        try:
            with file_lock(self.root / f".{entry.name}.lock"):
                if entry.is_dir():
                    value, damage = self._damage(entry, spec, read)
                    if damage is None:
                        log.info("%s: built meanwhile by another job; reading %s", kind, entry)
                        return value, entry, False
                    self._set_aside(entry, damage)
                with atomic_path(entry, directory=True) as tmp:
                    build(tmp)
                    (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
        except Exception as error:
            unusable = self._unusable(error, f"the entry {entry.name} is damaged ({damage}) and " if damage else "")
            if unusable is error:
                raise
            raise unusable from error
        value, damage = self._damage(entry, spec, read)
        if damage is not None:
            raise RuntimeError(f"The cache entry {entry} was just built but cannot be read back: {damage}")
        return value, entry, True

    def _damage(
        self, entry: Path, spec: dict[str, Any], read: Callable[[Path], Value]
    ) -> tuple[Value | None, str | None]:
        """``(read(entry), None)``, or ``(None, why the entry cannot be used)``."""
        try:
            stored = json.loads((entry / SPEC_FILE).read_text())
            if canonical_json(stored) != canonical_json(json.loads(canonical_json(spec))):
                return None, f"its {SPEC_FILE} describes another spec (edited, or a key collision)"
            return read(entry), None
        except PermissionError:
            raise
        except Exception as error:
            return None, " ".join(f"{type(error).__name__}: {error}".split())[:300]

    def _set_aside(self, entry: Path, damage: str) -> None:
        """Move a damaged entry out of the way (never deleted), naming it in the log."""
        aside = entry.with_name(f"{entry.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        while aside.exists():
            aside = aside.with_name(f"{aside.name}-{os.getpid()}")
        log.warning("The cache entry %s is damaged (%s); moving it to %s and building it again.", entry, damage, aside)
        entry.rename(aside)

    def _unusable(self, error: Exception, damage: str = "") -> Exception:
        """The error to raise for ``error``, met building an entry: one naming the folder and the fix where
        the folder is the problem (full, read-only, not a folder), else ``error`` itself."""
        if is_disk_full(error):
            return no_space_left(self.root, "a cache entry", error, f", point {CACHE_ENV} at another disk{self.fix}")
        if not isinstance(error, OSError) or error.errno not in UNUSABLE or not error.filename:
            return error
        path = Path(error.filename)
        if not _within(path, self.root):
            return error
        if error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            reason = f"{_first_file(self.root) or path} is a file, not a folder"
        elif error.errno == errno.EROFS:
            reason = "the folder is on a read-only file system"
        else:
            reason = f"permission denied on {path}"
        return CacheNotWritable(
            f"The cache folder {self.root} cannot hold a new entry: {damage}{reason}. Point {CACHE_ENV} at a writable "
            f"folder ({CACHE_ENV}=/path/to/cache python -m gpo_lab ...){self.fix}."
        )


def _within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root``, inside it, or one of the folders above it (those that creating it needs)."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return path == root or root in path.parents or path in root.parents


def _first_file(root: Path) -> Path | None:
    """The first of ``root`` and the folders above it that exists as something other than a folder."""
    for path in [Path(os.path.abspath(root)), *Path(os.path.abspath(root)).parents]:
        if path.exists() and not path.is_dir():
            return path
    return None


def cached_entry(
    root: str | os.PathLike, kind: str, spec: dict[str, Any], build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """``ContentCache(root).get_or_build(kind, spec, build)``."""
    return ContentCache(root).get_or_build(kind, spec, build)


def cached_value(
    root: str | os.PathLike,
    kind: str,
    spec: dict[str, Any],
    build: Callable[[Path], None],
    read: Callable[[Path], Value],
    fix: str = "",
) -> tuple[Value, Path, bool]:
    """``ContentCache(root, fix).read_or_build(kind, spec, build, read)``."""
    return ContentCache(root, fix).read_or_build(kind, spec, build, read)
