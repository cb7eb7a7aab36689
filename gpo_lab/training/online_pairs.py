"""Online (and semi-online) preference pairs: each step's pairs drawn from the policy and labelled by the judge.

For every prompt of a training batch two responses are sampled at temperature 1 from the policy as it
was at the last refresh (``refresh_every`` = 1: the current policy; N: the policy of the last step that
is a multiple of N; N at least the run's steps: the starting policy, i.e. offline pairs from the SFT
policy), and the first is preferred with the judge's probability P(a beats b) (a reward judge with a
temperature: Bradley-Terry on its rewards, as the synthetic task labels its offline pairs). Pairs whose
two responses are the same, or one is empty, are dropped, as offline. Every draw comes from a stream
named by (seed, step, training row), so a resumed run draws exactly the pairs it would have drawn.
The reference is not touched: the loss scores the fresh pairs under it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from gpo_lab.data.datamodule import PreferenceDataModule
from gpo_lab.data.online_prompts import PromptRows
from gpo_lab.errors import ConfigError
from gpo_lab.eval.draw import prompt_uniforms
from gpo_lab.eval.judges import Judge, RewardJudge
from gpo_lab.eval.sampling import decode, sample_responses

# Stream numbers of the online draws: far from the sample bank's and the offline pairs' (gpo_lab.eval.draw),
# four per step (two responses, the labels, one spare).
ONLINE_STREAM = 1_000_000
STREAMS_PER_STEP = 4


@dataclass
class OnlineDraw:
    """One step's fresh pairs: the encoded rows the loss trains on, and what the metrics need."""

    pairs: list[dict]
    prompts: list[str]
    chosen: list[str]
    rejected: list[str]
    reward_chosen: torch.Tensor | None  # the judge's rewards, when it is a reward judge
    reward_rejected: torch.Tensor | None
    drawn: int  # prompts sampled (pairs drawn before the identical and empty ones are dropped)


@dataclass
class OnlinePairs:
    """Draws and labels the pairs of a training step (see the module docstring)."""

    datamodule: PreferenceDataModule  # encodes and batches the pairs as it does offline ones
    judge: Judge
    seed: int
    refresh_every: int = 1
    max_new_tokens: int = 64
    batch_size: int = 128  # sampling batch (rows: two per prompt)
    drawn: int = 0  # training pairs drawn from the policy so far (kept ones, over every rank: GPOModule counts them)
    snapshot: torch.nn.Module | None = field(default=None, repr=False)
    snapshot_step: int | None = None

    def __post_init__(self):
        if self.refresh_every < 1:
            raise ConfigError(f"pairs.refresh_every must be >= 1 (1 = fully online), got {self.refresh_every}.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"pairs.max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    def refresh_step(self, step: int) -> int:
        """The step whose policy draws the pairs of ``step``."""
        return step - step % self.refresh_every

    def sampler(self, policy: torch.nn.Module, step: int) -> torch.nn.Module:
        """The model that draws the pairs of ``step``: the policy itself when fully online, else its copy at
        the last refresh (taken now when ``step`` is a refresh step)."""
        if self.refresh_every == 1:
            return policy
        due = self.refresh_step(step)
        if self.snapshot is None or self.snapshot_step != due:
            if step != due:
                raise RuntimeError(
                    f"No copy of the policy of step {due} to draw the pairs of step {step} with; a checkpoint of an "
                    "online run with pairs.refresh_every > 1 holds it (this one does not)."
                )
            self.snapshot = copy.deepcopy(policy).eval().requires_grad_(False)
            self.snapshot_step = due
        return self.snapshot

    @torch.no_grad()
    def sample(self, model: torch.nn.Module, batch: PromptRows, step: int) -> tuple[list[list[int]], list[list[int]]]:
        """The two responses (token ids, EOS included when drawn) of every prompt of ``step``'s batch."""
        tokenizer = self.datamodule.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        base = ONLINE_STREAM + STREAMS_PER_STEP * step
        was_training = model.training
        model.eval()
        uniforms = [prompt_uniforms(self.seed, base + k, batch.rows, self.max_new_tokens) for k in (0, 1)]
        try:  # both responses in one pass over the prompts: half the sampling steps of two passes
            both = sample_responses(
                model,
                batch.prompt_ids * 2,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad,
                uniforms=torch.cat(uniforms),
                batch_size=self.batch_size,
            )
        finally:
            model.train(was_training)
        return both[: len(batch)], both[len(batch) :]

    @torch.no_grad()
    def draw(self, policy: torch.nn.Module, batch: PromptRows, step: int) -> OnlineDraw:
        """``step``'s pairs: sampled (:meth:`sample`) by the policy of its refresh step, labelled, encoded."""
        tokenizer = self.datamodule.tokenizer
        base = ONLINE_STREAM + STREAMS_PER_STEP * step
        first, second = (decode(tokenizer, ids) for ids in self.sample(self.sampler(policy, step), batch, step))
        prompts = tokenizer.batch_decode(batch.prompt_ids, skip_special_tokens=True)
        keep = [i for i, (a, b) in enumerate(zip(first, second)) if a != b and a.strip() and b.strip()]
        kept_prompts = [prompts[i] for i in keep]
        a, b = [first[i] for i in keep], [second[i] for i in keep]
        rewards_a = rewards_b = None
        if isinstance(self.judge, RewardJudge):
            rewards_a, rewards_b = self.judge.rewards(kept_prompts, a), self.judge.rewards(kept_prompts, b)
            p_first = self.judge.compare_rewards(rewards_a, rewards_b)
        else:
            p_first = self.judge.compare(kept_prompts, a, b)
        labels = prompt_uniforms(self.seed, base + 2, [batch.rows[i] for i in keep], 1)[:, 0]
        first_wins = labels < torch.as_tensor(p_first, dtype=torch.float64)
        chosen = [x if w else y for x, y, w in zip(a, b, first_wins.tolist())]
        rejected = [y if w else x for x, y, w in zip(a, b, first_wins.tolist())]
        reward_chosen = reward_rejected = None
        if rewards_a is not None and rewards_b is not None:
            reward_chosen = torch.where(first_wins, rewards_a, rewards_b)
            reward_rejected = torch.where(first_wins, rewards_b, rewards_a)
        encoded = self.datamodule.encode_responses([batch.prompt_ids[i] for i in keep], chosen, rejected)
        usable = [i for i, pair in enumerate(encoded) if pair is not None]
        if reward_chosen is not None and reward_rejected is not None and len(usable) < len(encoded):
            reward_chosen, reward_rejected = reward_chosen[usable], reward_rejected[usable]
        pairs = [pair for pair in encoded if pair is not None]
        return OnlineDraw(
            pairs=pairs,
            prompts=[kept_prompts[i] for i in usable],
            chosen=[chosen[i] for i in usable],
            rejected=[rejected[i] for i in usable],
            reward_chosen=reward_chosen,
            reward_rejected=reward_rejected,
            drawn=len(batch),
        )

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        snapshot = None if self.snapshot is None else {k: v.clone() for k, v in self.snapshot.state_dict().items()}
        return {"drawn": self.drawn, "snapshot_step": self.snapshot_step, "snapshot": snapshot}

    def load_state_dict(self, state: dict, policy: torch.nn.Module) -> None:
        self.drawn = int(state.get("drawn", 0))
        self.snapshot_step, weights = state.get("snapshot_step"), state.get("snapshot")
        self.snapshot = None
        if weights is not None:
            self.snapshot = copy.deepcopy(policy).eval().requires_grad_(False)
            self.snapshot.load_state_dict(weights)
