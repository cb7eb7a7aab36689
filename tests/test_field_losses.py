"""The field's named losses against their closed forms, computed by hand on a few pairs (float64).

Two pairs with hand-picked log-probs and lengths: chosen log-ratios c = (1, -1), rejected
r = (-1, 1), so rho = (2, -2); lengths |y_w| = (2, 4), |y_l| = (4, 2), so the averaged margins
are (1/2 + 1/4, -1/4 - 1/2) = (3/4, -3/4). Every expected value below is written from the paper's
formula with ``math``, never from gpo_lab's code.
"""

import math

import pytest
import torch

from gpo_lab.errors import ConfigError
from gpo_lab.losses.aot import AOTLoss
from gpo_lab.losses.base import NotOnRho
from gpo_lab.losses.catalog import FIELD_LOSSES, loss_card
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.losses.named_losses import build_loss, needs_nonconvex_switch
from gpo_lab.scoring.batches import PairLogps
from tests.helpers import CONF_DIR


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


LOGPS = PairLogps(
    policy_chosen=t(-4.0, -10.0),
    policy_rejected=t(-6.0, -7.0),
    reference_chosen=t(-5.0, -9.0),
    reference_rejected=t(-5.0, -8.0),
    chosen_length=t(2.0, 4.0),
    rejected_length=t(4.0, 2.0),
    offset=t(0.5, -1.0),
)
C, R, RHO = (1.0, -1.0), (-1.0, 1.0), (2.0, -2.0)
AVG_MARGIN = (0.75, -0.75)
LEN_W, LEN_L = (2.0, 4.0), (4.0, 2.0)
PI_W, PI_L = (-4.0, -10.0), (-6.0, -7.0)


def softplus(x):
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def log_sigmoid(x):
    return -softplus(-x)


def build(name, **overrides):
    return build_loss(name, **overrides)


BETA = 0.7
EPS = 0.1
HAND = {
    "sigmoid_norm": [softplus(-BETA * m) for m in AVG_MARGIN],
    "ipo_avg": [(m - 1 / (2 * BETA)) ** 2 for m in AVG_MARGIN],
    "simpo": [softplus(-(BETA * (w / lw - v / lv) - 0.5)) for w, v, lw, lv in zip(PI_W, PI_L, LEN_W, LEN_L)],
    "cdpo": [(1 - EPS) * softplus(-BETA * x) + EPS * softplus(BETA * x) for x in RHO],
    "robust": [((1 - EPS) * softplus(-BETA * x) - EPS * softplus(BETA * x)) / (1 - 2 * EPS) for x in RHO],
    "exo_pair": [
        sigmoid(BETA * x) * (log_sigmoid(BETA * x) - math.log(1 - 1e-3))
        + sigmoid(-BETA * x) * (log_sigmoid(-BETA * x) - math.log(1e-3))
        for x in RHO
    ],
    "discopop": [
        (1 - sigmoid(BETA * x / 0.05)) * softplus(-BETA * x) + sigmoid(BETA * x / 0.05) * math.exp(-BETA * x)
        for x in RHO
    ],
    "nca_pair": [
        -log_sigmoid(BETA * c) - 0.5 * log_sigmoid(-BETA * c) - 0.5 * log_sigmoid(-BETA * r) for c, r in zip(C, R)
    ],
    "bco_pair": [-log_sigmoid(BETA * c) - log_sigmoid(-BETA * r) for c, r in zip(C, R)],
    "sppo_hard": [(c - 0.5 / BETA) ** 2 + (r + 0.5 / BETA) ** 2 for c, r in zip(C, R)],
    "apo_zero": [1 - sigmoid(BETA * c) + sigmoid(BETA * r) for c, r in zip(C, R)],
    "apo_down": [sigmoid(BETA * c) + 1 - sigmoid(BETA * (c - r)) for c, r in zip(C, R)],
    "dpop": [-log_sigmoid(BETA * (c - r - 50 * max(0.0, -c))) for c, r in zip(C, R)],
    "sft": [-(PI_W[0] + PI_W[1]) / (LEN_W[0] + LEN_W[1])] * 2,  # 14/6 for both pairs
    "rpo": [softplus(-BETA * x) - w / lw for x, w, lw in zip(RHO, PI_W, LEN_W)],
    "odpo": [softplus(-(BETA * x - o)) for x, o in zip(RHO, (0.5, -1.0))],
    # Park et al. 2024: the margin gains + alpha (|y_w| - |y_l|), from the length-penalized reward r - alpha |y|
    "rdpo": [softplus(-(BETA * x + 0.01 * (lw - ll))) for x, lw, ll in zip(RHO, LEN_W, LEN_L)],
}
HAND["orpo"] = [
    14 / 6
    + BETA
    * softplus(
        -(
            (w / lw - math.log(1 - math.exp(w / lw)))  # log odds of the mean token probability
            - (v / lv - math.log(1 - math.exp(v / lv)))
        )
    )
    for w, v, lw, lv in zip(PI_W, PI_L, LEN_W, LEN_L)
]
NONCONVEX = {"exo_pair", "discopop"}


