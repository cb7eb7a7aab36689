"""Every loss TRL also implements gives TRL's own per-example loss and gradient on the same log-probs.

TRL's DPOTrainer computes its losses inside ``DPOTrainer._compute_loss(self, model, inputs, ...)``;
it is called here as it is, with a minimal stand-in ``self`` and a stand-in model whose per-token
log-probs are a leaf tensor, so both sides' gradients are taken with respect to the same tokens.
Per-example values come from one-pair batches (TRL returns the batch mean); gradients from the
whole batch. AOT's per-example values are per quantile of the whole batch: TRL's k-th one is read
through its WPO weights (``use_weighting``), set to 1 on pair k and 0 elsewhere, so that its batch
mean is its k-th per-sequence loss over B. SimPO and cDPO come from TRL's CPOTrainer.cpo_loss,
ORPO's odds-ratio term from ORPOTrainer.odds_ratio_loss.
"""

from __future__ import annotations

import collections
import math
import os
import types

import pytest
import torch

trl = pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl import DPOTrainer  # noqa: E402

from gpo_lab.losses.catalog import FIELD_LOSSES  # noqa: E402
from gpo_lab.losses.gpo import GPOLoss  # noqa: E402
from gpo_lab.losses.named_losses import build_loss, needs_nonconvex_switch  # noqa: E402
from gpo_lab.losses.weighted_sum import WeightedSum  # noqa: E402
from gpo_lab.scoring.batches import PairLogps  # noqa: E402

B, T = 4, 7  # pairs, completion positions
# gpo_lab name (with options) -> (TRL loss_type, TRL's options)
DPO_SHARED = {
    "sigmoid": ("sigmoid", {}),
    "logistic": ("sigmoid", {}),
    "hinge": ("hinge", {}),
    "ipo_avg": ("ipo", {}),
    "exo_pair": ("exo_pair", {"label_smoothing": 1e-3}),
    "nca_pair": ("nca_pair", {}),
    "robust": ("robust", {"label_smoothing": 0.1}),
    "bco_pair": ("bco_pair", {}),
    "sppo_hard": ("sppo_hard", {}),
    "apo_zero": ("apo_zero", {}),
    "apo_down": ("apo_down", {}),
    "discopop": ("discopop", {"discopop_tau": 0.05}),
    "sigmoid_norm": ("sigmoid_norm", {}),
    "aot": ("aot", {}),
    "aot_unpaired": ("aot_unpaired", {}),
    "sft": ("sft", {}),
}

SORTED = ("aot", "aot_unpaired")  # one loss per quantile of the batch, not per pair

# TRL makes exo_pair's epsilon a float32 tensor, so its log(1 - eps) and log(eps) carry float32 rounding.
RTOL = {"exo_pair": 1e-7}


def gpo_lab_loss(name: str):
    if name in FIELD_LOSSES:
        return build_loss(name, **({"allow_nonconvex": True} if needs_nonconvex_switch(name) else {}))
    return GPOLoss(name)


def token_logps(seed: int, pairs: int = B):
    """(2B, T) per-token log-probs (zero off the completion) and the completion mask, unequal lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (2 * pairs,), generator=generator)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    values = -torch.rand(2 * pairs, T, generator=generator, dtype=torch.float64) * 1.5 * mask
    reference = -torch.rand(2 * pairs, T, generator=generator, dtype=torch.float64) * 1.5 * mask
    return values, mask, reference.sum(1)


class StandInModel:
    """What _compute_loss reads from the model's output: per-token log-probs and a few statistics."""

    training = True

    def __init__(self, per_token, log_sum_sq_probs=None):
        self.per_token, self.log_sum_sq_probs = per_token, log_sum_sq_probs

    def __call__(self, **kwargs):
        zeros = torch.zeros_like(self.per_token)
        return types.SimpleNamespace(
            log_probs=self.per_token,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
            aux_loss=None,
            log_sum_sq_probs=self.log_sum_sq_probs,
        )


def indicator_weights(per_token, pick: int) -> torch.Tensor:
    """log_sum_sq_probs that make TRL's WPO weight of pair ``pick`` exp(0) = 1 and every other exp(-1e4) = 0."""
    half = per_token.shape[0] // 2
    shift = torch.full_like(per_token, 1e4)
    shift[[pick, half + pick]] = 0.0
    return (per_token + shift).detach()


class StandInAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    @staticmethod
    def gather(x):
        return x


