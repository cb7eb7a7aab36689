"""Local data files the generic loaders would fail on obscurely (empty, not UTF-8, a malformed JSON line),
refused before reading with the file, the line and the fix; and the error of unusable preference data."""

from __future__ import annotations

import json
from pathlib import Path

from gpo_lab.errors import ConfigError


class DataError(ConfigError):
    """Preference data that cannot be used, with what was found and how to fix it."""


def check_local_file(path: Path) -> None:
    """Refuse, with the fix, a local data file that the generic loaders would fail on obscurely."""
    if path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty: it holds no preference pairs (data.dataset.path={path}).")
    if path.suffix.lower() == ".parquet":
        with path.open("rb") as handle:
            if handle.read(4) != b"PAR1":
                raise DataError(f"{path.name} is not a Parquet file (it does not start with PAR1); check the file.")
        return
    check_json_file(path)


def check_json_file(path: Path) -> None:
    """Name the line of a malformed JSON Lines record (the generic loader only says it failed)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            _check_json_lines(path)
        elif suffix == ".json":
            _check_json_document(path)
        else:
            with path.open(encoding="utf-8") as handle:  # csv: its text must decode
                for _ in handle:
                    pass
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path.name} is not UTF-8 text (it holds the byte {error.object[error.start : error.start + 1]!r}); "
            "is it a binary file? Save it as UTF-8 text."
        ) from None


def _check_json_lines(path: Path) -> None:
    records = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path.name}, line {number}: not valid JSON ({error.msg} at column "
                    f"{error.colno}). Fix or remove that line."
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path.name}, line {number}: holds a JSON {type(record).__name__}, not an object; JSON Lines "
                    'data has one object per line, e.g. {"prompt": ..., "chosen": ..., "rejected": ...}.'
                )
            records += 1
    if not records:
        raise DataError(f"{path.name} holds no records (only blank lines): it has no preference pairs.")


def _check_json_document(path: Path) -> None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path.name}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})."
        ) from None
    if isinstance(document, list):
        if not document:
            raise DataError(f"{path.name} holds an empty list: it has no preference pairs.")
        kinds = {type(item).__name__ for item in document if not isinstance(item, dict)}
        if kinds:
            raise DataError(
                f"{path.name} is a list of {', '.join(sorted(kinds))}, not of objects; each pair is an object, "
                'e.g. [{"prompt": ..., "chosen": ..., "rejected": ...}].'
            )
    elif not isinstance(document, dict):
        raise DataError(f"{path.name} holds a JSON {type(document).__name__}; expected a list of pair objects.")
