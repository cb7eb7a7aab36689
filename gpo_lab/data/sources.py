"""Where preference data comes from: the Hugging Face hub, local files, or a generator in code."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpo_lab.errors import ConfigError, bounded, error_text


class DataError(ConfigError):
    """Preference data that cannot be used, with what was found and how to fix it."""


LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load(
    path: str,
    name: str | None = None,
    split: str | None = None,
    data_files: str | list[str] | dict | None = None,
    revision: str | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """``datasets.load_dataset`` for a hub name, a local file, or a builder with ``data_files``.

    A local ``.json``/``.jsonl``/``.parquet``/``.csv`` path is read with the matching builder, so
    ``data.dataset.path=my_pairs.jsonl`` needs nothing else. A local file is checked first (empty,
    not UTF-8, not one JSON object per record, a directory, no known extension), and any failure
    to load becomes one bounded message naming the path and the fix.
    """
    if isinstance(data_files, (DictConfig, ListConfig)):  # from a Hydra config: datasets wants plain containers
        data_files = OmegaConf.to_container(data_files, resolve=True)
    if not isinstance(path, str) or not path.strip():
        raise DataError(f"data.dataset.path must be a file or a hub name, got {path!r}. Set data.dataset.path=...")
    local = Path(path).expanduser()
    suffix = local.suffix.lower()
    if data_files is None and suffix in LOCAL_FORMATS:
        if local.is_dir():
            raise DataError(
                f"Data path {path!r} (data.dataset.path) is a directory, not a {suffix} file. Give a file in it, "
                f"e.g. data.dataset.path={path}/pairs.jsonl."
            )
        if not local.is_file():
            raise DataError(f"Data file {path!r} does not exist (data.dataset.path).")
        check_local_file(local)
        return _load(LOCAL_FORMATS[suffix], split, str(local.resolve()), None, None, where=f"the file {path!r}")
    if data_files is None and local.is_file():
        raise DataError(
            f"Data path {path!r} (data.dataset.path) is a local file without a known extension, so it would be "
            f"looked up on the Hugging Face hub. Rename it to end in one of {', '.join(LOCAL_FORMATS)}."
        )
    if data_files is None and _looks_local(path) and not local.exists():
        raise DataError(f"Data path {path!r} (data.dataset.path) does not exist.")
    where = f"{path!r} with data_files={data_files!r}" if data_files is not None else f"{path!r} from the hub"
    return _load(path, split, data_files, name, revision, where=where)


def _load(path, split, data_files, name, revision, where: str):
    try:
        return datasets.load_dataset(path, name=name, split=split, data_files=data_files, revision=revision)
    except DataError:
        raise
    except Exception as error:  # datasets' own messages may quote whole files or end in a traceback's depths
        raise DataError(
            f"Could not load {where} (data.dataset.path): {bounded(error_text(error), 600)}. Check the path or hub "
            f"name (a local file needs one of the extensions {', '.join(LOCAL_FORMATS)}) and data.dataset.split."
        ) from None


def _looks_local(path: str) -> bool:
    """A path that cannot be a hub name (``org/name``): absolute, relative to here or home, or deeper."""
    return path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or "\\" in path


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
