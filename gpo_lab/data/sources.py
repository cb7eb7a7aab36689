"""Where preference data comes from: the Hugging Face hub, local files, or a generator in code."""

from __future__ import annotations

from pathlib import Path

import datasets

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
    suffix = Path(path).suffix.lower()
    if data_files is None and suffix in LOCAL_FORMATS:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Data file {path!r} does not exist (data.dataset.path).")
        data_files, path = str(Path(path).resolve()), LOCAL_FORMATS[suffix]
    return datasets.load_dataset(path, name=name, split=split, data_files=data_files, revision=revision)
