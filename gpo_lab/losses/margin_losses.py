"""Losses of one margin: f of beta times a margin, shifted, with optional label noise (cDPO, SimPO, ORPO's term, ...).

The margin is the summed or length-averaged log-ratio, SimPO's reference-free averaged log-prob
or ORPO's log-odds (:func:`scores`); the f is a GPO member, a user's f or a non-convex f of the
field (DiscoPOP, EXO). Each loss's formula and paper: docs/losses.md.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import NotOnRho, PreferenceLoss, at_least_float32, response_lengths
from gpo_lab.losses.function_check import LossFunction, check_gpo_function, numerical_derivatives
from gpo_lab.losses.gpo import resolve_function

SCORES = ("log_ratio", "log_ratio_avg", "logp_avg", "log_odds")
NOISE = ("none", "cdpo", "robust")
BETA_ROLES = ("temperature", "weight", "ipo")


def scores(logps, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen and rejected responses' scores whose difference is the margin.

    ``log_ratio``: log pi - log pi_ref, summed over tokens (GPO's rho). ``log_ratio_avg``: the same
    divided by the response's length (TRL's ``sigmoid_norm`` and ``ipo``). ``logp_avg``: the
    average token log-prob, no reference (SimPO). ``log_odds``: log(p / (1 - p)) with p the
    geometric mean token probability, no reference (ORPO).
    """
    if kind == "log_ratio":
        return at_least_float32(logps.chosen_log_ratio), at_least_float32(logps.rejected_log_ratio)
    chosen_length, rejected_length = response_lengths(logps)
    if kind == "log_ratio_avg":
        return at_least_float32(logps.chosen_log_ratio) / chosen_length, at_least_float32(
            logps.rejected_log_ratio
        ) / rejected_length
    chosen, rejected = (
        at_least_float32(logps.policy_chosen) / chosen_length,
        at_least_float32(logps.policy_rejected) / rejected_length,
    )
    if kind == "logp_avg":
        return chosen, rejected
    return chosen - log1mexp(chosen), rejected - log1mexp(rejected)  # log_odds


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler's split at -log 2)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


# ----------------------------------------------------------------------------- non-convex f of z
def discopop(z: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """(1 - sigmoid(z/tau)) log(1 + exp(-z)) + sigmoid(z/tau) exp(-z): DiscoPOP's log-ratio modulated loss."""
    z = at_least_float32(z)
    mix = torch.sigmoid(z / tau)
    return (1 - mix) * F.softplus(-z) + mix * torch.exp(-z)


def exo_pair(z: torch.Tensor, epsilon: float = 1e-3) -> torch.Tensor:
    """KL(softmax(z, 0) || (1 - eps, eps)) over {chosen, rejected}: EXO-pref with K = 2."""
    z = at_least_float32(z)
    return torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-epsilon)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(epsilon)
    )


NONCONVEX_FUNCTIONS = {"discopop": discopop, "exo_pair": exo_pair}
# f whose own epsilon is ``loss.label_smoothing`` (TRL's name for it), not label noise added to f
SMOOTHED_FUNCTIONS = {"exo_pair": "epsilon"}


def resolve_margin_function(fn: str, fn_kwargs: dict | None) -> tuple[str, LossFunction]:
    """(name, f) for a GPO member or alias, a non-convex f of the field, or a user's dotted path.

    ``fn_kwargs`` go to a non-convex f of the field only; given to any other f they would be ignored, so
    they are refused.
    """
    if fn in NONCONVEX_FUNCTIONS:
        return fn, functools.partial(NONCONVEX_FUNCTIONS[fn], **(fn_kwargs or {}))
    if fn_kwargs:
        raise ConfigError(f"loss.fn_kwargs is taken only by {', '.join(NONCONVEX_FUNCTIONS)}, not by fn={fn!r}.")
    return resolve_function(fn)  # checked by MarginLoss as the z -> loss function it builds


