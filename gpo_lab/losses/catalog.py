"""The names of every loss and the paper's closed-form facts about its six GPO members, without torch.

The report and the status command read losses through this module only, so that they never load
torch. The six members and their exact f(0), f'(0), f''(0) are the paper's table (their functions
are in :mod:`gpo_lab.losses.gpo`); every other named loss is a file ``conf/loss/<name>.yaml``, the
one place its options and its description (:func:`loss_card`) are written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gpo_lab.config_dir import CONF_DIR

LOSS_CONFIG_DIR = CONF_DIR / "loss"
CUSTOM = "custom"  # loss=custom loss.fn=mypkg.losses.my_f: a user's f, not a named loss

GPO_MEMBERS: tuple[str, ...] = ("logistic", "hinge", "squared", "exponential", "truncated_quadratic", "savage")

ALIASES: Mapping[str, str] = MappingProxyType(
    {"dpo": "logistic", "sigmoid": "logistic", "slic": "hinge", "ipo": "squared"}
)


def canonical_name(name: str) -> str:
    """The member an alias stands for (``dpo`` -> ``logistic``); any other name unchanged."""
    return ALIASES.get(name, name)


@dataclass(frozen=True)
class Derivatives:
    """f(0), f'(0) and f''(0): what the offline-regularization analysis needs."""

    f0: float
    d1: float
    d2: float

    @property
    def regularization_ratio(self) -> float:
        """f''(0)/|f'(0)|: the weight of the mu-weighted squared penalty per unit of beta."""
        return self.d2 / abs(self.d1)


# Worked out by hand from each member's closed form (tests/test_loss_catalog.py checks them against autograd).
EXACT_DERIVATIVES: Mapping[str, Derivatives] = MappingProxyType(
    {
        "logistic": Derivatives(math.log(2.0), -0.5, 0.25),
        "hinge": Derivatives(1.0, -1.0, 0.0),
        "squared": Derivatives(1.0, -2.0, 2.0),
        "exponential": Derivatives(1.0, -1.0, 1.0),
        "truncated_quadratic": Derivatives(1.0, -2.0, 2.0),
        "savage": Derivatives(0.25, -0.25, 0.125),
    }
)

# The bandit figures' line style per member, so that curves that coincide stay visible.
LINESTYLES: Mapping[str, str] = MappingProxyType(
    {"logistic": "-", "hinge": "-", "squared": "-", "exponential": "--", "truncated_quadratic": "--", "savage": ":"}
)

FIELD_LOSSES: tuple[str, ...] = tuple(
    sorted(
        path.stem
        for path in LOSS_CONFIG_DIR.glob("*.yaml")
        if path.stem not in GPO_MEMBERS and path.stem != CUSTOM and not path.name.startswith("_")
    )
)


@dataclass(frozen=True)
class LossCard:
    """What docs/losses.md says of a field loss, read from the ``# key: value`` header of its yaml."""

    name: str
    formula: str  # z = beta * margin unless said otherwise; c, r: the chosen and rejected log-ratios
    paper: str
    trl: str = ""  # TRL's name (DPOTrainer loss_type unless another trainer is named)
    beta: str = "the same beta"  # how the paper's / TRL's beta maps onto this loss's beta


CARD_KEYS = ("formula", "paper", "trl", "beta")


def loss_card(name: str) -> LossCard:
    """The description written at the top of ``conf/loss/<name>.yaml`` (its comment lines ``# formula: ...``)."""
    path = LOSS_CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"No loss named {name!r}: there is no {path.name} in conf/loss/.")
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        found = re.fullmatch(r"#\s*(\w+):\s*(.*?)\s*", line)
        if found and found.group(1) in CARD_KEYS:
            fields[found.group(1)] = found.group(2)
    missing = {"formula", "paper"} - set(fields)
    if missing:
        raise KeyError(f"conf/loss/{path.name} lacks the header line(s) {', '.join(f'# {k}: ...' for k in missing)}.")
    return LossCard(name, **fields)
