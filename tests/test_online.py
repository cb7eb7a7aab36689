"""Online pairs (gpo_lab.training.online_pairs): a step's pairs are samples of the policy of that step,
labelled by Bradley-Terry on the golden reward; a resumed run draws the same pairs; pairs.refresh_every
beyond the run's steps draws every pair from the starting (SFT) policy, the offline recipe."""

from __future__ import annotations

import math
import random
from functools import partial

import datasets
import pytest
import pytorch_lightning as pl
import torch

from gpo_lab.data.datamodule import PreferenceDataModule
from gpo_lab.data.online_prompts import PromptRows
from gpo_lab.eval.judges import GoldenRewardJudge
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.models.reference import frozen_copy
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.store.records import read_metrics
from gpo_lab.tasks.synthetic import NoisyBehaviour, TopicTask
from gpo_lab.training.gpo_module import GPOModule
from gpo_lab.training.online_pairs import OnlinePairs
from gpo_lab.training.pair_metrics import ranking_accuracy
from tests.helpers.models import tiny_reward_model
from tests.helpers.runs import TINY_STUDY, run_training

TASK = TopicTask()
TEMPERATURE = 0.5
MAX_NEW_TOKENS = TASK.max_response_words + 1


class RecordingPairs(OnlinePairs):
    """Online pairs that also keep, per step, what was drawn and the exact first-token distribution of the
    live policy and of the reference at each prompt (computed here, independently of the sampler)."""

    def __init__(self, *args, reference=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reference, self.log, self.samplers = reference, {}, {}

    def sample(self, model, batch, step):
        first, second = super().sample(model, batch, step)
        self.samplers[step] = model
        self.log[step] = {"prompts": batch.prompt_ids, "rows": batch.rows, "first": first, "second": second}
        return first, second

    def draw(self, policy, batch, step):
        self.log_probs = {"policy": first_token_probs(policy, batch.prompt_ids)}
        self.log_probs["reference"] = first_token_probs(self.reference, batch.prompt_ids)
        drawn = super().draw(policy, batch, step)
        self.log[step] |= self.log_probs | {"pairs": drawn}
        return drawn


@torch.no_grad()
def first_token_probs(model, prompts: list[list[int]]) -> torch.Tensor:
    """softmax of the next-token logits after each prompt, one prompt at a time (no padding involved)."""
    was = model.training
    model.eval()
    rows = [torch.softmax(model(input_ids=torch.tensor([p])).logits[0, -1].double(), -1) for p in prompts]
    model.train(was)
    return torch.stack(rows)


def offline_data(seed: int = 0, train: int = 256, validation: int = 16) -> datasets.DatasetDict:
    """Prompts of the task with behaviour responses (the online run uses their prompts only)."""
    rng, behaviour = random.Random(seed), NoisyBehaviour()

    def rows(count):
        out = []
        while len(out) < count:
            topics = TASK.sample_prompt_topics(rng)
            a, b = behaviour.respond(TASK, topics, rng), behaviour.respond(TASK, topics, rng)
            if a != b:
                out.append({"prompt": TASK.render_prompt(topics), "chosen": a, "rejected": b})
        return datasets.Dataset.from_list(out)

    return datasets.DatasetDict(train=rows(train), validation=rows(validation))


def online_run(lr: float, steps: int, refresh_every: int = 1, ckpt_path=None, save_to=None, seed: int = 0, pairs=None):
    """A module and trainer of tiny size, trained ``steps`` steps on online pairs (resumed from ``ckpt_path``)."""
    tokenizer = TASK.tokenizer()
    torch.manual_seed(seed)
    policy = tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=32)
    reference = frozen_copy(policy)
    data = PreferenceDataModule(
        offline_data(),
        tokenizer=tokenizer,
        val_split="validation",
        batch_size=64,
        max_length=32,
        max_prompt_length=16,
        seed=seed,
    )
    data.setup("fit")
    data.use_online_prompts()
    judge = GoldenRewardJudge(TASK, temperature=TEMPERATURE)
    online = (pairs or RecordingPairs)(
        datamodule=data,
        judge=judge,
        seed=seed,
        refresh_every=refresh_every,
        max_new_tokens=MAX_NEW_TOKENS,
        reference=reference,
    )
    module = GPOModule(
        policy, reference, GPOLoss("logistic"), beta=0.1, optimizer=partial(torch.optim.Adam, lr=lr), online=online
    )
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return module, online


