"""Which way is better for each validation metric, as declared by the code that produces it.

Each producer module holds a literal ``METRIC_DIRECTIONS = {name: "max" | "min" | None}``, with the
names it logs under ``val/``. None says that a metric has no better direction (a spread, a
length): no best is kept for it. The standard error ``X_se`` of a metric ``X`` has none either.

The report and the sweep status run without Lightning, and most producers import it (the
callbacks, the bandit's package), so the declarations are read from the producers' source with
:func:`ast.literal_eval` instead of importing them; a test checks that both readings agree.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
PRODUCERS = (
    "training/pair_metrics.py",
    "eval/kl.py",
    "eval/win_rate.py",
    "eval/sample_bank.py",
    "tasks/bandit/problem.py",
)
DECLARATION = "METRIC_DIRECTIONS"
MODES = ("max", "min", None)
PREFIX = "val/"


def metric_mode(name: str) -> str | None:
    """``"max"`` or ``"min"`` for a declared validation metric; None when it has no better direction
    (or no declaration, such as a standard error or a training metric)."""
    return declared_directions().get(name)


@functools.cache
def declared_directions() -> dict[str, str | None]:
    """Every producer's declarations under their logged ``val/`` names; producers of one name must agree."""
    merged: dict[str, str | None] = {}
    origin: dict[str, str] = {}
    for producer in PRODUCERS:
        for name, mode in read_declaration(PACKAGE / producer).items():
            key = PREFIX + name
            if mode not in MODES:
                raise ValueError(f"{producer}: {DECLARATION}[{name!r}] is {mode!r}; use one of {MODES}.")
            if key in merged and merged[key] != mode:
                raise ValueError(f"{key} is declared {merged[key]!r} by {origin[key]} and {mode!r} by {producer}.")
            merged[key], origin[key] = mode, producer
    return merged


def read_declaration(path: Path) -> dict[str, str | None]:
    """The literal ``METRIC_DIRECTIONS`` of a module's source, without importing the module."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(target, ast.Name) and target.id == DECLARATION for target in targets) and node.value:
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} declares no {DECLARATION}.")
