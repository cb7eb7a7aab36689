"""Preference statistics of a batch or a whole evaluation set, named as the common DPO trainers name them.

``rewards/*`` are beta times the policy/reference log-ratio (DPO's implicit reward);
``rho`` is the log-ratio margin, chosen minus rejected.
"""

from __future__ import annotations

import math

import torch


def preference_metrics(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    per_example_loss: torch.Tensor,
    beta: float,
) -> dict[str, torch.Tensor]:
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    rho = chosen_ratio - rejected_ratio
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
        "logps/chosen": policy_chosen.mean(),
        "logps/rejected": policy_rejected.mean(),
    }
