"""Which logged metric goes on which axis, how it reads, and which way is better.

A metric is named as logged (``val/win_rate``); a leading minus (``-val/loss``) negates it, so
that "higher is better" holds for the quality axis. When the user names no metric, the first of
a list of candidates that some job logged is used, and the report says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from gpo_lab.store.records import metric_mode

# Divergence from the reference, most to least preferred: the low-variance token-wise estimator,
# the sequence log-ratio estimator, the exact KL of the tabular experiments.
KL_CANDIDATES = ("val/kl_token", "val/kl_seq", "val/kl")
# Quality of the policy: win rate against the reference, the exact expected reward of the tabular
# experiments, held-out preference accuracy (comparable across losses, unlike the loss itself).
QUALITY_CANDIDATES = ("val/win_rate", "val/reward", "val/rewards/accuracies", "-val/loss")
REGULARIZER = "val/offline_reg"

_DESCRIPTIONS = {
    "val/kl_token": "KL(π‖π_ref) per response [nats], token-wise estimate",
    "val/kl_seq": "KL(π‖π_ref) per response [nats], log-ratio estimate",
    "val/kl": "KL(π‖π_ref) [nats], exact",
    "val/win_rate": "win rate against the reference [fraction]",
    "val/reward": "expected reward",
    "val/rewards/accuracies": "held-out preference accuracy [fraction]",
    "val/loss": "validation loss E_μ[f(βρ)]",
    "val/offline_reg": "offline regularizer E_μ[ρ²]/2 [nats²]",
}


class MissingMetric(ValueError):
    """A figure or table needs a metric that no job of the sweep logged."""


@dataclass(frozen=True)
class Metric:
    name: str
    negate: bool = False

    @classmethod
    def parse(cls, spec: str) -> Metric:
        spec = spec.strip()
        return cls(spec[1:], True) if spec.startswith("-") else cls(spec)

    @property
    def spec(self) -> str:
        return f"-{self.name}" if self.negate else self.name

    @property
    def higher_is_better(self) -> bool:
        return (metric_mode(self.name) == "max") != self.negate

    @property
    def label(self) -> str:
        """Axis label: what it measures, its unit, and the logged name it comes from."""
        description = _DESCRIPTIONS.get(self.name)
        if description is None:
            return f"−{self.name}" if self.negate else self.name
        if self.negate:
            return f"− {description} ({self.spec})"
        return f"{description} ({self.name})"

    def values(self, jobs: pd.DataFrame, value: str = "final") -> pd.Series:
        """The metric of every job, as ``final`` (last validation) or ``best`` (over training)."""
        column = f"{value}/{self.name}"
        if column not in jobs:
            return pd.Series(float("nan"), index=jobs.index)
        values = pd.to_numeric(jobs[column], errors="coerce")
        return -values if self.negate else values

    def standard_errors(self, jobs: pd.DataFrame, value: str = "final") -> pd.Series:
        """The evaluation's own standard error of each job's value, where it was logged."""
        column = f"final/{self.name}_se" if value == "final" else f"best_se/{self.name}"
        if column not in jobs:
            return pd.Series(float("nan"), index=jobs.index)
        return pd.to_numeric(jobs[column], errors="coerce")

    def present(self, jobs: pd.DataFrame) -> bool:
        return bool(self.values(jobs).notna().any())


def choose(jobs: pd.DataFrame, requested: str | None, candidates: tuple[str, ...]) -> Metric | None:
    """The requested metric, or the first candidate some job logged; None if none was."""
    if requested:
        return Metric.parse(requested)
    for spec in candidates:
        metric = Metric.parse(spec)
        if metric.present(jobs):
            return metric
    return None
