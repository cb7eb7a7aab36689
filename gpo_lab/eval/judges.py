"""Judges of "is response a better than response b for this prompt?", behind one interface.

``compare(prompts, responses_a, responses_b)`` returns, for each prompt, the probability that a
beats b, with a tie worth 1/2. Reward judges (the golden reward of the synthetic task, a reward
model) score each response and compare the scores; :class:`PairwiseJudge` asks a judge that
sees both responses at once in both orders, which cancels a preference for a position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from gpo_lab.errors import ConfigError
from gpo_lab.eval.sampling import mean_and_se
from gpo_lab.models.hf import model_location, torch_dtype


class Judge(ABC):
    @abstractmethod
    def compare(self, prompts: Sequence, responses_a: Sequence[str], responses_b: Sequence[str]) -> torch.Tensor:
        """P(a beats b) for each prompt, in [0, 1], float64; a tie counts 1/2."""

    def to(self, device) -> Judge:
        return self


def win_rate(scores: torch.Tensor) -> tuple[float, float]:
    """The win rate of per-prompt scores (1 win, 1/2 tie, 0 loss, or a probability) and its standard error."""
    return mean_and_se(scores)


class RewardJudge(Judge):
    """Scores every response on its own; a beats b when its reward is higher.

    With ``temperature`` > 0 the comparison is soft, sigmoid((r_a - r_b) / temperature)
    (the Bradley-Terry probability); by default it is hard: 1, 0, or 1/2 when the rewards are
    within ``tie_tolerance`` of each other.
    """

    def __init__(self, tie_tolerance: float = 1e-6, temperature: float = 0.0):
        if tie_tolerance < 0 or temperature < 0:
            raise ConfigError("judge.tie_tolerance and judge.temperature must be >= 0.")
        self.tie_tolerance, self.temperature = tie_tolerance, temperature

    @abstractmethod
    def rewards(self, prompts: Sequence, responses: Sequence[str]) -> torch.Tensor:
        """One scalar reward per (prompt, response), float64."""

    def compare(self, prompts, responses_a, responses_b) -> torch.Tensor:
        return self.compare_rewards(self.rewards(prompts, responses_a), self.rewards(prompts, responses_b))

    def compare_rewards(self, rewards_a: torch.Tensor, rewards_b: torch.Tensor) -> torch.Tensor:
        difference = torch.as_tensor(rewards_a, dtype=torch.float64) - torch.as_tensor(rewards_b, dtype=torch.float64)
        if self.temperature > 0:
            return torch.sigmoid(difference / self.temperature)
        hard = (difference > 0).double()
        return torch.where(difference.abs() <= self.tie_tolerance, torch.full_like(hard, 0.5), hard)


class GoldenRewardJudge(RewardJudge):
    """The synthetic task's golden reward r*(x, y): the judge that knows the true preferences."""

    def __init__(self, task, tie_tolerance: float = 1e-6, temperature: float = 0.0):
        super().__init__(tie_tolerance, temperature)
        self.task = task

    def rewards(self, prompts, responses) -> torch.Tensor:
        return torch.tensor([self.task.reward(p, r) for p, r in zip(prompts, responses)], dtype=torch.float64)


class RewardModelJudge(RewardJudge):
    """A sequence-classification reward model scores each (prompt, response).

    Give ``name`` (a hub name or local path) or a ready ``model`` and ``tokenizer``. A model with
    one output is read as the reward; with two, as the log-odds of label 1. With
    ``chat_template`` the pair is rendered as a user and an assistant turn; otherwise the texts
    are concatenated.
    """

    def __init__(
        self,
        name: str | None = None,
        model=None,
        tokenizer=None,
        batch_size: int = 16,
        max_length: int = 1024,
        chat_template: bool = False,
        dtype: str = "float32",
        tie_tolerance: float = 1e-6,
        temperature: float = 0.0,
        revision: str | None = None,
    ):
        super().__init__(tie_tolerance, temperature)
        if (model is None) != (tokenizer is None) or (model is None and not name):
            raise ConfigError(
                "RewardModelJudge needs judge.name (a reward model's hub name or path), "
                "or both a model and a tokenizer."
            )
        if model is None:
            # Only a judge loaded by name needs the sequence-classification auto class.
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            location = model_location(name, "judge.name")
            tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
            model = AutoModelForSequenceClassification.from_pretrained(
                location, revision=revision, dtype=torch_dtype(dtype)
            )
        if model.config.num_labels not in (1, 2):
            raise ConfigError(
                f"A reward model has 1 output (the reward) or 2 (log-odds); "
                f"{name or type(model).__name__} has {model.config.num_labels}."
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.batch_size, self.max_length, self.chat_template = batch_size, max_length, chat_template

    def to(self, device) -> RewardModelJudge:
        self.model.to(device)
        return self

    def _texts(self, prompts, responses) -> list[str]:
        if not self.chat_template:
            return [p + r for p, r in zip(prompts, responses)]
        return [
            self.tokenizer.apply_chat_template(
                (p if isinstance(p, list) else [{"role": "user", "content": p}])
                + [{"role": "assistant", "content": r}],
                tokenize=False,
            )
            for p, r in zip(prompts, responses)
        ]

    @torch.no_grad()
    def rewards(self, prompts, responses) -> torch.Tensor:
        texts = self._texts(prompts, responses)
        device = next(self.model.parameters()).device
        scores = []
        steps = range(0, len(texts), self.batch_size)
        # A 6.9B judge scores 1,024 samples per evaluation for minutes: a bar unless it is a few batches.
        for start in tqdm(steps, desc="judge scoring", unit="batch", mininterval=10, disable=len(steps) <= 4):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(device)
            logits = self.model(**batch).logits.double()
            scores.append((logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]).cpu())
        return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


class PairwiseJudge(Judge):
    """A judge that sees both responses at once, asked in both orders and averaged:
    P(a beats b) = (P(a, b) + 1 - P(b, a)) / 2, so a constant preference for one position cancels.

    ``preference(prompts, first, second)`` gives P(first beats second); it may be any Judge.
    """

    def __init__(self, preference: Callable | Judge):
        self.preference = preference.compare if isinstance(preference, Judge) else preference

    def compare(self, prompts, responses_a, responses_b) -> torch.Tensor:
        forward = torch.as_tensor(self.preference(prompts, responses_a, responses_b), dtype=torch.float64)
        backward = torch.as_tensor(self.preference(prompts, responses_b, responses_a), dtype=torch.float64)
        return (forward + 1 - backward) / 2
