"""Every loss against its paper: value and gradient by hand, at rho = 0 and at one other point (float64).

Each expected number is written from the formula of the paper named beside it, with ``math`` only,
its derivatives worked out by hand; nothing is taken from gpo_lab's code. The gradients are with
respect to the chosen and rejected log-ratios c and r (the policy's log-probs move, the reference's
stay), so for the reference-free losses they are also the gradients in the policy's log-probs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch

from gpo_lab.losses.catalog import FIELD_LOSSES, GPO_MEMBERS
from gpo_lab.losses.named_losses import build_loss, needs_nonconvex_switch
from gpo_lab.scoring.batches import PairLogps

BETA = 0.3


class Point(NamedTuple):
    """One pair: policy and reference log-probs, token counts and ODPO's offset."""

    pw: float
    pl: float
    rw: float
    rl: float
    lw: float
    ll: float
    offset: float

    @property
    def c(self) -> float:
        return self.pw - self.rw

    @property
    def r(self) -> float:
        return self.pl - self.rl


# rho = 0 with c = r = 1/4; and c = -1/2, r = -5/2 (rho = 2, beta rho = 0.6; c < 0 wakes DPO-Positive's penalty)
AT_ZERO = Point(pw=-6.0, pl=-9.0, rw=-6.25, rl=-9.25, lw=4.0, ll=6.0, offset=0.5)
AWAY = Point(pw=-5.0, pl=-10.0, rw=-4.5, rl=-7.5, lw=5.0, ll=8.0, offset=-0.3)


def sig(x):
    return 1 / (1 + math.exp(-x))


def softplus(x):
    return math.log1p(math.exp(x))


def dsig(x):
    return sig(x) * sig(-x)


def of_z(f, df):
    """(value, dL/dc, dL/dr) of f(beta (c - r)): dz/dc = beta, dz/dr = -beta."""
    return lambda p: (f(BETA * (p.c - p.r)), BETA * df(BETA * (p.c - p.r)), -BETA * df(BETA * (p.c - p.r)))


EPS, TAU, EXO_EPS, GAMMA, LAMBDA, ALPHA = 0.1, 0.05, 1e-3, 0.5, 50.0, 0.01  # each yaml's default


def discopop(z):
    m = sig(z / TAU)
    return (1 - m) * softplus(-z) + m * math.exp(-z)


def discopop_slope(z):
    m = sig(z / TAU)
    return m * (1 - m) / TAU * (math.exp(-z) - softplus(-z)) - (1 - m) * sig(-z) - m * math.exp(-z)


def exo(z):
    p = sig(z)
    return p * (math.log(p) - math.log(1 - EXO_EPS)) + (1 - p) * (math.log(1 - p) - math.log(EXO_EPS))


def sigmoid_norm(p):
    m = p.c / p.lw - p.r / p.ll
    return softplus(-BETA * m), -BETA * sig(-BETA * m) / p.lw, BETA * sig(-BETA * m) / p.ll


def ipo_avg(p):
    gap = p.c / p.lw - p.r / p.ll - 1 / (2 * BETA)
    return gap**2, 2 * gap / p.lw, -2 * gap / p.ll


def simpo(p):
    z = BETA * (p.pw / p.lw - p.pl / p.ll) - GAMMA
    return softplus(-z), -BETA * sig(-z) / p.lw, BETA * sig(-z) / p.ll


def orpo(p):
    """NLL per chosen token + lambda (= beta) * -log sigmoid(log odds(y_w) - log odds(y_l)), odds of exp(mean logp)."""
    aw, al = p.pw / p.lw, p.pl / p.ll
    gap = (aw - math.log(1 - math.exp(aw))) - (al - math.log(1 - math.exp(al)))
    pull = BETA * sig(-gap)  # -d/dgap of beta * softplus(-gap)
    value = -aw + BETA * softplus(-gap)
    return value, -1 / p.lw - pull / (1 - math.exp(aw)) / p.lw, pull / (1 - math.exp(al)) / p.ll


def nca_pair(p):
    bc, br = BETA * p.c, BETA * p.r
    value = softplus(-bc) + 0.5 * softplus(bc) + 0.5 * softplus(br)
    return value, BETA * (-sig(-bc) + 0.5 * sig(bc)), BETA * 0.5 * sig(br)


def bco_pair(p):
    bc, br = BETA * p.c, BETA * p.r
    return softplus(-bc) + softplus(br), -BETA * sig(-bc), BETA * sig(br)