def trl_dpo_loss(loss_type, per_token, mask, reference, weights=None, pick=None, **options) -> torch.Tensor:
    """TRL's DPOTrainer._compute_loss on these tensors (its batch mean); with ``pick=k``, its k-th
    per-sequence loss (TRL's WPO weights are set to the indicator of pair k)."""
    model = StandInModel(per_token, None if pick is None else indicator_weights(per_token, pick))
    completion_mask = torch.cat([torch.zeros(mask.shape[0], 1, dtype=mask.dtype), mask], dim=1)  # a prompt token
    half = mask.shape[0] // 2
    types_ = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    self = types.SimpleNamespace(
        model=model,
        accelerator=StandInAccelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=types_,
        loss_weights=weights or [1.0] * len(types_),
        beta=options.pop("beta"),
        label_smoothing=options.pop("label_smoothing", 0.0),
        args=types.SimpleNamespace(discopop_tau=options.pop("discopop_tau", 0.05)),
        use_weighting=pick is not None,
        _metrics={"train": collections.defaultdict(list), "eval": collections.defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(mask.shape[0], T + 1, dtype=torch.long),
        "attention_mask": torch.ones(mask.shape[0], T + 1, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "ref_chosen_logps": reference[:half],
        "ref_rejected_logps": reference[half:],
    }
    mean = DPOTrainer._compute_loss(self, model, inputs, return_outputs=False)
    return mean if pick is None else mean * half


def ours(loss, per_token, mask, reference, beta) -> torch.Tensor:
    lengths = mask.sum(1)
    logps = PairLogps.from_scores(per_token.sum(1), reference, lengths)
    return loss.pair_loss(logps, beta)


def one_pair(x: torch.Tensor, i: int, pairs: int) -> torch.Tensor:
    return x[[i, pairs + i]]


@pytest.mark.parametrize("beta", [0.1, 1.3])
@pytest.mark.parametrize("name", sorted(DPO_SHARED))
def test_per_example_loss_and_gradient_equal_trls(name, beta):
    loss_type, options = DPO_SHARED[name]
    loss = gpo_lab_loss(name)
    per_token, mask, reference = token_logps(seed=len(name))
    if name in SORTED:
        assert_per_quantile_equal_trls(name, beta)
    elif name != "sft":  # sft is one value for the whole batch: its mean and gradient below
        mine = ours(loss, per_token, mask, reference, beta)
        theirs = [
            trl_dpo_loss(
                loss_type,
                one_pair(per_token, i, B),
                one_pair(mask, i, B),
                one_pair(reference, i, B),
                beta=beta,
                **options,
            )
            for i in range(B)
        ]
        torch.testing.assert_close(mine, torch.stack(theirs), rtol=RTOL.get(name, 1e-10), atol=1e-12)
    leaf_mine = per_token.clone().requires_grad_(True)
    leaf_theirs = per_token.clone().requires_grad_(True)
    mean_mine = ours(loss, leaf_mine * mask, mask, reference, beta).mean()
    mean_theirs = trl_dpo_loss(loss_type, leaf_theirs * mask, mask, reference, beta=beta, **dict(options))
    torch.testing.assert_close(mean_mine, mean_theirs, rtol=RTOL.get(name, 1e-10), atol=1e-12)
    (grad_mine,) = torch.autograd.grad(mean_mine, leaf_mine)
    (grad_theirs,) = torch.autograd.grad(mean_theirs, leaf_theirs)
    torch.testing.assert_close(grad_mine, grad_theirs, rtol=RTOL.get(name, 1e-9), atol=1e-12)


def assert_per_quantile_equal_trls(name, beta, **options):
    """Each quantile's loss and its gradient, on the whole batch, equal TRL's k-th per-sequence loss and its."""
    loss_type, _ = DPO_SHARED[name]
    per_token, mask, reference = token_logps(seed=len(name))
    leaf_mine = per_token.clone().requires_grad_(True)
    mine = ours(build_loss(name, **options), leaf_mine * mask, mask, reference, beta)
    for k in range(B):
        leaf_theirs = per_token.clone().requires_grad_(True)
        theirs = trl_dpo_loss(loss_type, leaf_theirs * mask, mask, reference, pick=k, beta=beta, **options)
        torch.testing.assert_close(mine[k], theirs, rtol=1e-10, atol=1e-12)
        (grad_mine,) = torch.autograd.grad(mine[k], leaf_mine, retain_graph=True)
        (grad_theirs,) = torch.autograd.grad(theirs, leaf_theirs)
        torch.testing.assert_close(grad_mine, grad_theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", SORTED)
def test_aot_label_smoothing_equals_trls(name):
    assert_per_quantile_equal_trls(name, 0.7, label_smoothing=0.2)


def test_loss_weights_are_a_weighted_sum():
    """TRL's loss_type=[sigmoid, sft], loss_weights=[1, 0.5] is WeightedSum(logistic, sft) with those weights."""
    per_token, mask, reference = token_logps(seed=7)
    mixed = WeightedSum("mix", [GPOLoss("logistic"), build_loss("sft")], [1.0, 0.5])
    leaf_mine, leaf_theirs = (per_token.clone().requires_grad_(True) for _ in range(2))
    mine = ours(mixed, leaf_mine * mask, mask, reference, 0.3).mean()
    theirs = trl_dpo_loss(["sigmoid", "sft"], leaf_theirs * mask, mask, reference, weights=[1.0, 0.5], beta=0.3)
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(mine, leaf_mine)[0], torch.autograd.grad(theirs, leaf_theirs)[0], rtol=1e-9, atol=1e-12
    )


def test_rpo_differs_from_trls_sft_weight_only_in_how_it_averages_tokens():
    """RPO's NLL is per response (-log pi(y_w)/|y_w|), TRL's sft over the batch's tokens: equal lengths agree."""
    per_token, _, reference = token_logps(seed=3)
    mask = torch.ones_like(per_token)
    mine = ours(build_loss("rpo", weights=[1.0, 0.25]), per_token, mask, reference, 0.2).mean()
    theirs = trl_dpo_loss(["sigmoid", "sft"], per_token, mask, reference, weights=[1.0, 0.25], beta=0.2)
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_gpo_squared_is_trls_ipo_on_summed_margins_after_mapping_beta():
    """ipo (GPO squared) at beta = 2 tau, divided by beta^2, is TRL's ipo formula on summed log-ratios."""
    rho = torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64)
    tau = 0.4
    trl_formula_summed = (rho - 1 / (2 * tau)) ** 2  # TRL's ipo line with the summed margin
    torch.testing.assert_close(GPOLoss("ipo").per_example(rho, 2 * tau) / (2 * tau) ** 2, trl_formula_summed)


# ----------------------------------------------------------------------------- CPO and ORPO trainers
def cpo_self(loss_type, beta, label_smoothing=0.0, simpo_gamma=0.5):
    return types.SimpleNamespace(
        alpha=0.0,
        accelerator=StandInAccelerator(),
        loss_type=loss_type,
        beta=beta,
        label_smoothing=label_smoothing,
        simpo_gamma=simpo_gamma,
    )


def averaged_logps(seed):
    per_token, mask, reference = token_logps(seed)
    return per_token.sum(1), mask.sum(1), reference


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_simpo_equals_trls_cpo_simpo(beta):
    from trl.experimental.cpo import CPOTrainer

    policy, lengths, reference = averaged_logps(11)
    leaf_mine, leaf_theirs = (policy.clone().requires_grad_(True) for _ in range(2))
    mine = build_loss("simpo", gamma=0.7).pair_loss(PairLogps.from_scores(leaf_mine, reference, lengths), beta)
    average = leaf_theirs / lengths  # CPOTrainer's simpo scores average token log-probs
    theirs, _, _ = CPOTrainer.cpo_loss(cpo_self("simpo", beta, simpo_gamma=0.7), average[:B], average[B:])
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(mine.sum(), leaf_mine)[0], torch.autograd.grad(theirs.sum(), leaf_theirs)[0]
    )