def test_a_few_values_by_hand():
    """Spot checks with numbers, not formulas: the first pair's averaged margin is 3/4, its rho 2."""
    assert build("sigmoid_norm").pair_loss(LOGPS, 1.0)[0].item() == pytest.approx(math.log(1 + math.exp(-0.75)))
    assert build("ipo_avg").pair_loss(LOGPS, 0.5)[0].item() == pytest.approx(0.0625)  # (3/4 - 1)^2
    assert build("sppo_hard").pair_loss(LOGPS, 0.5)[0].item() == pytest.approx(0.0)  # (1 - 1)^2 + (-1 + 1)^2
    assert build("sft").pair_loss(LOGPS, 1.0)[1].item() == pytest.approx(14 / 6)
    # -4/2 - (-6/4) = -1/2: SimPO's margin times beta = 2 is -1, minus gamma = 1/2 gives z = -3/2
    assert build("simpo").pair_loss(LOGPS, 2.0)[0].item() == pytest.approx(math.log(1 + math.exp(1.5)))


@pytest.mark.parametrize("name", sorted(HAND))
def test_matches_its_closed_form(name):
    loss = build(name, **({"allow_nonconvex": True} if name in NONCONVEX else {}))
    torch.testing.assert_close(loss.pair_loss(LOGPS, BETA), t(*HAND[name]), rtol=1e-10, atol=1e-12)


def test_aot_sorts_the_batch():
    """Policy margins (2, -3) sort to (-3, 2); reference margins (0, -1) sort to (-1, 0): delta = (-2, 2)."""
    logps = PairLogps(t(-4.0, -10.0), t(-6.0, -7.0), t(-5.0, -9.0), t(-5.0, -8.0))
    values = build("aot").pair_loss(logps, BETA)
    torch.testing.assert_close(values, t(softplus(2 * BETA), softplus(-2 * BETA)), rtol=1e-12, atol=0)
    smoothed = build("aot", label_smoothing=EPS).pair_loss(logps, BETA)
    expected = [(1 - EPS) * softplus(-BETA * d) + EPS * softplus(BETA * d) for d in (-2.0, 2.0)]
    torch.testing.assert_close(smoothed, t(*expected), rtol=1e-12, atol=0)


# Three pairs: c = (1/2, -2, 1), r = (1, -3/2, -3); policy margins (1/2, -3/2, 4), reference margins (1, -1, 0).
UNPAIRED = PairLogps(t(-4.5, -6.0, -2.0), t(-5.0, -4.5, -6.0), t(-5.0, -4.0, -3.0), t(-6.0, -3.0, -3.0))


