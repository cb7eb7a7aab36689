"""The values of a pair's columns, checked row by row before anything is tokenized.

Prompt, chosen and rejected hold text or chat messages; ODPO's offset holds a finite number of
sensible size. A bad value is refused here with its file, its row and the shape expected, rather
than surfacing as a chat template's ``UndefinedError``, a tokenizer's ``ValueError``, or a
``NonFiniteError`` at step 2 that names batch indices.
"""

from __future__ import annotations

import math
from typing import Any

import datasets

from gpo_lab.data.columns import column_values
from gpo_lab.data.file_checks import DataError

OFFSET = "offset"  # an optional per-pair margin offset (ODPO), mapped like the others: data.columns.offset=...
# ODPO's offsets are scaled reward differences, of order 1; one of 1e6 swamps beta * rho, and sums of
# larger ones in float32 (a batch's loss) overflow to inf.
OFFSET_LIMIT = 1e6
MESSAGES = "chat messages [{'role': 'user' or 'assistant' ..., 'content': '...'}]"
SHAPES = {
    "prompt": f"text or a list of {MESSAGES}",
    "chosen": f"text, one message {{'role': 'assistant', 'content': '...'}}, or a list of {MESSAGES}",
}
SHAPES["rejected"] = SHAPES["chosen"]


def check_pairs(data: datasets.Dataset, columns: dict[str, str]) -> None:
    """Refuse the first value of a mapped column (``columns``: field -> the data's column name, the data
    already renamed to the fields) that is not of its field's shape, naming the file and row."""
    for field, column in columns.items():
        check = offset_problem if field == OFFSET else (lambda value, field=field: text_problem(value, field))
        for row, value in enumerate(column_values(data, field)):
            problem = check(value)
            if problem is not None:
                expected = f"a finite number with |offset| <= {OFFSET_LIMIT:g}" if field == OFFSET else SHAPES[field]
                raise DataError(
                    f"{where(data, row)}: column {column!r} ({field}) {problem}; expected {expected}. "
                    f"Fix that row, or map another column with data.columns.{field}=..."
                )


def where(data: datasets.Dataset, row: int) -> str:
    """'pairs.parquet, row 4' (rows counted from 1, as a file's records), or 'Row 4' without a name."""
    name = data.info.dataset_name
    return f"{name}, row {row + 1}" if name else f"Row {row + 1}"


def text_problem(value: Any, field: str) -> str | None:
    """What is wrong with a prompt or response value, or None when it is text or chat messages."""
    if isinstance(value, str):
        return None
    if isinstance(value, dict) and field != "prompt":
        problem = message_problem(value)
        return None if problem is None else f"holds {problem}"
    if isinstance(value, list) and value:
        for number, message in enumerate(value, start=1):
            problem = message_problem(message)
            if problem is not None:
                return f"holds a list whose item {number} is {problem}"
        return None
    if isinstance(value, list):
        return "holds an empty list"
    return "is empty (null)" if value is None else f"holds {describe(value)}"


def message_problem(message: Any) -> str | None:
    """What is wrong with one chat message ('a dict with keys [...], whose 'role' is missing'), or None."""
    if not isinstance(message, dict):
        return f"{describe(message)}, not a message"
    for key in ("role", "content"):
        if not isinstance(message.get(key), str):
            found = "is missing" if message.get(key) is None else f"is {describe(message[key])}"
            return f"{describe(message)}, whose {key!r} {found}"
    return None


def offset_problem(value: Any) -> str | None:
    """What is wrong with an offset (a number, or the text of one from a CSV), or None when it is usable."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "is empty (null)"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"holds {describe(value)}"
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return f"holds {value!r}, not a number"
    if not math.isfinite(number):
        return f"holds {value!r}"
    if abs(number) > OFFSET_LIMIT:
        return f"holds {number:g}, too large"
    return None


def describe(value: Any) -> str:
    if isinstance(value, (bool, int, float)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    return type(value).__name__
