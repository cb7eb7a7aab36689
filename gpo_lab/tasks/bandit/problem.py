"""A tabular preference bandit in which every quantity of the GPO analysis is exact.

The policy is a softmax over K actions with free logits; the offline distribution mu is a
finite set of action pairs with weights; each pair (a, b) carries the probability p_ab that a
labeller prefers a. Because everything is a finite sum, KL(pi || pi_ref), the offline
regularizer R_mu = E_mu[rho^2] / 2, the population GPO loss, the expected true reward and the
win rate against the reference are computed exactly, with no sampling error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import PreferenceLoss

DTYPE = torch.float64


@dataclass(frozen=True)
class BanditProblem:
    """K actions, their true rewards, a reference policy and a labelled offline distribution.

    ``pairs[i] = (a, b)`` is drawn with probability ``pair_weights[i]`` (the weights sum to 1)
    and a labeller prefers a over b with probability ``preference[i]``.
    """

    reward: torch.Tensor  # (K,)
    reference_logits: torch.Tensor  # (K,)
    pairs: torch.Tensor  # (M, 2) long
    pair_weights: torch.Tensor  # (M,)
    preference: torch.Tensor  # (M,) P(pairs[i, 0] is preferred)

    @property
    def num_actions(self) -> int:
        return self.reward.numel()

    @property
    def support(self) -> torch.Tensor:
        """Boolean mask of the actions that appear in a pair of positive weight."""
        mask = torch.zeros(self.num_actions, dtype=torch.bool)
        mask[self.pairs[self.pair_weights > 0].flatten()] = True
        return mask

    # ------------------------------------------------------------------ the policy
    def reference_log_policy(self) -> torch.Tensor:
        return torch.log_softmax(self.reference_logits, dim=-1)

    def log_ratio(self, logits: torch.Tensor) -> torch.Tensor:
        """log pi(a) - log pi_ref(a) for every action."""
        return torch.log_softmax(logits, dim=-1) - self.reference_log_policy()

    def rho(
        self, logits: torch.Tensor, first: torch.Tensor | None = None, second: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The GPO margin of each pair: log-ratio of ``first`` minus log-ratio of ``second``.

        By default the pairs of mu, oriented as stored (first = pairs[:, 0]).
        """
        first = self.pairs[:, 0] if first is None else first
        second = self.pairs[:, 1] if second is None else second
        ratio = self.log_ratio(logits)
        return ratio[..., first] - ratio[..., second]

    # ------------------------------------------------------------------ exact quantities
    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """KL(pi || pi_ref) = sum_a pi(a) (log pi(a) - log pi_ref(a))."""
        return (torch.softmax(logits, dim=-1) * self.log_ratio(logits)).sum(-1)

    def offline_regularizer(self, logits: torch.Tensor) -> torch.Tensor:
        """R_mu = E_mu[rho^2] / 2: the penalty the second-order expansion of every GPO loss holds."""
        return (self.pair_weights * self.rho(logits).pow(2)).sum(-1) / 2

    def expected_reward(self, logits: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(logits, dim=-1) * self.reward).sum(-1)

    def win_rate(self, logits: torch.Tensor) -> torch.Tensor:
        """P(r(a) > r(b)) + P(r(a) = r(b)) / 2 for a ~ pi and b ~ pi_ref."""
        beats = (self.reward[:, None] > self.reward[None, :]).to(DTYPE)
        ties = (self.reward[:, None] == self.reward[None, :]).to(DTYPE)
        pi = torch.softmax(logits, dim=-1)
        reference = torch.softmax(self.reference_logits, dim=-1)
        return pi @ (beats + ties / 2) @ reference

    def off_support_mass(self, logits: torch.Tensor) -> torch.Tensor:
        """pi's probability of the actions mu never shows: no GPO loss sees them."""
        return torch.softmax(logits, dim=-1)[..., ~self.support].sum(-1)

    def expected_margin(self, logits: torch.Tensor) -> torch.Tensor:
        """E[rho(chosen, rejected)] over mu and the labels: sum_i w_i (2 p_i - 1) rho_i."""
        return (self.pair_weights * (2 * self.preference - 1) * self.rho(logits)).sum(-1)

    def population_loss(self, loss: PreferenceLoss, logits: torch.Tensor, beta: float) -> torch.Tensor:
        """The exact expected loss: sum_i w_i [p_i f(beta rho_i) + (1 - p_i) f(-beta rho_i)]."""
        rho = self.rho(logits)
        return (
            self.pair_weights
            * (self.preference * loss.per_example(rho, beta) + (1 - self.preference) * loss.per_example(-rho, beta))
        ).sum(-1)

    def metrics(self, logits: torch.Tensor, loss: PreferenceLoss, beta: float) -> dict[str, torch.Tensor]:
        """Every exact quantity, under the names the runs log them (without the ``val/`` prefix)."""
        return {
            "loss": self.population_loss(loss, logits, beta),
            "kl": self.kl(logits),
            "offline_reg": self.offline_regularizer(logits),
            "reward": self.expected_reward(logits),
            "win_rate": self.win_rate(logits),
            "off_support_mass": self.off_support_mass(logits),
            "rho_mean": self.expected_margin(logits),
        }

    # ------------------------------------------------------------------ training data
    def labelled_population(self) -> dict[str, torch.Tensor]:
        """mu with its labels as a weighted table of (chosen, rejected) rows.

        Each pair appears in both orientations, weighted w p and w (1 - p) (rows of zero weight
        are dropped), so the weighted mean of f(beta rho(chosen, rejected)) over the table is
        exactly the population loss.
        """
        first, second = self.pairs[:, 0], self.pairs[:, 1]
        chosen = torch.cat([first, second])
        rejected = torch.cat([second, first])
        weight = torch.cat([self.pair_weights * self.preference, self.pair_weights * (1 - self.preference)])
        keep = weight > 0
        return {"chosen": chosen[keep], "rejected": rejected[keep], "weight": weight[keep]}

    def sample_pairs(self, num_pairs: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A finite offline dataset: pairs drawn from mu, each labelled by one draw of its preference."""
        index = torch.multinomial(self.pair_weights, num_pairs, replacement=True, generator=generator)
        first_wins = torch.rand(num_pairs, generator=generator, dtype=DTYPE) < self.preference[index]
        first, second = self.pairs[index, 0], self.pairs[index, 1]
        return {
            "chosen": torch.where(first_wins, first, second),
            "rejected": torch.where(first_wins, second, first),
            "weight": torch.ones(num_pairs, dtype=DTYPE),
        }


# ---------------------------------------------------------------------- construction
LABELS = ("bradley_terry", "deterministic")
MU_KINDS = ("full", "partial", "pairs")


def _vector(values: Sequence[float] | None, size: int, what: str) -> torch.Tensor | None:
    if values is None:
        return None
    try:
        vector = torch.as_tensor(list(values), dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError):
        vector = None
    if vector is None or vector.shape != (size,) or not torch.isfinite(vector).all():
        raise ConfigError(f"bandit.{what} must be a list of {size} finite numbers (one per action), got {values!r}.")
    return vector


def _action(value: Any, num_actions: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_actions:
        raise ConfigError(f"bandit.{what}: {value!r} is not an action; actions are 0..{num_actions - 1}.")
    return value


def offline_pairs(
    mu: str, num_actions: int, support: Sequence[int] | None = None, pairs: Sequence[Sequence[float]] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pairs, weights) of mu: uniform over all pairs (full), over the pairs of ``support``
    (partial), or the explicit ``[[a, b, weight], ...]`` (pairs)."""
    if mu == "full":
        actions = list(range(num_actions))
    elif mu == "partial":
        if not support or len(support) < 2:
            raise ConfigError(
                "bandit.mu=partial needs bandit.support, a list of at least two actions, e.g. bandit.support=[0,1,2]."
            )
        actions = sorted({_action(a, num_actions, "support") for a in support})
        if len(actions) < 2:
            raise ConfigError("bandit.support must name at least two different actions.")
    elif mu == "pairs":
        if not pairs:
            raise ConfigError(
                "bandit.mu=pairs needs bandit.pairs, a list of [a, b, weight], e.g. bandit.pairs=[[0,1,1.0],[1,2,3.0]]."
            )
        rows = []
        for row in pairs:
            if len(row) != 3:
                raise ConfigError(f"bandit.pairs: each entry is [a, b, weight], got {list(row)}.")
            a, b = _action(row[0], num_actions, "pairs"), _action(row[1], num_actions, "pairs")
            weight = float(row[2])
            if a == b or not (math.isfinite(weight) and weight >= 0):
                raise ConfigError(f"bandit.pairs: {list(row)} needs two different actions and a weight >= 0.")
            rows.append((a, b, weight))
        weights = torch.tensor([w for _, _, w in rows], dtype=DTYPE)
        if weights.sum() <= 0:
            raise ConfigError("bandit.pairs: the weights sum to 0; give at least one pair a positive weight.")
        return torch.tensor([(a, b) for a, b, _ in rows], dtype=torch.long), weights / weights.sum()
    else:
        raise ConfigError(f"bandit.mu must be one of {', '.join(MU_KINDS)}, got {mu!r}.")
    index = torch.tensor(list(combinations(actions, 2)), dtype=torch.long)
    return index, torch.full((len(index),), 1.0 / len(index), dtype=DTYPE)


def preference_probabilities(
    reward: torch.Tensor, pairs: torch.Tensor, labels: str, temperature: float = 1.0
) -> torch.Tensor:
    """P(a preferred to b): Bradley-Terry sigmoid((r_a - r_b) / temperature), or deterministic
    (1 if r_a > r_b, 0 if smaller, 1/2 on a tie)."""
    gap = reward[pairs[:, 0]] - reward[pairs[:, 1]]
    if labels == "bradley_terry":
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"bandit.temperature must be a number > 0, got {temperature!r}.")
        return torch.sigmoid(gap / temperature)
    if labels == "deterministic":
        return (gap > 0).to(DTYPE) + (gap == 0).to(DTYPE) / 2
    raise ConfigError(f"bandit.labels must be one of {', '.join(LABELS)}, got {labels!r}.")


def build_problem(settings: Any, seed: int) -> BanditProblem:
    """The problem described by the ``bandit:`` block of an experiment config.

    A missing reward vector is drawn from N(0, 1) with ``seed``; a missing reference is uniform.
    """
    num_actions = settings.get("num_actions")
    if isinstance(num_actions, bool) or not isinstance(num_actions, int) or num_actions < 2:
        raise ConfigError(f"bandit.num_actions must be an integer >= 2, got {num_actions!r}.")
    reward = _vector(settings.get("reward"), num_actions, "reward")
    if reward is None:
        reward = torch.randn(num_actions, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
    reference = _vector(settings.get("reference_logits"), num_actions, "reference_logits")
    if reference is None:
        reference = torch.zeros(num_actions, dtype=DTYPE)
    pairs, weights = offline_pairs(
        settings.get("mu", "full"), num_actions, settings.get("support"), settings.get("pairs")
    )
    preference = preference_probabilities(
        reward, pairs, settings.get("labels", "bradley_terry"), settings.get("temperature", 1.0)
    )
    return BanditProblem(reward, reference, pairs, weights, preference)
