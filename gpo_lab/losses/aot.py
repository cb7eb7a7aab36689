"""AOT (Melnyk et al. 2024): a loss of the batch's sorted log-ratios, defined on a batch, not on single pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import NotOnRho, PreferenceLoss, at_least_float32


class AOTLoss(PreferenceLoss):
    """AOT: two of the batch's log-ratio distributions compared quantile by quantile, each sorted on its own.

    ``paired``: delta_(k) = sort(log pi(y_w) - log pi(y_l))_k - sort(log pi_ref(y_w) - log pi_ref(y_l))_k,
    the policy's margins against the reference's. ``unpaired``: delta_(k) = sort(c)_k - sort(r)_k, the
    chosen log-ratios c against the rejected ones r, with no pairing of chosen and rejected at all. Both:
    loss_k = (1 - eps) log(1 + exp(-beta delta_k)) + eps log(1 + exp(beta delta_k)). The k-th
    "example" is the k-th quantile, not the k-th pair: the loss is defined on the batch only.
    """

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
        first, second = (torch.sort(at_least_float32(x), dim=0).values for x in self._compared(logps))
        delta = beta * (first - second)
        return (1 - self.epsilon) * F.softplus(-delta) + self.epsilon * F.softplus(delta)

    def per_example(self, rho, beta):
        raise NotOnRho(f"Loss {self.name!r} compares the batch's sorted log-ratios: it is not defined on single pairs.")
