"""What the tasks share: one optimizer with its warm-up schedule, one way of building a task, and a
reference cache that each task uses or says it cannot use."""

import logging
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.scoring.packing import PackedPairs
from gpo_lab.scoring.seq2seq import Seq2SeqPairs
from gpo_lab.tasks.bandit import BanditModule, build_problem
from gpo_lab.tasks.common import build_task
from gpo_lab.tasks.language import ENCODER_DECODER_CACHE, is_encoder_decoder
from gpo_lab.training.gpo_module import GPOModule
from gpo_lab.training.optimizer import optimization_options, warmed_up_optimizer
from tests.helpers.runs import compose_config


def learning_rates(configured: dict, steps: int) -> list[float]:
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


@pytest.mark.parametrize("warmup", [0, 1, 4])
def test_linear_warmup_then_constant(warmup):
    weight = torch.nn.Parameter(torch.zeros(2))
    configured = warmed_up_optimizer(partial(torch.optim.SGD, lr=0.5), [weight], warmup)
    assert configured["lr_scheduler"]["interval"] == "step"
    expected = [0.5 * min(1.0, (k + 1) / warmup) if warmup else 0.5 for k in range(7)]
    assert learning_rates(configured, 7) == pytest.approx(expected, rel=1e-12)


def test_every_module_trains_with_the_shared_schedule():
    cfg = compose_config(["+experiment=bandit", "optim.warmup_steps=3", "optim.lr=0.2"])
    options = optimization_options(cfg)
    assert options["warmup_steps"] == 3 and options["optimizer"].keywords["lr"] == 0.2
    bandit = BanditModule(build_problem(cfg.bandit, 0), GPOLoss("hinge"), 0.5, **options)
    policy = torch.nn.Linear(2, 2)
    language = GPOModule(policy, torch.nn.Linear(2, 2), GPOLoss("hinge"), 0.5, **options)
    expected = [0.2 / 3, 0.4 / 3, 0.2, 0.2, 0.2]
    for module in (bandit, language):
        assert learning_rates(module.configure_optimizers(), 5) == pytest.approx(expected, rel=1e-12)
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    language = GPOModule(torch.nn.Sequential(policy, frozen), frozen, GPOLoss("hinge"), 0.5, **options)
    trained = language.configure_optimizers()["optimizer"].param_groups[0]["params"]
    assert {id(p) for p in trained} == {id(p) for p in policy.parameters()}  # only what requires grad


def test_build_task_builds_the_configured_loss_and_passes_beta():
    cfg = compose_config(["+experiment=bandit", "loss=ipo", "beta=0.25"])
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    module, datamodule = build_task(plain)
    assert isinstance(module, BanditModule) and module.loss.name == "squared"
    assert module.beta == 0.25 and isinstance(module.beta, float)
    assert datamodule.problem is module.problem


# ----------------------------------------------------------------------------- the reference cache, per task
def plain_config(overrides):
    cfg = compose_config(overrides)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


@pytest.mark.parametrize("enabled", [True, False])
def test_the_bandit_says_the_reference_cache_does_not_apply(enabled, caplog):
    with caplog.at_level(logging.WARNING, logger="gpo_lab"):
        _, datamodule = build_task(plain_config(["+experiment=bandit", f"reference_cache.enabled={enabled}"]))
    warnings = [r.getMessage() for r in caplog.records if "reference_cache" in r.getMessage()]
    if enabled:
        why = "the bandit's reference is an exact table, nothing to cache"
        assert datamodule.stats["reference_logps"] == f"not used: {why}"
        assert warnings == [f"reference_cache.enabled=true is not used: {why}."]
    else:
        assert "reference_logps" not in datamodule.stats and not warnings


def test_an_encoder_decoder_is_recognised_from_the_model(caplog):
    with caplog.at_level(logging.WARNING, logger="gpo_lab"):
        module, datamodule = build_task(plain_config(["model=tiny_t5", "data.batch_size=4"]))
    assert module.policy.config.is_encoder_decoder and is_encoder_decoder(module.policy)
    assert datamodule.seq2seq and not datamodule.packing  # the toy data asks for packing: causal rows only
    batch = next(iter(datamodule.train_dataloader()))
    assert isinstance(batch, Seq2SeqPairs) and batch.reference_logps is None
    assert datamodule.stats["reference_logps"].startswith("not used: the reference cache scores causal rows")
    assert [r.getMessage() for r in caplog.records if "reference_cache" in r.getMessage()] == [
        "reference_cache.enabled=true is not used: " + ENCODER_DECODER_CACHE + "."
    ]


def test_a_causal_model_keeps_packing_and_the_reference_cache():
    module, datamodule = build_task(plain_config(["data.batch_size=4"]))
    assert not is_encoder_decoder(module.policy)
    assert not datamodule.seq2seq and datamodule.packing
    batch = next(iter(datamodule.train_dataloader()))
    assert isinstance(batch, PackedPairs) and batch.reference_logps is not None
    assert datamodule.stats["reference_logps_train"] in ("computed", "cached")
    assert "reference_logps" not in datamodule.stats
