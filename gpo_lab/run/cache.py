"""A disk cache for expensive stages (the SFT policy, the offline pairs), keyed by their settings.

An entry is a directory named by a hash of everything that determines its content. It is built
in a temporary directory and renamed into place, so a reader never sees half an entry; a file
lock (fcntl) makes concurrent jobs of a sweep build it once while the others wait and then read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from gpo_lab.run.lock import file_lock

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"


def spec_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]




def cached_entry(root: str | os.PathLike, kind: str, spec: dict[str, Any],
                 build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The directory of the entry for ``spec``, built by ``build(tmp_dir)`` if absent.

    Returns the directory and whether this call built it.
    """
    root = Path(root)
    entry = root / f"{kind}-{spec_key(spec)}"
    if (entry / SPEC_FILE).is_file():
        return entry, False
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{entry.name}.lock"):
        if (entry / SPEC_FILE).is_file():
            log.info("%s: built meanwhile by another job; reading %s", kind, entry)
            return entry, False
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{entry.name}."))
        try:
            build(tmp)
            (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
            if entry.exists():  # a stale partial entry (no spec file) left by a crash
                shutil.rmtree(entry)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return entry, True
