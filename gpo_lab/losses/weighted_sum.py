"""A weighted sum of losses, per example: TRL's ``loss_weights``, RPO (DPO + alpha NLL) and ORPO (NLL + lambda OR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import NotOnRho, PreferenceLoss
from gpo_lab.losses.function_check import numerical_derivatives


class WeightedSum(PreferenceLoss):
    """sum_i w_i loss_i; f(beta * rho) with measured derivatives when every part is."""

    def __init__(self, name: str, losses: Sequence[PreferenceLoss], weights: Sequence[float] | None = None):
        super().__init__()
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if not losses or len(weights) != len(losses):
            raise ConfigError(
                f"Loss {name!r}: give one weight per loss ({len(losses)} losses, {len(weights)} weights)."
            )
        not_losses = [type(p).__name__ for p in losses if not isinstance(p, PreferenceLoss)]
        if not_losses:
            raise ConfigError(f"Loss {name!r}: every part must be a loss of gpo_lab.losses, got {not_losses}.")
        self.name, self.parts, self.weights = name, torch.nn.ModuleList(losses), weights
        self.uses_reference = any(p.uses_reference for p in losses)
        if all(p.on_rho for p in losses):
            self.derivatives = numerical_derivatives(lambda z: self.per_example(z, 1.0))

    def losses(self) -> list[PreferenceLoss]:
        """The parts, typed (a ModuleList holds them so that they move with the module)."""
        return [cast(PreferenceLoss, part) for part in self.parts]

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        return sum(w * p.pair_loss(logps, beta) for w, p in zip(self.weights, self.losses()))  # type: ignore[return-value]

    def per_example(self, rho, beta):
        if not all(p.on_rho for p in self.losses()):
            raise NotOnRho(f"Loss {self.name!r} has a part that is not a function of rho alone.")
        return sum(w * p.per_example(rho, beta) for w, p in zip(self.weights, self.losses()))
