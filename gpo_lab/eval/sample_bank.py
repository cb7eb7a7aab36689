"""Draws the banks of policy and reference samples of an evaluation, for the KL and win-rate callbacks.

A data module with ``test_prompts`` gets a second bank on them: the validation bank's win rate chooses a
checkpoint and the test bank reports it, so a reported value is not the maximum of its own noise.
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from gpo_lab.data.columns import column_values
from gpo_lab.errors import ConfigError
from gpo_lab.eval.sampling import SampleBank, encode_prompts, generate_bank, mean_and_se
from gpo_lab.parallel.ranks import full_parameters, sampling_ranks

log = logging.getLogger(__name__)

TEST_SEED_OFFSET = 2**31  # the test bank's streams differ from the validation bank's at every prompt index


def held_out_prompts(datamodule, limit: int, tokenizer) -> tuple[list, list[list[int]]]:
    """The first ``limit`` distinct prompts of the validation pairs (texts, token ids).

    A data module may name its own evaluation prompts with an ``eval_prompts`` attribute.
    """
    prompts = getattr(datamodule, "eval_prompts", None)
    if prompts is not None:
        prompts = list(prompts)[:limit]
        return prompts, encode_prompts(tokenizer, prompts)
    val_set = getattr(datamodule, "val_set", None)
    if val_set is None:
        raise ConfigError(
            "The sample bank takes its prompts from the data module's validation pairs, and this data "
            "module has none (val_set); give it validation data or an eval_prompts attribute."
        )
    seen, ids = set(), []
    for prompt in column_values(val_set, "prompt_ids"):
        key = tuple(prompt)
        if key not in seen:
            seen.add(key)
            ids.append(list(prompt))
            if len(ids) == limit:
                break
    return tokenizer.batch_decode(ids, skip_special_tokens=True), ids


class SampleBankCallback(pl.Callback):
    """At an evaluation, samples one response from the policy and one from the reference for each
    of a fixed set of held-out prompts, and scores the policy samples under both models. Under data
    parallelism each rank samples its share of the prompts, and every rank then holds the whole bank.

    The bank is drawn once per evaluation, at its first use (by this callback or by the KL and
    win-rate callbacks, whatever their order), each prompt from its own streams, the same at every
    evaluation, so checkpoints are compared on common random numbers. The reference is frozen, so
    its samples are drawn at the first evaluation and reused. ``every_n_steps=None`` draws a bank at every
    validation; N draws one when the step is a multiple of N and at the end of training.
    ``progress`` shows sampling bars when the trainer shows a progress bar too.
    """

    def __init__(
        self,
        num_prompts: int = 256,
        max_new_tokens: int = 64,
        batch_size: int = 64,
        every_n_steps: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ):
        if num_prompts < 2 or max_new_tokens < 1 or batch_size < 1:
            raise ConfigError(
                "callbacks.sample_bank needs num_prompts >= 2 (for a standard error), "
                "max_new_tokens >= 1 and batch_size >= 1."
            )
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(f"callbacks.sample_bank.every_n_steps must be >= 1 or null, got {every_n_steps}.")
        self.num_prompts, self.max_new_tokens, self.batch_size = num_prompts, max_new_tokens, batch_size
        self.every_n_steps, self.seed, self.progress = every_n_steps, seed, progress
        self.bank: SampleBank | None = None
        self.test_bank: SampleBank | None = None
        self.generations = 0  # banks drawn so far (one per evaluation at most)
        self._due = False
        self._prompts: dict[str, tuple[list, list[list[int]]] | None] = {}
        self._reference_ids: dict[str, list[list[int]] | None] = {}

    def _is_due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if self.every_n_steps is None or trainer.state.fn != TrainerFn.FITTING:
            return True
        step = trainer.global_step
        return step % self.every_n_steps == 0 or (trainer.max_steps > 0 and step >= trainer.max_steps)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bank = self.test_bank = None
        self._due = self._is_due(trainer)

    def current(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> SampleBank | None:
        """This evaluation's bank (drawn now if not yet), or None when this evaluation has none."""
        if not self._due:
            return None
        if self.bank is None:
            self.bank = self._draw(trainer, pl_module, "val")
            self.generations += 1
        return self.bank

    def current_test(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> SampleBank | None:
        """This evaluation's bank on the data module's ``test_prompts``; None when it has none or is not due."""
        if not self._due or getattr(getattr(trainer, "datamodule", None), "test_prompts", None) is None:
            return None
        if self.test_bank is None:
            self.test_bank = self._draw(trainer, pl_module, "test")
        return self.test_bank

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> SampleBank:
        policy, reference = getattr(pl_module, "policy", None), getattr(pl_module, "reference", None)
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        if policy is None or reference is None or tokenizer is None:
            raise ConfigError(
                "callbacks.sample_bank needs a module with .policy and .reference and a data module "
                "with .tokenizer (as GPOModule and PreferenceDataModule have)."
            )
        if self._prompts.get(split) is None:
            if split == "test":
                prompts = list(trainer.datamodule.test_prompts)[: self.num_prompts]
                self._prompts[split] = prompts, encode_prompts(tokenizer, prompts)
            else:
                self._prompts[split] = held_out_prompts(trainer.datamodule, self.num_prompts, tokenizer)
        started = time.time()
        ranks = sampling_ranks(trainer)  # each rank samples its share of the prompts
        with full_parameters(trainer), torch.inference_mode():  # FSDP: the shards gathered on every rank
            bank = generate_bank(
                policy,
                reference,
                tokenizer,
                *self._prompts[split],
                max_new_tokens=self.max_new_tokens,
                seed=self.seed + (TEST_SEED_OFFSET if split == "test" else 0),
                batch_size=self.batch_size,
                step=trainer.global_step,
                progress=self.progress and getattr(trainer, "progress_bar_callback", None) is not None,
                reference_ids=self._reference_ids.get(split),
                ranks=ranks,
            )
        self._reference_ids[split] = bank.reference_ids
        shared = f" (shared by {ranks[1]} ranks)" if ranks[1] > 1 else ""
        log.info(
            "step %d: sampled %d %s policy responses in %.1f s%s",
            trainer.global_step,
            len(bank),
            split,
            time.time() - started,
            shared,
        )
        return bank

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bank = self.current(trainer, pl_module)
        if bank is None:
            return
        lengths = {
            "val/response_length": bank.policy_lengths,
            "val/response_length_reference": torch.tensor([len(r) for r in bank.reference_ids], dtype=torch.float64),
        }
        for name, values in lengths.items():
            mean, se = mean_and_se(values)
            log_value(pl_module, name, mean, len(bank))
            log_value(pl_module, f"{name}_se", se, len(bank))
        eos = getattr(getattr(getattr(trainer, "datamodule", None), "tokenizer", None), "eos_token_id", None)
        log_value(pl_module, "val/capped_fraction", capped_fraction(bank, self.max_new_tokens, eos), len(bank))

    def state_dict(self) -> dict:
        return {"generations": self.generations}

    def load_state_dict(self, state: dict) -> None:
        self.generations = state.get("generations", 0)


def capped_fraction(bank: SampleBank, max_new_tokens: int, eos_token_id: int | None) -> float:
    """The fraction of the bank's policy samples cut at ``max_new_tokens`` before their EOS: the KL and
    win rate are those of responses cut there, and this says how often the cut bites."""
    capped = [len(ids) >= max_new_tokens and (not ids or ids[-1] != eos_token_id) for ids in bank.policy_ids]
    return sum(capped) / len(capped) if capped else 0.0


def log_value(pl_module: pl.LightningModule, name: str, value: float, count: int) -> None:
    """An evaluation-level value, logged so that it reaches callback_metrics and the loggers."""
    pl_module.log(name, float(value), on_step=False, on_epoch=True, batch_size=count)


def find_bank(trainer: pl.Trainer, user: str) -> SampleBankCallback:
    for callback in trainer.callbacks:
        if isinstance(callback, SampleBankCallback):
            return callback
    raise ConfigError(
        f"callbacks.{user} reads the samples of callbacks.sample_bank, which is switched off; "
        f"enable it (callbacks=regularization) or set callbacks.{user}=null."
    )
