"""Which way is better for each validation metric the code logs: one literal table.

The run keeps a best value only for a metric with a direction, the wandb logger summarizes it as
its best, and the report reads "higher is better" from it. None says that a metric has no better
direction (a spread, a length). The standard error ``X_se`` of a metric ``X`` has none either.

The table lives here, below every producer, so that the report and the sweep status read it
without importing the producers (the callbacks and the bandit load torch and Lightning). A test
(``tests/test_directions.py``) checks on real runs that every ``val/`` metric logged has an entry.
A ``test/`` metric (the same quantity on the test prompts) takes the direction of its ``val/`` twin.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

PREFIX = "val/"
TEST_PREFIX = "test/"  # the test prompts' values: reported for the step that validation chose
MODES = ("max", "min", None)

METRIC_DIRECTIONS: Mapping[str, str | None] = MappingProxyType(
    {
        # The pair statistics of every validation batch (training/pair_metrics.py).
        "val/loss": "min",
        "val/rho_mean": "max",  # the held-out margin of chosen over rejected
        "val/rho_std": None,  # a spread of the margins: neither way is better
        "val/offline_reg": "min",  # R_mu: the policy stays closer to the reference on mu
        "val/rewards/chosen": "max",  # held-out preferred responses gained on the reference
        "val/rewards/rejected": "min",  # dispreferred ones lost
        "val/rewards/margins": "max",
        "val/rewards/accuracies": "max",
        "val/ranking_accuracy": "max",  # beta * rho orders held-out pairs as the golden reward does
        "val/logps/chosen": "max",  # held-out preferred responses made more likely
        "val/logps/rejected": "min",
        # The sample bank's callbacks (eval/): less divergence from the reference, more wins.
        "val/kl_seq": "min",
        "val/kl_token": "min",
        "val/win_rate": "max",
        "val/judge_reward": "max",
        "val/judge_reward_reference": None,  # the reference's samples: a baseline, not the policy's doing
        "val/response_length": None,  # a length is neither good nor bad
        "val/response_length_reference": None,
        "val/capped_fraction": None,  # policy samples cut at max_new_tokens: what the KL is measured on
        # The tabular bandit's exact quantities (tasks/bandit/problem.py).
        "val/kl": "min",
        "val/reward": "max",
        "val/off_support_mass": "min",  # mass that no loss constrains: less is less blind extrapolation
    }
)


def metric_mode(name: str) -> str | None:
    """``"max"`` or ``"min"`` for a validation metric with a direction; None when it has no better
    direction or no entry (a standard error, a training metric). ``test/X`` reads ``val/X``'s entry."""
    if name.startswith(TEST_PREFIX):
        name = PREFIX + name[len(TEST_PREFIX) :]
    return METRIC_DIRECTIONS.get(name)
