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