def chi_square_quantile(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty's chi-square quantile; z = 3.09: the 0.999 quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def first_token_chi_square(log: dict, which: str) -> tuple[float, float]:
    """Pearson's statistic of every drawn response's first token against the ``which`` model's exact
    distribution at its prompt, and its 0.999 critical value. Prompts differ in their distributions, so
    the pooled statistic is at most chi-square(df): the test is conservative (false alarm < 0.1%)."""
    observed, expected = None, None
    for entry in log.values():
        probs = entry[which]
        for responses in (entry["first"], entry["second"]):
            tokens = torch.tensor([r[0] for r in responses])
            counts = torch.bincount(tokens, minlength=probs.shape[1]).double()
            observed = counts if observed is None else observed + counts
            expected = probs.sum(0) if expected is None else expected + probs.sum(0)
    assert observed is not None and expected is not None
    big = expected >= 5
    o = torch.cat([observed[big], observed[~big].sum()[None]])
    e = torch.cat([expected[big], expected[~big].sum()[None]])
    statistic = float(((o - e) ** 2 / e.clamp(min=1e-12)).sum())
    return statistic, chi_square_quantile(int(big.sum()))


def test_with_lr_zero_online_pairs_are_reference_samples_labelled_by_bradley_terry():
    module, online = online_run(lr=0.0, steps=4)
    assert sorted(online.log) == [0, 1, 2, 3]
    statistic, critical = first_token_chi_square(online.log, "reference")
    assert statistic < critical, (statistic, critical)
    # The labels: the first response wins with probability sigmoid((r1 - r2) / T). The expected number of
    # pairs whose chosen response has the higher reward is the sum of those probabilities (z within 4).
    agree, expected, variance = 0, 0.0, 0.0
    for entry in online.log.values():
        pairs = entry["pairs"]
        agree += int((pairs.reward_chosen > pairs.reward_rejected).sum())
        for a, b in zip(pairs.reward_chosen.tolist(), pairs.reward_rejected.tolist()):
            if a != b:
                p = 1 / (1 + math.exp(-abs(a - b) / TEMPERATURE))
                expected, variance = expected + p, variance + p * (1 - p)  # a tie never agrees
    assert abs(agree - expected) < 4 * math.sqrt(variance), (agree, expected, variance)
    assert online.drawn == sum(len(e["pairs"].pairs) for e in online.log.values()) > 200


def test_after_training_online_pairs_are_the_current_policys_samples():
    module, online = online_run(lr=0.05, steps=8)
    assert all(online.samplers[step] is module.policy for step in online.log)  # never a copy or the reference
    late = {step: entry for step, entry in online.log.items() if step >= 4}
    statistic, critical = first_token_chi_square(late, "policy")
    assert statistic < critical, (statistic, critical)
    # The same statistic can fail: against the reference it is far off once the policy has moved.
    against_reference, critical_reference = first_token_chi_square(late, "reference")
    assert against_reference > 3 * critical_reference, (against_reference, critical_reference)


def pairs_of(log: dict, steps) -> list:
    return [(log[s]["rows"], log[s]["pairs"].chosen, log[s]["pairs"].rejected) for s in steps]


def test_a_resumed_online_run_draws_the_same_pairs(tmp_path):
    whole, whole_online = online_run(lr=0.05, steps=7, refresh_every=3)
    checkpoint = tmp_path / "step4.ckpt"
    online_run(lr=0.05, steps=4, refresh_every=3, save_to=checkpoint)
    resumed, resumed_online = online_run(lr=0.05, steps=7, refresh_every=3, ckpt_path=checkpoint)
    assert sorted(resumed_online.log) == [4, 5, 6]
    # Steps 4 and 5 are drawn by the copy of step 3's policy, which only the checkpoint holds.
    assert pairs_of(resumed_online.log, [4, 5, 6]) == pairs_of(whole_online.log, [4, 5, 6])
    assert resumed_online.drawn == whole_online.drawn
    for name, value in whole.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[name]), name


