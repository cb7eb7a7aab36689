"""Losses of the chosen and rejected log-ratios c and r separately, not of their difference rho alone.

NCA, BCO, SPPO, APO and DPO-Positive, each a function ``(c, r, beta)``; formulas and papers are in
each loss's ``conf/loss/<name>.yaml`` and docs/losses.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import NotOnRho, PreferenceLoss, at_least_float32


def nca_pair(c, r, beta):
    return -F.logsigmoid(beta * c) - 0.5 * F.logsigmoid(-beta * c) - 0.5 * F.logsigmoid(-beta * r)


def bco_pair(c, r, beta):
    return -F.logsigmoid(beta * c) - F.logsigmoid(-beta * r)


def sppo_hard(c, r, beta):
    return (c - 0.5 / beta) ** 2 + (r + 0.5 / beta) ** 2


def apo_zero(c, r, beta):
    return 1 - torch.sigmoid(beta * c) + torch.sigmoid(beta * r)


def apo_down(c, r, beta):
    return torch.sigmoid(beta * c) + 1 - torch.sigmoid(beta * (c - r))


def dpop(c, r, beta, penalty=50.0):
    return -F.logsigmoid(beta * (c - r - penalty * torch.relu(-c)))


PAIR_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "nca_pair": nca_pair,
    "bco_pair": bco_pair,
    "sppo_hard": sppo_hard,
    "apo_zero": apo_zero,
    "apo_down": apo_down,
    "dpop": dpop,
}


class PairFunctionLoss(PreferenceLoss):
    """One of :data:`PAIR_FUNCTIONS` (``fn``) with its options (``params``), applied to a batch's c and r."""

    def __init__(self, name: str, fn: str, **params):
        super().__init__()
        if fn not in PAIR_FUNCTIONS:
            raise ConfigError(f"Unknown two-argument loss {fn!r}; one of {', '.join(PAIR_FUNCTIONS)}.")
        self.name, self.fn_name = name, fn
        self.function = functools.partial(PAIR_FUNCTIONS[fn], **params)

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        return self.function(at_least_float32(logps.chosen_log_ratio), at_least_float32(logps.rejected_log_ratio), beta)

    def per_example(self, rho, beta):
        raise NotOnRho(f"Loss {self.name!r} takes the chosen and rejected log-ratios separately, not rho alone.")
