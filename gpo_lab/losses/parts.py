"""The parts the field's losses are built from, each a ``torch.nn.Module`` with the loss interface.

Every loss maps a batch's :class:`~gpo_lab.scoring.batches.PairLogps` (policy and reference
log-probs of chosen and rejected, and the responses' token counts) and beta to one loss per
example: ``loss.pair_loss(logps, beta)``. A loss also says whether it needs the reference
(``uses_reference``), whether it is a function of rho alone (``on_rho``: the bandit needs it) and,
when it is f(beta * rho), its f's derivatives at 0 (``derivatives``; None otherwise: the report's
rescaled-beta panel leaves it out). The formulas and papers: docs/losses.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gpo_lab.errors import ConfigError
from gpo_lab.losses.check import check_gpo_function, numerical_derivatives

SCORES = ("log_ratio", "log_ratio_avg", "logp_avg", "log_odds")
NOISE = ("none", "cdpo", "robust")
BETA_ROLES = ("temperature", "weight", "ipo")


class NotOnRho(ConfigError):
    """Raised where a loss that is not a function of rho alone is asked for one (the bandit, R_mu's theory)."""


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _lengths(logps) -> tuple[torch.Tensor, torch.Tensor]:
    if logps.chosen_length is None or logps.rejected_length is None:
        raise ConfigError("This loss needs the responses' token counts, but the batch's log-probs came without them.")
    return logps.chosen_length.clamp(min=1), logps.rejected_length.clamp(min=1)


def scores(logps, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen and rejected responses' scores whose difference is the margin.

    ``log_ratio``: log pi - log pi_ref, summed over tokens (GPO's rho). ``log_ratio_avg``: the same
    divided by the response's length (TRL's ``sigmoid_norm`` and ``ipo``). ``logp_avg``: the
    average token log-prob, no reference (SimPO). ``log_odds``: log(p / (1 - p)) with p the
    geometric mean token probability, no reference (ORPO).
    """
    if kind == "log_ratio":
        return _float(logps.chosen_log_ratio), _float(logps.rejected_log_ratio)
    chosen_length, rejected_length = _lengths(logps)
    if kind == "log_ratio_avg":
        return _float(logps.chosen_log_ratio) / chosen_length, _float(logps.rejected_log_ratio) / rejected_length
    chosen, rejected = _float(logps.policy_chosen) / chosen_length, _float(logps.policy_rejected) / rejected_length
    if kind == "logp_avg":
        return chosen, rejected
    return chosen - log1mexp(chosen), rejected - log1mexp(rejected)  # log_odds


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler's split at -log 2)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


# ----------------------------------------------------------------------------- non-convex f of z
def discopop(z: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """(1 - sigmoid(z/tau)) log(1 + exp(-z)) + sigmoid(z/tau) exp(-z): DiscoPOP's log-ratio modulated loss."""
    z = _float(z)
    mix = torch.sigmoid(z / tau)
    return (1 - mix) * F.softplus(-z) + mix * torch.exp(-z)


def exo_pair(z: torch.Tensor, epsilon: float = 1e-3) -> torch.Tensor:
    """KL(softmax(z, 0) || (1 - eps, eps)) over {chosen, rejected}: EXO-pref with K = 2."""
    z = _float(z)
    return torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-epsilon)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(epsilon)
    )


NONCONVEX_FUNCTIONS = {"discopop": discopop, "exo_pair": exo_pair}


def _resolve(fn: str, fn_kwargs: dict | None):
    """(name, f) for a GPO member or alias, a non-convex f of the field, or a user's dotted path."""
    from gpo_lab.losses import resolve_function

    if fn in NONCONVEX_FUNCTIONS:
        return fn, functools.partial(NONCONVEX_FUNCTIONS[fn], **(fn_kwargs or {}))
    return resolve_function(fn)  # checked by MarginLoss as the z -> loss function it builds