def smoothing_options(fn: str, noise: str, label_smoothing: float, fn_kwargs: dict | None) -> dict | None:
    """fn_kwargs with ``loss.label_smoothing`` where it is f's own epsilon (EXO); refused where it would be ignored."""
    key = SMOOTHED_FUNCTIONS.get(fn)
    if key is not None:
        if noise != "none" or key in (fn_kwargs or {}):
            raise ConfigError(f"{fn}'s epsilon is loss.label_smoothing alone (no loss.noise, no loss.fn_kwargs.{key}).")
        if not 0 < label_smoothing < 0.5:
            raise ConfigError(f"loss.label_smoothing must be in (0, 0.5) for {fn}, got {label_smoothing!r}.")
        return {**(fn_kwargs or {}), key: float(label_smoothing)}
    if noise == "none" and label_smoothing != 0:
        raise ConfigError(
            f"loss.label_smoothing={label_smoothing!r} has no effect without label noise: "
            "set loss.noise=cdpo or loss.noise=robust, or leave it at 0."
        )
    return fn_kwargs


class MarginLoss(PreferenceLoss):
    """loss = c * g(a * (s_w - s_l) - shift), g = f with optional label noise: one margin, one f.

    ``scores``: which margin (see :func:`scores`). ``shift`` = gamma (SimPO's target margin)
    - length_alpha * (|y_w| - |y_l|) (R-DPO, Park et al. 2024: the length-regularized reward r - alpha |y|
    adds + alpha (|y_w| - |y_l|) to the margin) + the pair's own offset when ``offset`` (ODPO).
    ``noise``: ``cdpo`` is (1 - eps) f(z) + eps f(-z); ``robust`` is ((1 - eps) f(z) - eps f(-z)) / (1 - 2 eps);
    eps is ``label_smoothing``, which is EXO's own epsilon for ``fn=exo_pair`` and refused elsewhere.
    ``beta_role``: ``temperature`` (a = beta, c = 1), ``weight`` (a = 1, c = beta; ORPO's lambda)
    or ``ipo`` (a = 2 beta, c = 1 / (2 beta)^2, with f = squared: (m - 1/(2 beta))^2, IPO's tau = beta).
    g is checked like a user's f (finite, convex unless ``allow_nonconvex``, decreasing at 0).
    """

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
        fn_kwargs = smoothing_options(fn, noise, label_smoothing, fn_kwargs)
        self.fn_name, self.f = resolve_margin_function(fn, fn_kwargs)
        self.uses_reference = scores in ("log_ratio", "log_ratio_avg")
        shifted = self.gamma != 0 or self.length_alpha != 0 or self.offset
        on_rho = scores == "log_ratio" and not shifted and beta_role == "temperature"
        check_gpo_function(f"{name} (f = {self.fn_name}, noise = {noise})", self.g, allow_nonconvex=allow_nonconvex)
        self.derivatives = numerical_derivatives(self.g) if on_rho else None

    def g(self, z: torch.Tensor) -> torch.Tensor:
        """f with label noise, as a function of z."""
        if self.noise == "none":
            return self.f(z)
        eps = self.epsilon
        if self.noise == "cdpo":
            return (1 - eps) * self.f(z) + eps * self.f(-z)
        return ((1 - eps) * self.f(z) - eps * self.f(-z)) / (1 - 2 * eps)

    def shift(self, logps) -> torch.Tensor | float:
        shift: torch.Tensor | float = self.gamma
        if self.length_alpha:
            chosen_length, rejected_length = response_lengths(logps)
            shift = shift - self.length_alpha * at_least_float32(chosen_length - rejected_length)
        if self.offset:
            if logps.offset is None:
                raise ConfigError(f"Loss {self.name!r} needs a per-pair offset, but the batch has none.")
            shift = shift + at_least_float32(logps.offset)
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
            raise NotOnRho(f"Loss {self.name!r} is not a function of the summed reference-normalized margin rho.")
        return self.g(beta * at_least_float32(rho))

    def extra_repr(self) -> str:
        return f"{self.name}: f={self.fn_name}, scores={self.score_kind}, noise={self.noise}, beta as {self.beta_role}"
