"""The parts the field's losses are built from, each a ``torch.nn.Module`` with the loss interface.

One-margin losses are :mod:`gpo_lab.losses.margins`; here are the others (two-argument, batch-level,
likelihood terms, weighted sums) and what they share.

Every loss maps a batch's :class:`~gpo_lab.scoring.batches.PairLogps` (policy and reference
log-probs of chosen and rejected, and the responses' token counts) and beta to one loss per
example: ``loss.pair_loss(logps, beta)``. A loss also says whether it needs the reference
(``uses_reference``), whether it is a function of rho alone (``on_rho``: the bandit needs it) and,
when it is f(beta * rho), its f's derivatives at 0 (``derivatives``; None otherwise: the report's
rescaled-beta panel leaves it out). The formulas and papers: docs/losses.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from gpo_lab.errors import ConfigError
from gpo_lab.losses.check import numerical_derivatives


class NotOnRho(ConfigError):
    """Raised where a loss that is not a function of rho alone is asked for one (the bandit, R_mu's theory)."""


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _lengths(logps) -> tuple[torch.Tensor, torch.Tensor]:
    if logps.chosen_length is None or logps.rejected_length is None:
        raise ConfigError("This loss needs the responses' token counts, but the batch's log-probs came without them.")
    return logps.chosen_length.clamp(min=1), logps.rejected_length.clamp(min=1)


def _nca_pair(c, r, beta):
    return -F.logsigmoid(beta * c) - 0.5 * F.logsigmoid(-beta * c) - 0.5 * F.logsigmoid(-beta * r)


def _bco_pair(c, r, beta):
    return -F.logsigmoid(beta * c) - F.logsigmoid(-beta * r)


def _sppo_hard(c, r, beta):
    return (c - 0.5 / beta) ** 2 + (r + 0.5 / beta) ** 2


def _apo_zero(c, r, beta):
    return 1 - torch.sigmoid(beta * c) + torch.sigmoid(beta * r)


def _apo_down(c, r, beta):
    return torch.sigmoid(beta * c) + 1 - torch.sigmoid(beta * (c - r))


def _dpop(c, r, beta, penalty=50.0):
    return -F.logsigmoid(beta * (c - r - penalty * torch.relu(-c)))


PAIR_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "nca_pair": _nca_pair,
    "bco_pair": _bco_pair,
    "sppo_hard": _sppo_hard,
    "apo_zero": _apo_zero,
    "apo_down": _apo_down,
    "dpop": _dpop,
}


class PairFunctionLoss(torch.nn.Module):
    """A loss of the chosen and rejected log-ratios separately, not of their difference alone."""

    uses_reference, on_rho, derivatives = True, False, None

    def __init__(self, name: str, fn: str, **params):
        super().__init__()
        if fn not in PAIR_FUNCTIONS:
            raise ConfigError(f"Unknown two-argument loss {fn!r}; one of {', '.join(PAIR_FUNCTIONS)}.")
        self.name, self.fn_name = name, fn
        self.function = functools.partial(PAIR_FUNCTIONS[fn], **params)

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        return self.function(_float(logps.chosen_log_ratio), _float(logps.rejected_log_ratio), beta)

    def per_example(self, rho, beta):
        raise NotOnRho(f"Loss {self.name!r} takes the chosen and rejected log-ratios separately, not rho alone.")

    def forward(self, logps, beta: float) -> torch.Tensor:
        return self.pair_loss(logps, beta).mean()