class MarginLoss(torch.nn.Module):
    """loss = c * g(a * (s_w - s_l) - shift), g = f with optional label noise: one margin, one f.

    ``scores``: which margin (see :func:`scores`). ``shift`` = gamma (SimPO's target margin)
    + length_alpha * (|y_w| - |y_l|) (R-DPO) + the pair's own offset when ``offset`` (ODPO).
    ``noise``: ``cdpo`` is (1 - eps) f(z) + eps f(-z); ``robust`` is ((1 - eps) f(z) - eps f(-z)) / (1 - 2 eps).
    ``beta_role``: ``temperature`` (a = beta, c = 1), ``weight`` (a = 1, c = beta; ORPO's lambda)
    or ``ipo`` (a = 2 beta, c = 1 / (2 beta)^2, with f = squared: (m - 1/(2 beta))^2, IPO's tau = beta).
    g is checked like a user's f (finite, convex unless ``allow_nonconvex``, decreasing at 0).
    """

    on_rho = False

    def __init__(
        self,
        name: str,
        fn: str = "logistic",
        scores: str = "log_ratio",
        gamma: float = 0.0,
        length_alpha: float = 0.0,
        offset: bool = False,
        noise: str = "none",
        label_smoothing: float = 0.0,
        beta_role: str = "temperature",
        fn_kwargs: dict | None = None,
        allow_nonconvex: bool = False,
    ):
        super().__init__()
        for value, allowed, key in (
            (scores, SCORES, "scores"),
            (noise, NOISE, "noise"),
            (beta_role, BETA_ROLES, "beta_role"),
        ):
            if value not in allowed:
                raise ConfigError(f"loss.{key} must be one of {', '.join(allowed)}, got {value!r}.")
        if noise != "none" and not 0 <= label_smoothing < 0.5:
            raise ConfigError(f"loss.label_smoothing must be in [0, 0.5) for noise={noise}, got {label_smoothing!r}.")
        self.name, self.score_kind, self.noise, self.epsilon, self.beta_role = (
            name,
            scores,
            noise,
            label_smoothing,
            beta_role,
        )
        self.gamma, self.length_alpha, self.offset = float(gamma), float(length_alpha), bool(offset)
        self.fn_name, self.f = _resolve(fn, fn_kwargs)
        self.uses_reference = scores in ("log_ratio", "log_ratio_avg")
        shifted = self.gamma != 0 or self.length_alpha != 0 or self.offset
        self.on_rho = scores == "log_ratio" and not shifted and beta_role == "temperature"
        check_gpo_function(f"{name} (f = {self.fn_name}, noise = {noise})", self.g, allow_nonconvex=allow_nonconvex)
        self.derivatives = numerical_derivatives(self.g) if self.on_rho else None

    def g(self, z: torch.Tensor) -> torch.Tensor:
        """f with label noise, as a function of z."""
        if self.noise == "none":
            return self.f(z)
        eps = self.epsilon
        if self.noise == "cdpo":
            return (1 - eps) * self.f(z) + eps * self.f(-z)
        return ((1 - eps) * self.f(z) - eps * self.f(-z)) / (1 - 2 * eps)

    def shift(self, logps) -> torch.Tensor | float:
        shift = self.gamma
        if self.length_alpha:
            chosen_length, rejected_length = _lengths(logps)
            shift = shift + self.length_alpha * _float(chosen_length - rejected_length)
        if self.offset:
            if logps.offset is None:
                raise ConfigError(f"Loss {self.name!r} needs a per-pair offset, but the batch has none.")
            shift = shift + _float(logps.offset)
        return shift

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        chosen, rejected = scores(logps, self.score_kind)
        a, c = {"temperature": (beta, 1.0), "weight": (1.0, beta), "ipo": (2 * beta, 1 / (2 * beta) ** 2)}[
            self.beta_role
        ]
        return c * self.g(a * (chosen - rejected) - self.shift(logps))

    def per_example(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        """g(beta * rho), for losses that are functions of rho alone (the bandit)."""
        if not self.on_rho:
            raise NotOnRho(f"Loss {self.name!r} is not a function of the summed reference-normalised margin rho.")
        return self.g(beta * _float(rho))

    def forward(self, logps, beta: float) -> torch.Tensor:
        return self.pair_loss(logps, beta).mean()

    def extra_repr(self) -> str:
        return f"{self.name}: f={self.fn_name}, scores={self.score_kind}, noise={self.noise}, beta as {self.beta_role}"


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


PAIR_FUNCTIONS = {
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
    """AOT (paired): the batch's sorted policy log-ratio margins against the sorted reference ones.

    delta_(k) = sort(log pi(y_w) - log pi(y_l))_k - sort(log pi_ref(y_w) - log pi_ref(y_l))_k and
    loss_k = (1 - eps) log(1 + exp(-beta delta_k)) + eps log(1 + exp(beta delta_k)). The k-th
    "example" is the k-th quantile, not the k-th pair: the loss is defined on the batch only.
    """

    uses_reference, on_rho, derivatives = True, False, None

    def __init__(self, name: str = "aot", label_smoothing: float = 0.0):
        super().__init__()
        self.name, self.epsilon = name, float(label_smoothing)

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        policy = torch.sort(_float(logps.policy_chosen - logps.policy_rejected), dim=0).values
        reference = torch.sort(_float(logps.reference_chosen - logps.reference_rejected), dim=0).values
        delta = beta * (policy - reference)
        return (1 - self.epsilon) * F.softplus(-delta) + self.epsilon * F.softplus(delta)

    def per_example(self, rho, beta):
        raise NotOnRho(f"Loss {self.name!r} compares the batch's sorted margins: it is not defined on single pairs.")

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
        return sum(w * p.pair_loss(logps, beta) for w, p in zip(self.weights, self.parts))

    def per_example(self, rho, beta):
        if not self.on_rho:
            raise NotOnRho(f"Loss {self.name!r} has a part that is not a function of rho alone.")
        return sum(w * p.per_example(rho, beta) for w, p in zip(self.weights, self.parts))

    def forward(self, logps, beta: float) -> torch.Tensor:
        return self.pair_loss(logps, beta).mean()
