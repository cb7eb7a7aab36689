"""Preference statistics of a batch or a whole evaluation set, named as the common DPO trainers name them.

``rewards/*`` are beta times the policy/reference log-ratio (DPO's implicit reward);
``rho`` is the log-ratio margin, chosen minus rejected.
"""

from __future__ import annotations

import math

import torch

from gpo_lab.scoring.batches import PairLogps


def preference_metrics(logps: PairLogps, per_example_loss: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    chosen_ratio, rejected_ratio, rho = logps.chosen_log_ratio, logps.rejected_log_ratio, logps.rho
    half_rho_squared = rho.pow(2) / 2
    n = rho.numel()
    return {
        "loss": per_example_loss.mean(),
        "rho_mean": rho.mean(),
        "rho_std": rho.std(unbiased=False),
        "offline_reg": half_rho_squared.mean(),
        "offline_reg_se": half_rho_squared.std(unbiased=n > 1) / math.sqrt(n) if n > 1 else torch.zeros(()),
        "rewards/chosen": beta * chosen_ratio.mean(),
        "rewards/rejected": beta * rejected_ratio.mean(),
        "rewards/margins": beta * rho.mean(),
        "rewards/accuracies": (chosen_ratio > rejected_ratio).float().mean(),
        "logps/chosen": logps.policy_chosen.mean(),
        "logps/rejected": logps.policy_rejected.mean(),
    }


def ranking_accuracy(rho: torch.Tensor, golden_margin: torch.Tensor) -> torch.Tensor:
    """How often the implicit reward beta * rho orders a pair as the golden reward does (Tang et al., 2024):
    the fraction of pairs with unequal golden rewards where sign(rho) = sign(margin), rho = 0 counting 1/2."""
    golden = golden_margin.to(rho.device, torch.float64)
    decided = golden != 0
    if not bool(decided.any()):
        return torch.tensor(float("nan"))
    agreement = torch.sign(rho.double()[decided]) * torch.sign(golden[decided])
    return ((agreement + 1) / 2).mean()
