"""Preference data in any published schema, as prompt/chosen/rejected: the schema named or detected from
the columns, then its adapter (:mod:`gpo_lab.data.preference_schemas`).

:func:`load` is the data configs' entry point: the hub or a local file (``gpo_lab.data.sources.load``),
then the adapter.

    data=hh_rlhf data.dataset.path=my_transcripts.jsonl          (format: hh_rlhf)
    data=instruction data.dataset.path=pairs.json data.dataset.format=auto
"""

from __future__ import annotations

from collections.abc import Callable

import datasets

from gpo_lab.data.preference_schemas import hh_rlhf, instruction, prompt_chosen_rejected, sharegpt, tldr_comparisons
from gpo_lab.data.sources import DataError
from gpo_lab.data.sources import load as load_source

# Tried in this order; the first whose columns are all present wins.
SCHEMAS: dict[str, tuple[Callable[..., datasets.Dataset], tuple[str, ...]]] = {
    "prompt_chosen_rejected": (prompt_chosen_rejected, ("prompt", "chosen", "rejected")),
    "tldr_comparisons": (tldr_comparisons, ("info", "summaries", "choice")),
    "instruction": (instruction, ("instruction", "chosen", "rejected")),
    "sharegpt": (sharegpt, ("conversations", "chosen", "rejected")),
    "hh_rlhf": (hh_rlhf, ("chosen", "rejected")),
}


def describe_schemas() -> str:
    return "; ".join(f"{name} ({', '.join(columns)})" for name, (_, columns) in SCHEMAS.items())


def detect_schema(columns) -> str:
    """The name of the first known schema whose columns are all present."""
    present = set(columns)
    for name, (_, needed) in SCHEMAS.items():
        if present.issuperset(needed):
            return name
    raise DataError(
        f"The dataset matches none of the known preference schemas. Known schemas (and the columns "
        f"each needs): {describe_schemas()}. Columns found: {sorted(present)}. Rename the columns, or "
        "use data=hf with data.columns.prompt/chosen/rejected."
    )


def convert(data: datasets.Dataset | datasets.DatasetDict, format: str = "auto", **options):
    """Apply the adapter named ``format`` (``auto``: detected from the columns) to every split."""
    if isinstance(data, datasets.DatasetDict):
        return datasets.DatasetDict({split: convert(part, format, **options) for split, part in data.items()})
    name = detect_schema(data.column_names) if format == "auto" else format
    if name not in SCHEMAS:
        raise DataError(f"Unknown data format {format!r} (data.dataset.format); known: auto, {', '.join(SCHEMAS)}.")
    adapter, needed = SCHEMAS[name]
    missing = [column for column in needed if column not in data.column_names]
    if missing:
        raise DataError(
            f"Format {name!r} needs the columns {list(needed)}; missing {missing}. Columns found: "
            f"{data.column_names}. Known schemas: {describe_schemas()}."
        )
    return adapter(data, **options)


def load(
    path: str,
    format: str = "auto",
    name: str | None = None,
    split: str | None = None,
    data_files: str | list[str] | dict | None = None,
    revision: str | None = None,
    options: dict | None = None,
):
    """Load a hub dataset or local file (as ``gpo_lab.data.sources.load``) and convert it to pairs.

    ``options`` are the adapter's keyword arguments, e.g. ``{chat: true}`` for ``instruction``.
    """
    data = load_source(path, name=name, split=split, data_files=data_files, revision=revision)
    return convert(data, format, **dict(options or {}))
