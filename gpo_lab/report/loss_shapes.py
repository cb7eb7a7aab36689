"""Each loss's shape as the report uses it: f(0), f'(0), f''(0), f''(0)/|f'(0)| and the curve of f.

A run records them in ``summary.json`` (``loss_function``) at training time, where the loss object
is at hand, so that the report never loads torch: that covers every f(beta * rho) loss, the field's
(cDPO, ...) and a user's own f included. A summary written before the record existed, or a run read
back from wandb, falls back to the exact values of the six GPO members, without a curve. A loss that
is not f(beta * rho) records null: it has no f''(0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpo_lab.losses.catalog import EXACT_DERIVATIVES, FIELD_LOSSES, GPO_MEMBERS, canonical_name


@dataclass(frozen=True)
class LossShape:
    """f(0), f'(0), f''(0) of a loss f(beta * rho), and f at the points ``z`` where it was recorded."""

    f0: float
    d1: float
    d2: float
    z: tuple[float, ...] = ()
    f: tuple[float, ...] = ()

    @property
    def regularization_ratio(self) -> float:
        """f''(0)/|f'(0)|: how strongly the loss applies the offline regularizer per unit of beta."""
        return self.d2 / abs(self.d1) if self.d1 else math.nan

    @property
    def has_curve(self) -> bool:
        return len(self.z) > 1 and len(self.z) == len(self.f)


def shape_of(record: Any, loss: str | None) -> LossShape | None:
    """The shape a summary's ``loss_function`` record gives, else a GPO member's exact one, else None."""
    if isinstance(record, dict):
        try:
            return LossShape(
                float(record["f0"]),
                float(record["d1"]),
                float(record["d2"]),
                _floats(record.get("z") or ()),
                _floats(record.get("f") or ()),
            )
        except (KeyError, TypeError, ValueError):
            pass  # a damaged record: the member's exact values, if it is one
    exact = EXACT_DERIVATIVES.get(canonical_name(loss)) if isinstance(loss, str) else None
    return LossShape(exact.f0, exact.d1, exact.d2) if exact is not None else None


def ratio_of(shape: LossShape | None) -> float:
    """f''(0)/|f'(0)|, or NaN for a loss without a known shape."""
    return shape.regularization_ratio if shape is not None else math.nan


def member_ratio(loss: str) -> float:
    """f''(0)/|f'(0)| of a GPO member from its closed form; NaN for any other loss."""
    return ratio_of(shape_of(None, loss))


def members_first(losses: Sequence[str]) -> list[str]:
    """The GPO members in the paper's order, then the other losses in the order given."""
    unique = list(dict.fromkeys(losses))
    return [m for m in GPO_MEMBERS if m in unique] + [loss for loss in unique if loss not in GPO_MEMBERS]


def why_no_ratio(loss: str) -> str:
    """Why a loss has no f''(0)/|f'(0)| in the report."""
    return "not f(β·ρ): no f''(0)" if loss in FIELD_LOSSES else "f''(0) unknown here"


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
