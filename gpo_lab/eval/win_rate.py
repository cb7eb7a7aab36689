"""Win rate of the policy against the reference on held-out prompts, as a judge sees it."""

from __future__ import annotations

import pytorch_lightning as pl

from gpo_lab.errors import ConfigError
from gpo_lab.eval.judges import Judge, RewardJudge, win_rate
from gpo_lab.eval.sample_bank import find_bank, log_value
from gpo_lab.eval.sampling import mean_and_se
from gpo_lab.store.per_prompt import write_from_callback


class WinRateCallback(pl.Callback):
    """Logs val/win_rate (ties count 1/2) and val/win_rate_se: one policy sample against one
    reference sample per prompt. A reward judge also gives the mean reward of both sides
    (val/judge_reward, val/judge_reward_reference). Each prompt's score goes to ``per_prompt.jsonl``
    (:mod:`gpo_lab.store.per_prompt`), for the report's bootstrap over prompts. With a test bank, the
    win rate on it is logged as test/win_rate and test/win_rate_se."""

    def __init__(self, judge: Judge | None = None):
        if judge is None:
            raise ConfigError(
                "callbacks.win_rate needs a judge: add +judge=golden (synthetic task) or "
                "+judge=reward_model judge.name=PATH, or switch it off with callbacks.win_rate=null."
            )
        self.judge = judge
        self._device = None
        self.scored: dict[int, dict[str, object]] = {}  # id(bank) -> per-prompt judge scores, this evaluation's banks

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        banks = find_bank(trainer, "win_rate")
        bank = banks.current(trainer, pl_module)
        if bank is None:
            return
        self.scored = {}
        if self._device != pl_module.device:
            self.judge.to(pl_module.device)
            self._device = pl_module.device
        values, scores = self.judged(bank)
        write_from_callback(self, trainer, ["win_rate"], {"win_rate": scores})
        test_bank = banks.current_test(trainer, pl_module)
        test_values = self.judged(test_bank)[0] if test_bank is not None else {}
        test_values = {k: v for k, v in test_values.items() if k.startswith("win_rate")}
        for prefix, logged in (("val", values), ("test", test_values)):
            for name, value in logged.items():
                log_value(pl_module, f"{prefix}/{name}", value, len(bank))

    def judged(self, bank) -> tuple[dict[str, float], object]:
        """The win rate (and a reward judge's mean rewards) of one bank, with each prompt's score."""
        values = {}
        per_prompt: dict[str, object] = {}
        if isinstance(self.judge, RewardJudge):
            policy = self.judge.rewards(bank.prompts, bank.policy_texts)
            reference = self.judge.rewards(bank.prompts, bank.reference_texts)
            scores = self.judge.compare_rewards(policy, reference)
            for name, rewards in (("judge_reward", policy), ("judge_reward_reference", reference)):
                values[name], values[f"{name}_se"] = mean_and_se(rewards)
            per_prompt.update(policy_reward=policy, reference_reward=reference)
        else:
            scores = self.judge.compare(bank.prompts, bank.policy_texts, bank.reference_texts)
        self.scored[id(bank)] = {**per_prompt, "win": scores}  # for the samples file and table
        values["win_rate"], values["win_rate_se"] = win_rate(scores)
        return values, scores