def test_cdpo_equals_trls_label_smoothed_sigmoid_on_log_ratios():
    """CPOTrainer's sigmoid with label_smoothing is cDPO's formula; given the log-ratios it is cDPO."""
    from trl.experimental.cpo import CPOTrainer

    policy, lengths, reference = averaged_logps(13)
    logps = PairLogps.from_scores(policy, reference, lengths)
    mine = build_loss("cdpo", label_smoothing=0.2).pair_loss(logps, 0.6)
    ratios = policy - reference
    theirs, _, _ = CPOTrainer.cpo_loss(cpo_self("sigmoid", 0.6, label_smoothing=0.2), ratios[:B], ratios[B:])
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_orpo_odds_ratio_term_equals_trls():
    """ORPO = NLL - mean(beta * log sigmoid(log odds)); TRL's ORPOTrainer returns the second term's summands."""
    from trl.experimental.orpo import ORPOTrainer

    policy, lengths, reference = averaged_logps(17)
    orpo = build_loss("orpo")
    nll, odds = orpo.parts
    logps = PairLogps.from_scores(policy, reference, lengths)
    average = (policy / lengths).float()
    stand_in = types.SimpleNamespace(beta=0.25, accelerator=StandInAccelerator())
    theirs, *_ = ORPOTrainer.odds_ratio_loss(stand_in, average[:B], average[B:])
    torch.testing.assert_close(odds.pair_loss(logps, 0.25).float(), -theirs, rtol=1e-5, atol=1e-6)
    expected_nll = -policy[:B].sum() / lengths[:B].sum()  # the cross-entropy over the batch's chosen tokens
    torch.testing.assert_close(nll.pair_loss(logps, 0.25), expected_nll.expand(B))
    assert math.isclose(orpo.weights[0], 1.0)
