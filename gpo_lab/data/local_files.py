"""Local data files read into memory, never through the on-disk Arrow cache of ``datasets``.

``datasets`` keys its cache of a local file on the path and modification time, so a file rewritten
under the same path and time (a copy that keeps times, an edit within one clock tick) would train
on its old content, and a read-only ``HF_DATASETS_CACHE`` would fail the load of a good file. Read
here, a file is parsed anew on every run and nothing is written. Text columns stay text: a CSV's
``2``, ``NA``, ``None`` or ``null`` answer is the string, not a number or a missing value.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets
import pandas
import pyarrow
import pyarrow.parquet
from datasets.table import InMemoryTable

from gpo_lab.data.file_checks import DataError
from gpo_lab.errors import bounded, error_text

READ_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")
ONE_SPLIT = "train"  # a local file (or data_files given as one list) is one split, as datasets names it


def read(path: Path) -> datasets.Dataset:
    """One local file as an in-memory Dataset; ``info.dataset_name`` is the file's name, for messages."""
    suffix = path.suffix.lower()
    info = datasets.DatasetInfo(dataset_name=path.name)
    try:
        if suffix == ".parquet":
            return datasets.Dataset(InMemoryTable(pyarrow.parquet.read_table(path)), info=info)
        if suffix == ".csv":
            frame = pandas.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
            return datasets.Dataset.from_pandas(frame, preserve_index=False, info=info)
    except DataError:
        raise
    except Exception as error:  # pandas' and Arrow's parse errors: a damaged or irregular file
        raise DataError(f"Could not read {path.name}: {bounded(error_text(error), 600)}. Check the file.") from None
    records, lines = _json_records(path)
    return _from_records(records, lines, path.name, info)


def read_all(paths: list[Path]) -> datasets.Dataset:
    """Several local files as one Dataset, in the order given."""
    parts = [read(path) for path in paths]
    if len(parts) == 1:
        return parts[0]
    try:
        return datasets.concatenate_datasets(parts)
    except Exception as error:  # the files' columns differ in name or type
        raise DataError(
            f"The files {', '.join(p.name for p in paths)} cannot be read as one split: "
            f"{bounded(error_text(error), 400)}. Give files with the same columns and types."
        ) from None


def local_data_files(data_files: str | list | dict, base: Path) -> dict[str, list[Path]] | None:
    """The local files of ``data_files`` by split (patterns expanded under ``base``), or None when any
    pattern names no local file of a format read here (a hub file, a compressed file): those go to datasets."""
    by_split = data_files if isinstance(data_files, dict) else {ONE_SPLIT: data_files}
    files: dict[str, list[Path]] = {}
    for split, patterns in by_split.items():
        found: list[Path] = []
        for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
            full = Path(pattern).expanduser()
            full = full if full.is_absolute() else base / full
            matches = sorted(Path(m) for m in glob.glob(str(full), recursive=True) if Path(m).is_file())
            if not matches or any(m.suffix.lower() not in READ_SUFFIXES for m in matches):
                return None
            found += matches
        files[str(split)] = found
    return files


def select_split(
    splits: dict[str, datasets.Dataset], split: str | None, where: str
) -> datasets.Dataset | datasets.DatasetDict:
    """What ``load_dataset(..., split=split)`` returns for these splits: all of them for None, else one
    (a slice such as ``train[:100]`` or ``train[:10%]`` included)."""
    if split is None:
        return datasets.DatasetDict(splits)
    if split in splits:
        return splits[split]
    try:
        (instruction,) = datasets.ReadInstruction.from_spec(split).to_absolute({n: len(d) for n, d in splits.items()})
    except Exception:
        raise DataError(
            f"{where} has no split {split!r} (data.dataset.split); its splits: {', '.join(splits)}. "
            f"Set data.dataset.split={next(iter(splits))} or data.dataset.split=null."
        ) from None
    return splits[instruction.splitname].select(range(instruction.from_, instruction.to))


def _json_records(path: Path) -> tuple[list[dict], list[int]]:
    """The records of a JSON Lines file with their line numbers, or those of a JSON document (a list of
    objects, or one object); ``file_checks.check_local_file`` has refused malformed files already."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
        return [json.loads(line) for _, line in numbered], [number for number, _ in numbered]
    document = json.loads(text)
    records = document if isinstance(document, list) else [document]
    return records, []


def _from_records(records: list[dict], lines: list[int], name: str, info) -> datasets.Dataset:
    """Records as a Dataset with the columns of every record (a key missing from a record is null)."""
    keys = list(dict.fromkeys(key for record in records for key in record))
    columns = {key: [record.get(key) for record in records] for key in keys}
    try:
        return datasets.Dataset.from_dict(columns, info=info)
    except Exception as error:  # Arrow cannot hold two kinds of value in one column
        for key, values in columns.items():
            mixed = _first_mixed(values)
            if mixed is not None:
                row, kind, first_row, first_kind = mixed
                where = f"line {lines[row]}" if lines else f"record {row + 1}"
                first = f"line {lines[first_row]}" if lines else f"record {first_row + 1}"
                raise DataError(
                    f"{name}, {where}: {key!r} holds {kind} where {first} holds {first_kind}; a column holds one "
                    "kind of value (text, a number, or chat messages [{'role': ..., 'content': ...}]) in every "
                    "record. Fix that record (text goes in quotes)."
                ) from None
        raise DataError(f"Could not read {name}: {bounded(error_text(error), 600)}. Check the file.") from None


def _first_mixed(values: Iterable[Any]) -> tuple[int, str, int, str] | None:
    """(row, kind, first row, its kind) of the first value whose kind differs from the column's first."""
    first: tuple[int, str] | None = None
    for row, value in enumerate(values):
        if value is None:
            continue
        kind = _kind(value)
        if first is None:
            first = (row, kind)
        elif kind != first[1]:
            return row, kind, first[0], first[1]
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "NaN or an infinity" if isinstance(value, float) and not math.isfinite(value) else "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else type(value).__name__
