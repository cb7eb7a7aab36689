"""Where preference data comes from: the Hugging Face hub, local files, or a generator in code."""

from __future__ import annotations

import errno
from pathlib import Path

import datasets
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpo_lab.data.file_checks import DataError, check_local_file
from gpo_lab.data.local_files import ONE_SPLIT, local_data_files, read, read_all, select_split
from gpo_lab.errors import bounded, error_text

__all__ = ["DataError", "load"]

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
BUILDERS = {"json", "csv", "parquet"}  # datasets' builders of data files, as data.dataset.path=json
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR}  # of a cache that cannot be written


def load(
    path: str,
    name: str | None = None,
    split: str | None = None,
    data_files: str | list[str] | dict | None = None,
    revision: str | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """``datasets.load_dataset`` for a hub name, a local file, or a builder with ``data_files``.

    A local ``.json``/``.jsonl``/``.parquet``/``.csv`` path is read by its format, so
    ``data.dataset.path=my_pairs.jsonl`` needs nothing else. A local file is checked first (empty,
    not UTF-8, not one JSON object per record, a directory, no known extension), and any failure
    to load becomes one bounded message naming the path and the fix. Local files (also those of
    ``data_files``) are read into memory anew on every run (:mod:`gpo_lab.data.local_files`).
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
        return select_split({ONE_SPLIT: read(local)}, split, f"The file {path!r}")
    if data_files is None and local.is_file():
        raise DataError(
            f"Data path {path!r} (data.dataset.path) is a local file without a known extension, so it would be "
            f"looked up on the Hugging Face hub. Rename it to end in one of {', '.join(LOCAL_FORMATS)}."
        )
    if data_files is None and _looks_local(path) and not local.exists():
        raise DataError(f"Data path {path!r} (data.dataset.path) does not exist.")
    if data_files is not None and (path in BUILDERS or local.is_dir()):
        files = local_data_files(data_files, local if local.is_dir() else Path.cwd())
        if files is not None:
            for paths in files.values():
                for file in paths:
                    check_local_file(file)
            splits = {name: read_all(paths) for name, paths in files.items()}
            return select_split(splits, split, f"data_files={data_files!r}")
    where = f"{path!r} with data_files={data_files!r}" if data_files is not None else f"{path!r} from the hub"
    return _load(path, split, data_files, name, revision, where=where)


def _load(path, split, data_files, name, revision, where: str):
    try:
        return datasets.load_dataset(path, name=name, split=split, data_files=data_files, revision=revision)
    except DataError:
        raise
    except Exception as error:  # datasets' own messages may quote whole files or end in a traceback's depths
        unwritable = _unwritable_cache(error)
        if unwritable is not None:
            raise DataError(
                f"Could not load {where}: the datasets cache {datasets.config.HF_DATASETS_CACHE} cannot be written "
                f"({unwritable}). Set HF_DATASETS_CACHE to a writable folder, e.g. "
                "HF_DATASETS_CACHE=$HOME/.cache/huggingface/datasets."
            ) from None
        raise DataError(
            f"Could not load {where} (data.dataset.path): {bounded(error_text(error), 600)}. Check the path or hub "
            f"name (a local file needs one of the extensions {', '.join(LOCAL_FORMATS)}) and data.dataset.split."
        ) from None


def _looks_local(path: str) -> bool:
    """A path that cannot be a hub name (``org/name``): absolute, relative to here or home, or deeper."""
    return path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or "\\" in path


def _unwritable_cache(error: BaseException) -> str | None:
    """The OS error behind a failed load when it is one of writing the datasets cache (read-only, full, or a
    file where a folder goes), else None; an error on a file outside the cache (the data's own) is not."""
    cache = Path(datasets.config.HF_DATASETS_CACHE).expanduser().resolve()
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in UNWRITABLE:
            name = Path(str(error.filename or cache)).expanduser().resolve()
            if name == cache or cache in name.parents or name in cache.parents:
                return bounded(error_text(error), 300)
        error = error.__cause__ or error.__context__
    return None