class IdenticalPairs(RecordingPairs):
    """Both responses of every prompt the same: every pair is dropped."""

    def sample(self, model, batch, step):
        first, _ = super().sample(model, batch, step)
        return first, first


def test_steps_whose_every_pair_is_dropped_train_nothing_and_count_no_pair():
    torch.manual_seed(0)
    start = tiny_causal_lm(TASK.tokenizer(), hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=32)
    module, online = online_run(lr=1e-2, steps=3, pairs=IdenticalPairs)
    assert sorted(online.log) == [0, 1, 2] and all(not online.log[s]["pairs"].pairs for s in online.log)
    assert online.drawn == 0 and online.datamodule.stats["online_pairs"] == 0
    for (name, before), after in zip(start.state_dict().items(), module.policy.state_dict().values()):
        assert torch.equal(before, after), name  # a zero-weight placeholder step moves nothing


def test_refresh_every_beyond_the_run_draws_every_pair_from_the_starting_policy():
    module, online = online_run(lr=0.05, steps=5, refresh_every=1000)
    reference = module.reference.state_dict()
    for step, entry in online.log.items():
        sampler = online.samplers[step].state_dict()
        assert all(torch.equal(sampler[k], reference[k]) for k in reference), step
        again = online.sample(module.reference, _batch(entry), step)  # the SFT policy with the same streams
        assert (entry["first"], entry["second"]) == again
    assert any(not torch.equal(v, reference[k]) for k, v in module.policy.state_dict().items())  # it did train


def _batch(entry):
    return PromptRows(prompt_ids=entry["prompts"], rows=entry["rows"])


def test_ranking_accuracy_counts_agreements_with_the_golden_order_by_hand():
    rho = torch.tensor([1.0, -2.0, 0.0, 3.0, -1.0])
    margin = torch.tensor([0.5, 1.0, 2.0, 0.0, -0.1])  # the 4th is a golden tie: left out
    # agree, disagree, half, (tie), agree -> (1 + 0 + 0.5 + 1) / 4
    assert ranking_accuracy(rho, margin).item() == pytest.approx(2.5 / 4)


SHORT = ["trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]


@pytest.mark.slow
def test_synthetic_online_run_records_its_online_pairs_and_metrics(tmp_path):
    overrides = [o for o in TINY_STUDY if o != "+experiment=synthetic"]
    cache = [f"synthetic.cache_dir={tmp_path / 'cache'}", f"reference_cache.dir={tmp_path / 'reference_logps'}"]
    run = tmp_path / "run"
    summary = run_training(
        ["+experiment=synthetic_online", *overrides, *cache, *SHORT],
        run,
    )
    assert summary["status"] == "completed"
    assert summary["data"]["online_pairs"] > 0
    records = read_metrics(run / "metrics.jsonl")
    assert any("val/ranking_accuracy" in r for r in records)
    assert any("train/pair_reward" in r and "train/pair_length" in r for r in records)


@pytest.mark.slow
def test_language_task_online_pairs_labelled_by_a_reward_model(tmp_path):
    judge = tiny_reward_model(tmp_path / "reward_model")
    run = tmp_path / "run"
    summary = run_training(
        ["+experiment=smoke", "+pairs=online", "+judge=reward_model", f"judge.name={judge}", "pairs.max_new_tokens=8"]
        + ["trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1"],
        run,
    )
    assert summary["status"] == "completed"
    assert summary["data"]["online_pairs"] > 0
    records = read_metrics(run / "metrics.jsonl")
    assert all(math.isfinite(r["train/pair_reward"]) for r in records if "train/loss" in r)