def test_aot_unpaired_sorts_chosen_and_rejected_apart():
    """sort(c) = (-2, 1/2, 1), sort(r) = (-3, -3/2, 1): delta = (1, 2, 0), not rho = (-1/2, -1/2, 4)."""
    values = build("aot_unpaired").pair_loss(UNPAIRED, BETA)
    torch.testing.assert_close(values, t(*[softplus(-BETA * d) for d in (1.0, 2.0, 0.0)]), rtol=1e-12, atol=0)
    smoothed = build("aot_unpaired", label_smoothing=EPS).pair_loss(UNPAIRED, BETA)
    expected = [(1 - EPS) * softplus(-BETA * d) + EPS * softplus(BETA * d) for d in (1.0, 2.0, 0.0)]
    torch.testing.assert_close(smoothed, t(*expected), rtol=1e-12, atol=0)
    # paired AOT on the same batch: sorted policy margins (-3/2, 1/2, 4) minus sorted reference ones (-1, 0, 1)
    paired = build("aot").pair_loss(UNPAIRED, BETA)
    torch.testing.assert_close(paired, t(*[softplus(-BETA * d) for d in (-0.5, 0.5, 3.0)]), rtol=1e-12, atol=0)
    # c = (1, -1) and r = (-1, 1) are the same values: every quantile's delta is 0, whatever rho = (2, -2) says
    torch.testing.assert_close(build("aot_unpaired").pair_loss(LOGPS, BETA), t(math.log(2), math.log(2)))


def test_aot_unpaired_ignores_which_rejected_goes_with_which_chosen():
    shuffled = PairLogps(
        UNPAIRED.policy_chosen,
        UNPAIRED.policy_rejected[[2, 0, 1]],
        UNPAIRED.reference_chosen,
        UNPAIRED.reference_rejected[[2, 0, 1]],
    )
    unpaired, paired = build("aot_unpaired"), build("aot")
    torch.testing.assert_close(unpaired.pair_loss(shuffled, BETA), unpaired.pair_loss(UNPAIRED, BETA))
    assert not torch.allclose(paired.pair_loss(shuffled, BETA), paired.pair_loss(UNPAIRED, BETA))


def test_aot_mode_is_checked():
    with pytest.raises(ConfigError, match="loss.mode must be one of paired, unpaired"):
        AOTLoss("aot", mode="both")
    with pytest.raises(NotOnRho, match="not defined on single pairs"):
        build("aot_unpaired").per_example(t(1.0), 1.0)


def test_the_nonconvex_losses_carry_the_switch_in_their_yaml():
    assert all(needs_nonconvex_switch(name) for name in NONCONVEX)
    assert not needs_nonconvex_switch("cdpo")


def test_reference_free_losses_say_so():
    assert {n for n in FIELD_LOSSES if not build(n, **_allow(n)).uses_reference} == {"simpo", "orpo", "sft"}
    # ...and need no reference values at all: NaN references leave them finite
    nan = torch.full((2,), float("nan"), dtype=torch.float64)
    blind = PairLogps(LOGPS.policy_chosen, LOGPS.policy_rejected, nan, nan, LOGPS.chosen_length, LOGPS.rejected_length)
    for name in ("simpo", "orpo", "sft"):
        assert torch.isfinite(build(name).pair_loss(blind, BETA)).all()


def _allow(name):
    return {"allow_nonconvex": True} if name in NONCONVEX else {}


def test_nonconvex_losses_need_the_explicit_switch():
    for name in NONCONVEX:
        with pytest.raises(Exception, match="not convex.*allow_nonconvex=true"):
            build(name)
        build(name, allow_nonconvex=True)


def test_on_rho_losses_are_their_g_of_beta_rho():
    """cdpo, robust, exo and discopop are g(beta * rho): the bandit and the report can use them."""
    for name in HAND:
        assert build(name, **_allow(name)).on_rho == (name in {"cdpo", "robust", "exo_pair", "discopop"}), name
    # cDPO's slope at 0 is (1 - 2 eps) f'(0) = -0.4, its curvature f''(0) = 1/4, by hand
    d = build("cdpo").derivatives
    assert (d.f0, d.d1, d.d2) == pytest.approx((math.log(2), -0.4, 0.25), rel=1e-6)
    with pytest.raises(NotOnRho):
        build("simpo").per_example(t(1.0), 1.0)