def sppo_hard(p):
    eta = 1 / BETA  # (c - eta (1 - 1/2))^2 + (r - eta (0 - 1/2))^2
    return (p.c - eta / 2) ** 2 + (p.r + eta / 2) ** 2, 2 * (p.c - eta / 2), 2 * (p.r + eta / 2)


def apo_zero(p):
    bc, br = BETA * p.c, BETA * p.r
    return 1 - sig(bc) + sig(br), -BETA * dsig(bc), BETA * dsig(br)


def apo_down(p):
    bc, z = BETA * p.c, BETA * (p.c - p.r)
    return sig(bc) + 1 - sig(z), BETA * dsig(bc) - BETA * dsig(z), BETA * dsig(z)


def dpop(p):
    u = BETA * (p.c - p.r - LAMBDA * max(0.0, -p.c))
    du_dc = BETA * (1 + (LAMBDA if p.c < 0 else 0.0))
    return softplus(-u), -sig(-u) * du_dc, sig(-u) * BETA


def sft(p):
    return -p.pw / p.lw, -1 / p.lw, 0.0


def rpo(p):
    z = BETA * (p.c - p.r)
    return softplus(-z) - p.pw / p.lw, -BETA * sig(-z) - 1 / p.lw, BETA * sig(-z)


def shifted_logistic(shift):
    """log(1 + exp(-(beta rho + shift(p)))): ODPO's offset enters with -, R-DPO's length term with +."""

    def hand(p):
        z = BETA * (p.c - p.r) + shift(p)
        return softplus(-z), -BETA * sig(-z), BETA * sig(-z)

    return hand


logistic = of_z(lambda z: softplus(-z), lambda z: -sig(-z))
# loss -> (paper, hand computation of (value, dL/dc, dL/dr) at a point)
PAPERS = {
    "logistic": ("DPO, Rafailov et al. 2023", logistic),
    "hinge": ("SLiC, Zhao et al. 2023", of_z(lambda z: max(0.0, 1 - z), lambda z: -1.0 if z < 1 else 0.0)),
    "squared": ("IPO, Azar et al. 2024 (GPO's form)", of_z(lambda z: (z - 1) ** 2, lambda z: 2 * (z - 1))),
    "exponential": ("GPO, Tang et al. 2024", of_z(lambda z: math.exp(-z), lambda z: -math.exp(-z))),
    "truncated_quadratic": (
        "GPO, Tang et al. 2024",
        of_z(lambda z: max(0.0, 1 - z) ** 2, lambda z: -2 * max(0.0, 1 - z)),
    ),
    "savage": ("GPO, Tang et al. 2024", of_z(lambda z: sig(-z) ** 2, lambda z: -2 * sig(-z) ** 2 * sig(z))),
    "sigmoid_norm": ("length-normalized DPO, Meng et al. 2024's LN-DPO", sigmoid_norm),
    "ipo_avg": ("IPO, Azar et al. 2024, token-averaged", ipo_avg),
    "simpo": ("SimPO, Meng et al. 2024", simpo),
    "orpo": ("ORPO, Hong et al. 2024", orpo),
    "cdpo": (
        "conservative DPO, Mitchell 2023",
        of_z(lambda z: (1 - EPS) * softplus(-z) + EPS * softplus(z), lambda z: -(1 - EPS) * sig(-z) + EPS * sig(z)),
    ),
    "robust": (
        "robust DPO, Chowdhury et al. 2024",
        of_z(
            lambda z: ((1 - EPS) * softplus(-z) - EPS * softplus(z)) / (1 - 2 * EPS),
            lambda z: (-(1 - EPS) * sig(-z) - EPS * sig(z)) / (1 - 2 * EPS),
        ),
    ),
    "exo_pair": (
        "EXO, Ji et al. 2024",
        of_z(exo, lambda z: sig(z) * sig(-z) * (z - math.log((1 - EXO_EPS) / EXO_EPS))),
    ),
    "discopop": ("DiscoPOP, Lu et al. 2024", of_z(discopop, discopop_slope)),
    "nca_pair": ("NCA, Chen et al. 2024", nca_pair),
    "bco_pair": ("BCO, Jung et al. 2024", bco_pair),
    "sppo_hard": ("SPPO, Wu et al. 2024", sppo_hard),
    "apo_zero": ("APO-zero, D'Oosterlinck et al. 2024", apo_zero),
    "apo_down": ("APO-down, D'Oosterlinck et al. 2024", apo_down),
    "dpop": ("DPO-Positive, Pal et al. 2024", dpop),
    "aot": ("AOT, Melnyk et al. 2024: one pair sorts to itself", logistic),
    "aot_unpaired": ("AOT, Melnyk et al. 2024: one pair sorts to itself", logistic),
    "sft": ("supervised fine-tuning", sft),
    "rpo": ("RPO, Pang et al. 2024", rpo),
    "odpo": ("ODPO, Amini et al. 2024", shifted_logistic(lambda p: -p.offset)),
    "rdpo": ("R-DPO, Park et al. 2024", shifted_logistic(lambda p: ALPHA * (p.lw - p.ll))),
}


