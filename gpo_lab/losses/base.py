"""What every preference loss offers, so that training, the tasks and the bandit need no special cases.

A loss maps a batch's :class:`~gpo_lab.scoring.batches.PairLogps` (policy and reference log-probs of
chosen and rejected, and the responses' token counts) and beta to one loss per example:
``loss.pair_loss(logps, beta)``. It says whether it needs the reference (``uses_reference``: a
reference-free loss lets training skip scoring it) and, when it is f(beta * rho), its f's f(0),
f'(0), f''(0) (``derivatives``, None otherwise): the bandit and the offline-regularization analysis
take only such losses, through ``per_example(rho, beta)``.
"""

from __future__ import annotations

import math

import torch

from gpo_lab.errors import ConfigError
from gpo_lab.losses.catalog import Derivatives


class NotOnRho(ConfigError):
    """Raised where a loss that is not a function of rho alone is asked for one (the bandit, R_mu's theory)."""


class PreferenceLoss(torch.nn.Module):
    """The loss interface; every loss of gpo_lab derives from it."""

    name: str = "loss"  # summary.json's and the logs' name for it
    uses_reference: bool = True  # False: training steps need not score the reference
    derivatives: Derivatives | None = None  # f(0), f'(0), f''(0) of f, exactly when the loss is f(beta * rho)

    @property
    def on_rho(self) -> bool:
        """True when the loss is f(beta * rho) for one f: the bandit can take it."""
        return self.derivatives is not None

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        """One loss per example of a batch's :class:`~gpo_lab.scoring.batches.PairLogps`."""
        raise NotImplementedError(f"{type(self).__name__} must define pair_loss(logps, beta).")

    def per_example(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        """f(beta * rho) for a loss that is a function of rho alone; refused by every other loss."""
        raise NotOnRho(f"Loss {self.name!r} is not a function of the summed reference-normalized margin rho alone.")

    def forward(self, logps, beta: float) -> torch.Tensor:
        """The batch's mean loss."""
        return self.pair_loss(logps, beta).mean()


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 or float64 whatever the log-probs' precision (exp overflows in half)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def response_lengths(logps) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen and rejected responses' token counts (at least 1), for losses that average over tokens."""
    if logps.chosen_length is None or logps.rejected_length is None:
        raise ConfigError("This loss needs the responses' token counts, but the batch's log-probs came without them.")
    return logps.chosen_length.clamp(min=1), logps.rejected_length.clamp(min=1)


def validate_beta(beta: float) -> float:
    """beta as a float, or a clear error for what no loss can train with."""
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not math.isfinite(beta) or beta <= 0:
        raise ConfigError(f"beta must be a finite number > 0, got {beta!r}. Set e.g. beta=0.1.")
    return float(beta)
