"""The chosen response's negative log-likelihood: TRL's ``sft`` loss and the likelihood term of RPO and ORPO."""

from __future__ import annotations

import torch

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import NotOnRho, PreferenceLoss, at_least_float32, response_lengths


class ChosenNLL(PreferenceLoss):
    """The negative log-likelihood of the chosen response, per token; beta plays no part.

    ``per_response``: -log pi(y_w|x) / |y_w| for each pair (RPO). ``per_batch_token``: the batch's
    chosen tokens' mean, -sum log pi(y_w|x) / sum |y_w|, given to every pair (TRL's ``sft``).
    """

    uses_reference = False
    MODES = ("per_response", "per_batch_token")

    def __init__(self, name: str = "sft", mode: str = "per_response"):
        super().__init__()
        if mode not in self.MODES:
            raise ConfigError(f"loss.mode must be per_response or per_batch_token, got {mode!r}.")
        self.name, self.mode = name, mode

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        chosen_length, _ = response_lengths(logps)
        chosen = at_least_float32(logps.policy_chosen)
        if self.mode == "per_response":
            return -chosen / chosen_length
        return (-chosen.sum() / chosen_length.sum()).expand_as(chosen)

    def per_example(self, rho, beta):
        raise NotOnRho(f"Loss {self.name!r} is a likelihood term of the chosen response, not a function of rho.")