def measured(name: str, p: Point) -> tuple[float, float, float]:
    """gpo_lab's loss of the one pair and its gradient in c and r (through the policy's log-probs)."""
    loss = build_loss(name, **({"allow_nonconvex": True} if needs_nonconvex_switch(name) else {}))
    pw, pl = (torch.tensor([v], dtype=torch.float64, requires_grad=True) for v in (p.pw, p.pl))
    fixed = [torch.tensor([v], dtype=torch.float64) for v in (p.rw, p.rl, p.lw, p.ll, p.offset)]
    value = loss.pair_loss(PairLogps(pw, pl, *fixed), BETA).sum()
    value.backward()
    assert pw.grad is not None
    return value.item(), pw.grad.item(), 0.0 if pl.grad is None else pl.grad.item()  # sft never reads y_l


def test_every_loss_has_its_paper_test():
    assert set(PAPERS) == set(FIELD_LOSSES) | set(GPO_MEMBERS)


@pytest.mark.parametrize("point", [AT_ZERO, AWAY], ids=["rho=0", "rho=2"])
@pytest.mark.parametrize("name", sorted(PAPERS), ids=lambda n: f"{n}: {PAPERS[n][0]}")
def test_value_and_gradient_are_the_papers(name, point):
    assert measured(name, point) == pytest.approx(PAPERS[name][1](point), rel=1e-9, abs=1e-12)


def test_rdpo_length_term_rewards_the_shorter_answer():
    """Park et al. 2024 at rho = 0, alpha 0.05, beta 0.1, the chosen response 20 tokens longer.

    The margin is beta rho + alpha (|y_w| - |y_l|) = 1, so dL/drho = -beta sigmoid(-1) = -0.0269: a longer
    chosen response needs less push. The opposite sign would give -beta sigmoid(1) = -0.0731.
    """
    loss = build_loss("rdpo", length_alpha=0.05)
    pw = torch.tensor([-30.0], dtype=torch.float64, requires_grad=True)
    logps = PairLogps(
        pw, *(torch.tensor([v], dtype=torch.float64) for v in (-12.0, -30.0, -12.0, 30.0, 10.0))
    )  # c = r = 0, |y_w| = 30, |y_l| = 10
    loss.pair_loss(logps, 0.1).sum().backward()
    assert pw.grad is not None
    assert pw.grad.item() == pytest.approx(-0.1 * sig(-1.0), rel=1e-12)
    assert round(pw.grad.item(), 4) == -0.0269


def test_discopop_derivatives_at_zero_by_hand():
    """Lu et al. 2024's f = (1 - m) log(1 + e^-z) + m e^-z, m = sigmoid(z/tau): with m(0) = 1/2, m'(0) = 1/(4 tau),
    m''(0) = 0, f'(0) = -3/4 + (1 - log 2)/(4 tau) = +0.784 and f''(0) = 5/8 - 1/(4 tau) = -4.375 at tau = 0.05."""
    d = build_loss("discopop", allow_nonconvex=True).derivatives
    assert d is not None
    expected = ((1 + math.log(2)) / 2, -0.75 + (1 - math.log(2)) / (4 * TAU), 0.625 - 1 / (4 * TAU))
    assert (d.f0, d.d1, d.d2) == pytest.approx(expected, rel=1e-5)
    assert (round(d.d1, 3), round(d.d2, 3)) == (0.784, -4.375)


def test_exo_derivatives_at_zero_by_hand():
    """Ji et al. 2024's pair loss: f'(z) = s(1 - s)(z - log((1 - eps)/eps)) with s = sigmoid(z).

    So f'(0) = -log((1 - eps)/eps)/4 and f''(0) = 1/4; at eps = 0.2 (loss.label_smoothing), f'(0) = -log(4)/4.
    """
    d = build_loss("exo_pair", allow_nonconvex=True, label_smoothing=0.2).derivatives
    assert d is not None
    assert (d.d1, d.d2) == pytest.approx((-math.log(4) / 4, 0.25), rel=1e-5)