class AOTLoss(torch.nn.Module):
    """AOT: two of the batch's log-ratio distributions compared quantile by quantile, each sorted on its own.

    ``paired``: delta_(k) = sort(log pi(y_w) - log pi(y_l))_k - sort(log pi_ref(y_w) - log pi_ref(y_l))_k,
    the policy's margins against the reference's. ``unpaired``: delta_(k) = sort(c)_k - sort(r)_k, the
    chosen log-ratios c against the rejected ones r, with no pairing of chosen and rejected at all. Both:
    loss_k = (1 - eps) log(1 + exp(-beta delta_k)) + eps log(1 + exp(beta delta_k)). The k-th
    "example" is the k-th quantile, not the k-th pair: the loss is defined on the batch only.
    """

    uses_reference, on_rho, derivatives = True, False, None
    MODES = ("paired", "unpaired")

    def __init__(self, name: str = "aot", label_smoothing: float = 0.0, mode: str = "paired"):
        super().__init__()
        if mode not in self.MODES:
            raise ConfigError(f"loss.mode must be one of {', '.join(self.MODES)}, got {mode!r}.")
        self.name, self.epsilon, self.mode = name, float(label_smoothing), mode

    def _compared(self, logps) -> tuple[torch.Tensor, torch.Tensor]:
        """The two batches of values whose sorted orders are compared."""
        if self.mode == "paired":
            return logps.policy_chosen - logps.policy_rejected, logps.reference_chosen - logps.reference_rejected
        return logps.chosen_log_ratio, logps.rejected_log_ratio

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        first, second = (torch.sort(_float(x), dim=0).values for x in self._compared(logps))
        delta = beta * (first - second)
        return (1 - self.epsilon) * F.softplus(-delta) + self.epsilon * F.softplus(delta)

    def per_example(self, rho, beta):
        raise NotOnRho(f"Loss {self.name!r} compares the batch's sorted log-ratios: it is not defined on single pairs.")

    def forward(self, logps, beta: float) -> torch.Tensor:
        return self.pair_loss(logps, beta).mean()


class ChosenNLL(torch.nn.Module):
    """The negative log-likelihood of the chosen response, per token; beta plays no part.

    ``per_response``: -log pi(y_w|x) / |y_w| for each pair (RPO). ``per_batch_token``: the batch's
    chosen tokens' mean, -sum log pi(y_w|x) / sum |y_w|, given to every pair (TRL's ``sft``).
    """

    uses_reference, on_rho, derivatives = False, False, None

    def __init__(self, name: str = "sft", mode: str = "per_response"):
        super().__init__()
        if mode not in ("per_response", "per_batch_token"):
            raise ConfigError(f"loss.mode must be per_response or per_batch_token, got {mode!r}.")
        self.name, self.mode = name, mode

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        chosen_length, _ = _lengths(logps)
        chosen = _float(logps.policy_chosen)
        if self.mode == "per_response":
            return -chosen / chosen_length
        return (-chosen.sum() / chosen_length.sum()).expand_as(chosen)

    def per_example(self, rho, beta):
        raise NotOnRho(f"Loss {self.name!r} is a likelihood term of the chosen response, not a function of rho.")

    def forward(self, logps, beta: float) -> torch.Tensor:
        return self.pair_loss(logps, beta).mean()


class WeightedSum(torch.nn.Module):
    """sum_i w_i loss_i, per example (TRL's ``loss_weights``; RPO = DPO + alpha NLL)."""

    def __init__(self, name: str, losses: Sequence[torch.nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if not losses or len(weights) != len(losses):
            raise ConfigError(
                f"Loss {name!r}: give one weight per loss ({len(losses)} losses, {len(weights)} weights)."
            )
        self.name, self.parts, self.weights = name, torch.nn.ModuleList(losses), weights
        self.uses_reference = any(getattr(p, "uses_reference", True) for p in losses)
        self.on_rho = all(getattr(p, "on_rho", False) for p in losses)
        self.derivatives = None
        if self.on_rho:
            self.derivatives = numerical_derivatives(lambda z: self.per_example(z, 1.0))

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        return sum(w * p.pair_loss(logps, beta) for w, p in zip(self.weights, self.parts))  # type: ignore[return-value,operator]

    def per_example(self, rho, beta):
        if not self.on_rho:
            raise NotOnRho(f"Loss {self.name!r} has a part that is not a function of rho alone.")
        return sum(w * p.per_example(rho, beta) for w, p in zip(self.weights, self.parts))

    def forward(self, logps, beta: float) -> torch.Tensor:
        return self.pair_loss(logps, beta).mean()
