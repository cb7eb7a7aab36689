"""How report.md writes a value: numbers to four significant digits, a missing value as a dash, table rows."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from gpo_lab.report.aggregate import EVAL_SE, SEED_SD


def mean_and_error(mean: Any, err: Any, kind: Any) -> str:
    if not present(mean):
        return "—"
    if not present(err):
        return number(mean)
    suffix = {SEED_SD: " (sd)", EVAL_SE: " (SE)"}.get(kind, "")
    return f"{number(mean)} ± {number(err)}{suffix}"


def table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(cell_text(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell_text(c) for c in row) + " |" for row in rows]
    return lines


def cell_text(value: Any) -> str:
    return str(value).replace("\n", " ").replace("|", "\\|")


def present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def number(value: Any) -> str:
    """Four significant digits; a missing value is a dash."""
    if not present(value):
        return "—"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def integer(value: Any) -> str:
    return str(int(value)) if present(value) else "—"
