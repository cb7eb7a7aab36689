"""The field's named losses: one entry per ``loss=<name>`` that is not a GPO member, built from parts.

Each entry holds the exact config of its ``conf/loss/<name>.yaml`` (a test keeps the two equal),
its formula, its paper and TRL's name for it, and how its beta maps onto gpo_lab's where the
conventions differ; docs/losses.md tabulates them. TRL's ``sigmoid`` is an alias of the GPO member
``logistic`` (the same loss, the same beta), and ``ipo``/``hinge`` stay the GPO members.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

M = "gpo_lab.losses.MarginLoss"
P = "gpo_lab.losses.PairFunctionLoss"


@dataclass(frozen=True)
class FieldEntry:
    config: dict  # the yaml's content
    formula: str  # z = beta * margin unless said otherwise; c, r: chosen and rejected log-ratios
    paper: str
    trl: str = ""  # TRL's name (DPOTrainer loss_type unless another trainer is named)
    beta: str = "the same beta"  # how the beta of the paper / TRL maps onto this loss's beta
    nonconvex: bool = False  # refused unless loss.allow_nonconvex=true
    extra: dict = field(default_factory=dict)

    def build(self, **overrides) -> torch.nn.Module:
        from hydra.utils import instantiate

        return instantiate({**self.config, **overrides}, _convert_="all")


def _margin(name: str, **options) -> dict:
    return {"_target_": M, "name": name, **options}


def _pair(name: str, fn: str, **options) -> dict:
    return {"_target_": P, "name": name, "fn": fn, **options}


FIELD: dict[str, FieldEntry] = {
    "sigmoid_norm": FieldEntry(
        _margin("sigmoid_norm", fn="logistic", scores="log_ratio_avg"),
        "log(1 + exp(-beta (c/len(y_w) - r/len(y_l))))",
        "length-normalized DPO",
        "sigmoid_norm",
    ),
    "ipo_avg": FieldEntry(
        _margin("ipo_avg", fn="squared", scores="log_ratio_avg", beta_role="ipo"),
        "(c/len(y_w) - r/len(y_l) - 1/(2 beta))^2",
        "IPO, Azar et al. 2024, as TRL computes it (token-averaged)",
        "ipo",
        "TRL's beta (IPO's tau)",
    ),
    "simpo": FieldEntry(
        _margin("simpo", fn="logistic", scores="logp_avg", gamma=0.5),
        "log(1 + exp(-(beta (log pi(y_w)/len(y_w) - log pi(y_l)/len(y_l)) - gamma)))",
        "SimPO, Meng et al. 2024 (no reference)",
        "CPOTrainer loss_type=simpo",
        "the same beta; gamma is TRL's simpo_gamma",
    ),
    "orpo": FieldEntry(
        {
            "_target_": "gpo_lab.losses.WeightedSum",
            "name": "orpo",
            "losses": [
                {"_target_": "gpo_lab.losses.ChosenNLL", "name": "nll", "mode": "per_batch_token"},
                _margin("odds_ratio", fn="logistic", scores="log_odds", beta_role="weight"),
            ],
            "weights": [1.0, 1.0],
        },
        "NLL(y_w) + beta log(1 + exp(-(log odds(y_w) - log odds(y_l))))",
        "ORPO, Hong et al. 2024 (no reference; odds of the mean token probability)",
        "ORPOTrainer",
        "beta is ORPO's lambda (a weight, not a temperature), as TRL's beta",
    ),
    "cdpo": FieldEntry(
        _margin("cdpo", fn="logistic", noise="cdpo", label_smoothing=0.1),
        "(1 - eps) log(1 + exp(-z)) + eps log(1 + exp(z))",
        "conservative DPO, Mitchell 2023",
        "label_smoothing of CPOTrainer's sigmoid",
        "the same beta; eps is label_smoothing",
    ),
    "robust": FieldEntry(
        _margin("robust", fn="logistic", noise="robust", label_smoothing=0.1),
        "((1 - eps) log(1 + exp(-z)) - eps log(1 + exp(z))) / (1 - 2 eps)",
        "robust DPO, Chowdhury et al. 2024",
        "robust",
        "the same beta; eps is label_smoothing",
    ),
    "exo_pair": FieldEntry(
        _margin("exo_pair", fn="exo_pair", fn_kwargs={"epsilon": 1e-3}, allow_nonconvex=False),
        "sigmoid(z) log(sigmoid(z)/(1 - eps)) + sigmoid(-z) log(sigmoid(-z)/eps)",
        "EXO, Ji et al. 2024",
        "exo_pair",
        "the same beta; eps is label_smoothing",
        nonconvex=True,
    ),
    "discopop": FieldEntry(
        _margin("discopop", fn="discopop", fn_kwargs={"tau": 0.05}, allow_nonconvex=False),
        "(1 - sigmoid(z/tau)) log(1 + exp(-z)) + sigmoid(z/tau) exp(-z)",
        "DiscoPOP, Chris Lu et al. 2024",
        "discopop",
        "the same beta; tau is discopop_tau",
        nonconvex=True,
    ),
    "nca_pair": FieldEntry(
        _pair("nca_pair", "nca_pair"),
        "-log sigmoid(beta c) - log sigmoid(-beta c)/2 - log sigmoid(-beta r)/2",
        "NCA, Chen et al. 2024",
        "nca_pair",
    ),
    "bco_pair": FieldEntry(
        _pair("bco_pair", "bco_pair"),
        "-log sigmoid(beta c) - log sigmoid(-beta r)",
        "BCO, Jung et al. 2024 (paired, without its reward shift)",
        "bco_pair",
    ),
    "sppo_hard": FieldEntry(
        _pair("sppo_hard", "sppo_hard"),
        "(c - 1/(2 beta))^2 + (r + 1/(2 beta))^2",
        "SPPO, Wu et al. 2024 (hard labels)",
        "sppo_hard",
    ),
    "apo_zero": FieldEntry(
        _pair("apo_zero", "apo_zero"),
        "1 - sigmoid(beta c) + sigmoid(beta r)",
        "APO-zero, D'Oosterlinck et al. 2024",
        "apo_zero",
    ),
    "apo_down": FieldEntry(
        _pair("apo_down", "apo_down"),
        "sigmoid(beta c) + 1 - sigmoid(beta (c - r))",
        "APO-down, D'Oosterlinck et al. 2024",
        "apo_down",
    ),
    "dpop": FieldEntry(
        _pair("dpop", "dpop", penalty=50.0),
        "-log sigmoid(beta (c - r - lambda max(0, -c)))",
        "DPO-Positive, Pal et al. 2024",
        "",
        "the same beta; lambda is penalty",
    ),
    "aot": FieldEntry(
        {"_target_": "gpo_lab.losses.AOTLoss", "name": "aot", "label_smoothing": 0.0},
        "log(1 + exp(-beta delta_k)), delta = sort(policy margins) - sort(reference margins) over the batch",
        "AOT, Melnyk et al. 2024 (paired)",
        "aot",
    ),
    "aot_unpaired": FieldEntry(
        {"_target_": "gpo_lab.losses.AOTLoss", "name": "aot_unpaired", "mode": "unpaired", "label_smoothing": 0.0},
        "log(1 + exp(-beta delta_k)), delta = sort(c) - sort(r) over the batch",
        "AOT, Melnyk et al. 2024 (unpaired)",
        "aot_unpaired",
    ),
    "sft": FieldEntry(
        {"_target_": "gpo_lab.losses.ChosenNLL", "name": "sft", "mode": "per_batch_token"},
        "-sum log pi(y_w) / sum len(y_w) over the batch",
        "supervised fine-tuning on the chosen responses",
        "sft",
        "beta is not used",
    ),
    "rpo": FieldEntry(
        {
            "_target_": "gpo_lab.losses.WeightedSum",
            "name": "rpo",
            "losses": [
                {"_target_": "gpo_lab.losses.GPOLoss", "fn": "logistic"},
                {"_target_": "gpo_lab.losses.ChosenNLL", "name": "nll", "mode": "per_response"},
            ],
            "weights": [1.0, 1.0],
        },
        "log(1 + exp(-beta rho)) - alpha log pi(y_w)/len(y_w)",
        "RPO, Pang et al. 2024",
        "loss_type=[sigmoid, sft], loss_weights=[1, alpha]",
        "the same beta; alpha is the second weight (TRL's sft averages over the batch's tokens instead)",
    ),
    "odpo": FieldEntry(
        _margin("odpo", fn="logistic", offset=True),
        "log(1 + exp(-(beta rho - offset)))",
        "ODPO, Amini et al. 2024 (offset from the data's `offset` column)",
    ),
    "rdpo": FieldEntry(
        _margin("rdpo", fn="logistic", length_alpha=0.01),
        "log(1 + exp(-(beta rho - alpha (len(y_w) - len(y_l)))))",
        "R-DPO, Park et al. 2024",
        "",
        "the same beta; alpha is length_alpha",
    ),
}


def describe(name: str) -> FieldEntry | None:
    """The field entry named ``name``; None for a GPO member or anything else."""
    return FIELD.get(name)
