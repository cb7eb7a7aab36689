"""A disk cache for expensive, deterministic results (the SFT policy, the offline pairs, the reference
log-probs), keyed by a hash of everything that determines them.

An entry is a directory ``<kind>-<key>/`` holding what its builder wrote and ``spec.json``, the
description it is keyed by. It is built in a temporary directory and renamed into place
(:mod:`gpo_lab.store.atomic`), so a reader never sees half an entry; a file lock makes concurrent
jobs of a sweep build it once while the others wait and then read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpo_lab.store.atomic import atomic_path
from gpo_lab.store.lock import file_lock

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"


def canonical_json(spec: dict[str, Any]) -> str:
    """The one spelling of a JSON-able description that its key is the hash of."""
    return json.dumps(spec, sort_keys=True, default=str)


def spec_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description (64 bits; the stored spec rules out a collision)."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


class ContentCache:
    """A directory of entries ``<kind>-<key>``, each built once by ``build(tmp_dir)`` and then only read."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def find(self, kind: str, spec: dict[str, Any]) -> Path | None:
        """The complete entry for ``spec``, or None (temporary directories of a builder are never looked at)."""
        entry = self.entry(kind, spec_key(spec))
        try:
            stored = json.loads((entry / SPEC_FILE).read_text())
        except FileNotFoundError:
            return None
        if canonical_json(stored) != canonical_json(json.loads(canonical_json(spec))):
            raise RuntimeError(
                f"The cache entry {entry} was built for another spec (a key collision or an "
                "edited entry); delete it to rebuild."
            )
        return entry

    def get_or_build(self, kind: str, spec: dict[str, Any], build: Callable[[Path], None]) -> tuple[Path, bool]:
        """The entry for ``spec``, built by ``build(tmp_dir)`` if absent; and whether this call built it.

        Concurrent callers with the same spec take turns on a file lock: the first builds, the
        others find its entry. A build that fails leaves nothing behind.
        """
        entry = self.find(kind, spec)
        if entry is not None:
            return entry, False
        entry = self.entry(kind, spec_key(spec))
        with file_lock(self.root / f".{entry.name}.lock"):
            if self.find(kind, spec) is not None:
                log.info("%s: built meanwhile by another job; reading %s", kind, entry)
                return entry, False
            with atomic_path(entry, directory=True) as tmp:  # also replaces a stale entry without a spec file
                build(tmp)
                (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
        return entry, True


def cached_entry(
    root: str | os.PathLike, kind: str, spec: dict[str, Any], build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """``ContentCache(root).get_or_build(kind, spec, build)``."""
    return ContentCache(root).get_or_build(kind, spec, build)