def test_length_losses_need_lengths():
    bare = PairLogps(LOGPS.policy_chosen, LOGPS.policy_rejected, LOGPS.reference_chosen, LOGPS.reference_rejected)
    with pytest.raises(ConfigError, match="token counts"):
        build("simpo").pair_loss(bare, 1.0)
    GPOLoss("logistic").pair_loss(bare, 1.0)  # GPO needs none


def test_sigmoid_is_logistic():
    assert GPOLoss("sigmoid").name == "logistic"
    torch.testing.assert_close(GPOLoss("sigmoid").pair_loss(LOGPS, BETA), t(*[softplus(-BETA * x) for x in RHO]))


def test_user_f_of_a_margin_loss_is_checked():
    with pytest.raises(Exception, match="not convex"):
        build("cdpo", fn="tests.test_losses.not_convex")
    with pytest.raises(Exception, match=r"f'\(0\) = 0.6"):  # (1 - 2 eps) * 1 = 0.6 for exp(z)
        build("cdpo", label_smoothing=0.2, fn="tests.test_losses.increasing_at_zero")


def test_every_field_loss_describes_itself_in_its_yaml():
    """The ``# formula:`` and ``# paper:`` header of conf/loss/<name>.yaml, read by code (catalog.loss_card)."""
    cdpo = loss_card("cdpo")
    assert (cdpo.formula, cdpo.paper) == (
        "(1 - eps) log(1 + exp(-z)) + eps log(1 + exp(z))",
        "conservative DPO, Mitchell 2023",
    )
    assert (
        cdpo.trl == "label_smoothing of CPOTrainer's sigmoid" and cdpo.beta == "the same beta; eps is label_smoothing"
    )
    assert (loss_card("odpo").trl, loss_card("odpo").beta) == ("", "the same beta")  # the defaults
    for name in FIELD_LOSSES:
        card = loss_card(name)
        assert card.formula and card.paper, name


def test_the_docs_table_of_the_field_names_only_real_losses():
    """The table in docs/losses.md is prose about the losses; each row it has must name a loss=<name> option."""
    text = (CONF_DIR.parent / "docs" / "losses.md").read_text()
    section = text.split("## The rest of the field", 1)[-1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")]
    named = rows[1:]  # after the header
    assert set(named) <= set(FIELD_LOSSES), set(named) - set(FIELD_LOSSES)


def test_exo_pair_epsilon_is_label_smoothing():
    """EXO's eps is TRL's label_smoothing: changing it changes the loss, by Ji et al.'s formula."""
    exo = build("exo_pair", allow_nonconvex=True, label_smoothing=0.2).pair_loss(LOGPS, BETA)
    expected = [
        sigmoid(BETA * x) * (log_sigmoid(BETA * x) - math.log(0.8))
        + sigmoid(-BETA * x) * (log_sigmoid(-BETA * x) - math.log(0.2))
        for x in RHO
    ]
    torch.testing.assert_close(exo, t(*expected), rtol=1e-10, atol=1e-12)
    for bad in ({"label_smoothing": 0.0}, {"fn_kwargs": {"epsilon": 0.2}}, {"noise": "cdpo"}):
        with pytest.raises(Exception, match="exo_pair|label_smoothing"):
            build("exo_pair", allow_nonconvex=True, **bad)


def test_options_that_would_be_ignored_are_refused():
    """label_smoothing without label noise, or fn_kwargs for an f that takes none, would change nothing."""
    with pytest.raises(Exception, match="no effect without label noise"):
        build("simpo", label_smoothing=0.2)
    with pytest.raises(Exception, match="fn_kwargs is taken only by"):
        build("cdpo", fn_kwargs={"tau": 0.1})
