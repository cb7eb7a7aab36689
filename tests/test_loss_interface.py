"""What the rest of gpo_lab gives the losses: token counts from every layout, a module that skips the
reference for reference-free losses, and a bandit that refuses losses not defined on rho alone."""

import functools
import math

import pytest
import torch
from omegaconf import OmegaConf

from gpo_lab.errors import ConfigError
from gpo_lab.losses.base import NotOnRho, PreferenceLoss
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.losses.named_losses import build_loss
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer
from gpo_lab.scoring.batches import PairLogps, PlainPairs
from gpo_lab.scoring.packing import PackedPairs
from gpo_lab.scoring.seq2seq import Seq2SeqPairs
from gpo_lab.tasks.common import build_task
from gpo_lab.training.gpo_module import GPOModule
from tests.helpers.runs import compose_config

# Two pairs: responses of 3 and 1 tokens (chosen), 2 and 4 tokens (rejected).
PAIRS = [([5, 6], [7, 8, 9], [10, 11]), ([5], [12], [13, 14, 15, 16])]


@pytest.mark.parametrize(
    "batch",
    [
        PlainPairs.from_pairs(PAIRS, pad_id=0),
        PlainPairs.from_pairs(PAIRS, pad_id=0, side="left"),
        PackedPairs.from_pairs(PAIRS, pad_id=0),
        Seq2SeqPairs.from_pairs(PAIRS, pad_id=0, eos_id=1),
    ],
    ids=["plain", "left-padded", "packed", "seq2seq"],
)
def test_every_layout_counts_the_response_tokens(batch):
    assert batch.response_lengths().tolist() == [3, 1, 2, 4]


class Forbidden(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the reference was scored")


def test_reference_free_losses_skip_the_reference_in_training():
    torch.manual_seed(0)
    policy = tiny_causal_lm(byte_tokenizer(), hidden_size=32, num_layers=1, num_heads=2)
    batch = PlainPairs.from_pairs(PAIRS, pad_id=0)
    module = GPOModule(policy, Forbidden(), build_loss("simpo"), beta=2.0, optimizer=torch.optim.SGD)
    assert module.skips_reference
    logps = module.batch_logprobs(batch, reference=False)
    assert torch.isnan(logps.reference_chosen).all()
    assert logps.chosen_length.tolist() == [3, 1] and logps.rejected_length.tolist() == [2, 4]
    assert torch.isfinite(module.per_example_loss(logps)).all()
    assert not GPOModule(policy, Forbidden(), GPOLoss("logistic"), 1.0, torch.optim.SGD).skips_reference


def bandit_config(loss: str, *extra: str):
    cfg = compose_config(["+experiment=bandit", f"loss={loss}", *extra])
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


@pytest.mark.parametrize("loss", ["simpo", "nca_pair", "aot", "aot_unpaired", "sigmoid_norm", "rpo"])
def test_the_bandit_refuses_losses_not_defined_on_rho(loss):
    with pytest.raises(ConfigError, match="bandit is defined on pairs through rho alone"):
        build_task(bandit_config(loss))


def test_the_bandit_takes_cdpo_as_its_g_of_beta_rho():
    module, _ = build_task(bandit_config("cdpo", "beta=0.5"))
    rho = torch.tensor([1.0, -2.0], dtype=torch.float64)
    eps = 0.1
    expected = [
        (1 - eps) * torch.nn.functional.softplus(-0.5 * r) + eps * torch.nn.functional.softplus(0.5 * r) for r in rho
    ]
    torch.testing.assert_close(module.loss.per_example(rho, 0.5), torch.stack(expected))


@pytest.mark.parametrize("packing", [False, True])
def test_an_offset_column_reaches_odpo(packing):
    """data.columns.offset maps a column onto each pair's offset; ODPO subtracts it from beta * rho."""
    import datasets

    from gpo_lab.data.datamodule import PreferenceDataModule

    rows = [{"prompt": f"p{i}", "chosen": "good answer", "rejected": "bad", "gap": 0.5 * i} for i in range(6)]
    module = PreferenceDataModule(
        datasets.Dataset.from_list(rows),
        tokenizer=byte_tokenizer(),
        columns={"offset": "gap"},
        val_size=2,
        batch_size=4,
        packing=packing,
    )
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert sorted(batch.offset.tolist()) == sorted(
        o for o in batch.offset.tolist() if o in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
    )
    assert batch.offset.shape == (batch.num_pairs,)
    zeros = torch.zeros(batch.num_pairs)
    logps = PairLogps(zeros, zeros, zeros, zeros, offset=batch.offset)  # rho = 0: loss = log(1 + exp(offset))
    expected = torch.log1p(torch.exp(batch.offset))
    torch.testing.assert_close(build_loss("odpo").pair_loss(logps, 0.3), expected)


def test_the_base_class_states_the_interface():
    """forward is the batch mean of pair_loss for every loss; per_example exists only for f(beta * rho)."""
    t = functools.partial(torch.tensor, dtype=torch.float64)
    # chosen log-ratios (1, -1), rejected (-1, 1): rho = (2, -2)
    logps = PairLogps(t([-4.0, -10.0]), t([-6.0, -7.0]), t([-5.0, -9.0]), t([-5.0, -8.0]), t([2.0, 4.0]), t([4.0, 2.0]))
    for loss in (GPOLoss("logistic"), build_loss("simpo"), build_loss("nca_pair"), build_loss("rpo")):
        assert isinstance(loss, PreferenceLoss)
        torch.testing.assert_close(loss(logps, 0.5), loss.pair_loss(logps, 0.5).mean())
    # logistic at beta = 1/2 on rho = (2, -2): log(1 + e^-1) and log(1 + e^1), by hand
    torch.testing.assert_close(
        GPOLoss("logistic").pair_loss(logps, 0.5), t([math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))])
    )
    with pytest.raises(NotOnRho, match="nca_pair"):
        build_loss("nca_pair").per_example(torch.zeros(2), 1.0)
    assert not build_loss("sft").uses_reference and build_loss("nca_pair").uses_reference
