"""The loss family against closed forms and hand-computed derivatives (float64)."""

import math

import pytest
import torch

from gpo_lab.errors import ConfigError
from gpo_lab.losses import gpo
from gpo_lab.losses.base import validate_beta
from gpo_lab.losses.catalog import EXACT_DERIVATIVES
from gpo_lab.losses.function_check import InvalidGPOLoss, check_gpo_function, numerical_derivatives
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.losses.named_losses import derivatives_of

Z = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.0, 5.0], dtype=torch.float64)

CLOSED_FORMS = {
    "logistic": lambda z: math.log(1 + math.exp(-z)),
    "hinge": lambda z: max(0.0, 1 - z),
    "squared": lambda z: (z - 1) ** 2,
    "exponential": lambda z: math.exp(-z),
    "truncated_quadratic": lambda z: max(0.0, 1 - z) ** 2,
    "savage": lambda z: 1 / (1 + math.exp(z)) ** 2,
}

# (f(0), f'(0), f''(0)) worked out by hand from the closed forms.
HAND_DERIVATIVES = {
    "logistic": (math.log(2), -0.5, 0.25),
    "hinge": (1.0, -1.0, 0.0),
    "squared": (1.0, -2.0, 2.0),
    "exponential": (1.0, -1.0, 1.0),
    "truncated_quadratic": (1.0, -2.0, 2.0),
    "savage": (0.25, -0.25, 0.125),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_function_matches_closed_form(name):
    f = getattr(gpo, name)  # importable by its table name
    expected = torch.tensor([CLOSED_FORMS[name](float(z)) for z in Z], dtype=torch.float64)
    torch.testing.assert_close(f(Z), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(HAND_DERIVATIVES))
def test_derivatives_at_zero(name):
    f0, d1, d2 = HAND_DERIVATIVES[name]
    exact = EXACT_DERIVATIVES[name]
    assert (exact.f0, exact.d1, exact.d2) == pytest.approx((f0, d1, d2), abs=1e-15)
    # Autograd of the implementation agrees with the hand values (hinge's kink is at z=1, not 0).
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    value = getattr(gpo, name)(z)
    (first,) = torch.autograd.grad(value, z, create_graph=True)
    second = torch.autograd.grad(first, z)[0] if first.requires_grad else torch.zeros(())
    assert (value.item(), first.item(), second.item()) == pytest.approx((f0, d1, d2), abs=1e-12)
    assert exact.regularization_ratio == pytest.approx(d2 / abs(d1))


def test_regularization_ratios_of_the_table():
    ratios = {name: d.regularization_ratio for name, d in EXACT_DERIVATIVES.items()}
    assert ratios == pytest.approx(
        {"logistic": 0.5, "hinge": 0.0, "squared": 1.0, "exponential": 1.0, "truncated_quadratic": 1.0, "savage": 0.5}
    )


def test_numerically_stable_in_float32_far_from_zero():
    z = torch.tensor([-200.0, -80.0, 80.0, 200.0])
    for name in CLOSED_FORMS:
        if name == "exponential":
            continue  # exp(200) is not representable in float32; it is checked below
        assert torch.isfinite(getattr(gpo, name)(z)).all(), name
    assert gpo.logistic(torch.tensor([-200.0])).item() == pytest.approx(200.0)
    assert gpo.savage(torch.tensor([200.0])).item() == 0.0
    # exponential is computed in at least float32 even for half-precision input
    half = gpo.exponential(torch.tensor([-20.0], dtype=torch.float16))
    assert half.dtype == torch.float32 and half.item() == pytest.approx(math.exp(20), rel=1e-6)


@pytest.mark.parametrize("alias,target", [("dpo", "logistic"), ("ipo", "squared"), ("slic", "hinge")])
def test_aliases(alias, target):
    assert GPOLoss(alias).name == target


def test_loss_value_at_rho_zero_is_f0():
    rho = torch.zeros(5)
    for name, (f0, _, _) in HAND_DERIVATIVES.items():
        assert GPOLoss(name).per_example(rho, beta=0.3).mean().item() == pytest.approx(f0, rel=1e-6)


def test_loss_applies_beta_inside_f():
    rho = torch.tensor([2.0, -1.0], dtype=torch.float64)
    loss = GPOLoss("squared").per_example(rho, beta=0.5).mean()
    assert loss.item() == pytest.approx(((1.0 - 1) ** 2 + (-0.5 - 1) ** 2) / 2)


def not_convex(z):
    return torch.cos(z) - z


def increasing_at_zero(z):
    return torch.exp(z)


def test_non_convex_function_is_refused():
    with pytest.raises(InvalidGPOLoss, match="not convex"):
        check_gpo_function("cosine", not_convex)


def test_function_increasing_at_zero_is_refused():
    with pytest.raises(InvalidGPOLoss, match=r"f'\(0\) = 1"):
        check_gpo_function("exp", increasing_at_zero)


def test_user_function_by_dotted_path():
    loss = GPOLoss("tests.test_losses.scaled_logistic")
    assert loss.name == "scaled_logistic"
    derivatives = numerical_derivatives(scaled_logistic)
    assert loss.derivatives.d1 == pytest.approx(-1.0, rel=1e-6)
    assert derivatives.d2 == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(InvalidGPOLoss, match="not convex"):
        GPOLoss("tests.test_losses.not_convex")


def scaled_logistic(z):
    return 2 * torch.nn.functional.softplus(-z)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(InvalidGPOLoss) as error:
        GPOLoss("logistc")
    message = str(error.value)
    for name in [*CLOSED_FORMS, "dpo", "ipo", "slic"]:
        assert name in message


@pytest.mark.parametrize("beta", [0, -0.1, float("nan"), float("inf")])
def test_beta_must_be_positive(beta):
    with pytest.raises(ConfigError, match="beta must be"):
        validate_beta(beta)


def test_savage_is_convex_only_right_of_minus_log_two():
    """Hand-computed: f'' = 2 s^2 (1 - s)(2 - 3 s), s = sigmoid(-z); negative for z < -log 2."""
    for z0 in (-1.0, 0.0, 1.0):
        z = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
        (first,) = torch.autograd.grad(gpo.savage(z), z, create_graph=True)
        (second,) = torch.autograd.grad(first, z)
        s = 1 / (1 + math.exp(z0))
        assert second.item() == pytest.approx(2 * s**2 * (1 - s) * (2 - 3 * s), rel=1e-10)
    with pytest.raises(InvalidGPOLoss, match="not convex"):
        check_gpo_function("savage", gpo.savage)
    assert GPOLoss("savage").name == "savage"  # the paper's member is accepted by name


@pytest.mark.parametrize("name", sorted(set(CLOSED_FORMS) - {"savage"}))
def test_table_losses_pass_the_convexity_check(name):
    check_gpo_function(name, getattr(gpo, name))


# ----------------------------------------------------------------------------- the check's three holes
def logistic(z):
    """Named like the member, but concave near 0: f = -z^2 - z, f'(0) = -1, f''(0) = -2."""
    return -(z**2) - z


def squared(z):
    """Named like the member, but three times it: f'(0) = -6, f''(0) = 6 (the member's are -2 and 2)."""
    return 3 * (z - 1) ** 2


def test_a_user_function_named_like_a_member_is_still_checked():
    with pytest.raises(InvalidGPOLoss, match="not convex"):
        GPOLoss("tests.test_losses.logistic")
    with pytest.raises(InvalidGPOLoss, match="not convex"):
        GPOLoss(logistic)  # a callable too
    loss = GPOLoss("tests.test_losses.squared")  # convex: accepted, under its import path, with its own derivatives
    assert loss.name == "tests.test_losses.squared" and loss.function is squared
    d = loss.derivatives
    assert (d.f0, d.d1, d.d2) == pytest.approx((3.0, -6.0, 6.0), rel=1e-6)
    assert derivatives_of("tests.test_losses.squared").d1 == pytest.approx(-6.0, rel=1e-6)
    assert GPOLoss("squared").derivatives is EXACT_DERIVATIVES["squared"]  # the member itself is still trusted


def huge_far_away_concave_at_zero(z):
    """exp(-2z) - 1000 z^2: f'(0) = -2 and f''(0) = 4 - 2000 = -1996, hidden by f(-10) = exp(20) ~ 5e8."""
    return torch.exp(-2 * z) - 1000 * z**2


def test_a_large_f_far_away_does_not_hide_negative_curvature_at_zero():
    # f''(z) = 4 exp(-2z) - 2000 < 0 for z > -log(500)/2 = -3.107: the first concave stencil is there
    with pytest.raises(InvalidGPOLoss, match=r"not convex: .* near z=-3\.1"):
        check_gpo_function("huge", huge_far_away_concave_at_zero)


def nan_between_nodes(z):
    """softplus(-z), except NaN on (0.004, 0.006): between the grid nodes 0 and 0.01."""
    hole = (z > 0.004) & (z < 0.006)
    return torch.where(hole, torch.full_like(z, float("nan")), torch.nn.functional.softplus(-z))


def test_nan_between_the_grid_nodes_is_found():
    with pytest.raises(InvalidGPOLoss, match="not finite at z=0.00[45]"):
        check_gpo_function("holed", nan_between_nodes)
