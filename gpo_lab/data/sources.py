"""Where preference data comes from: the Hugging Face hub, local files, or a generator in code."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpo_lab.errors import ConfigError


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
    ``data.dataset.path=my_pairs.jsonl`` needs nothing else.
    """
    if isinstance(data_files, (DictConfig, ListConfig)):  # from a Hydra config: datasets wants plain containers
        data_files = OmegaConf.to_container(data_files, resolve=True)
    suffix = Path(path).suffix.lower()
    if data_files is None and suffix in LOCAL_FORMATS:
        if not Path(path).is_file():
            raise DataError(f"Data file {path!r} does not exist (data.dataset.path).")
        check_json_file(Path(path))
        data_files, path = str(Path(path).resolve()), LOCAL_FORMATS[suffix]
    return datasets.load_dataset(path, name=name, split=split, data_files=data_files, revision=revision)


def check_json_file(path: Path) -> None:
    """Name the line of a malformed JSON Lines record (the generic loader only says it failed)."""
    if path.suffix.lower() == ".jsonl":
        with path.open() as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as error:
                        raise DataError(
                            f"{path.name}, line {number}: not valid JSON ({error.msg} at column "
                            f"{error.colno}). Fix or remove that line."
                        ) from None
    elif path.suffix.lower() == ".json":
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path.name}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})."
            ) from None
