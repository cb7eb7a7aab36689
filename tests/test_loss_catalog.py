"""The catalog is the losses without torch: the report and the status command read it and must stay light."""

import math
import subprocess
import sys

import pytest

from gpo_lab.losses import catalog, gpo
from gpo_lab.losses.function_check import numerical_derivatives
from gpo_lab.losses.named_losses import derivatives_of
from tests.helpers import ROOT

# (f(0), f'(0), f''(0)) worked out by hand from each closed form.
HAND = {
    "logistic": (math.log(2), -1 / 2, 1 / 4),  # log(1 + e^-z): -s(-z), s(z) s(-z) at 0
    "hinge": (1.0, -1.0, 0.0),  # 1 - z near 0
    "squared": (1.0, -2.0, 2.0),  # (z - 1)^2
    "exponential": (1.0, -1.0, 1.0),  # e^-z
    "truncated_quadratic": (1.0, -2.0, 2.0),  # (1 - z)^2 near 0
    "savage": (1 / 4, -1 / 4, 1 / 8),  # s(-z)^2 with s(0) = 1/2
}


def test_importing_the_catalog_does_not_load_torch():
    code = "import sys, gpo_lab.losses.catalog; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_catalog_names_the_papers_six_in_order():
    assert catalog.GPO_MEMBERS == ("logistic", "hinge", "squared", "exponential", "truncated_quadratic", "savage")
    assert set(catalog.EXACT_DERIVATIVES) == set(catalog.LINESTYLES) == set(catalog.GPO_MEMBERS)
    assert dict(catalog.ALIASES) == {"dpo": "logistic", "sigmoid": "logistic", "slic": "hinge", "ipo": "squared"}


def test_canonical_name_resolves_aliases_only():
    assert [catalog.canonical_name(n) for n in ("dpo", "ipo", "slic", "sigmoid")] == [
        "logistic",
        "squared",
        "hinge",
        "logistic",
    ]
    assert catalog.canonical_name("cdpo") == "cdpo" and catalog.canonical_name("mypkg.f") == "mypkg.f"


def test_field_losses_are_the_other_named_losses():
    assert {"cdpo", "simpo", "orpo", "aot", "sft"} <= set(catalog.FIELD_LOSSES)
    assert not set(catalog.FIELD_LOSSES) & (set(catalog.GPO_MEMBERS) | set(catalog.ALIASES) | {catalog.CUSTOM})
    assert list(catalog.FIELD_LOSSES) == sorted(catalog.FIELD_LOSSES)


@pytest.mark.parametrize("name", sorted(HAND))
def test_exact_derivatives_are_the_closed_forms_and_the_functions_own(name):
    exact = catalog.EXACT_DERIVATIVES[name]
    assert (exact.f0, exact.d1, exact.d2) == pytest.approx(HAND[name], abs=1e-15)
    assert exact.regularization_ratio == pytest.approx(HAND[name][2] / abs(HAND[name][1]))
    measured = numerical_derivatives(getattr(gpo, name))  # central differences of the torch function
    assert (measured.f0, measured.d1, measured.d2) == pytest.approx(HAND[name], rel=1e-6, abs=1e-6)


def test_derivatives_of_a_name():
    assert derivatives_of("dpo") is catalog.EXACT_DERIVATIVES["logistic"]
    # cDPO, eps = 0.1: f(0) = log 2, f'(0) = -(1 - 2 eps)/2 = -0.4, f''(0) = 1/4, by hand
    cdpo = derivatives_of("cdpo")
    assert (cdpo.f0, cdpo.d1, cdpo.d2) == pytest.approx((math.log(2), -0.4, 0.25), rel=1e-6)


def test_regularization_ratio_of_a_hand_made_triple():
    assert catalog.Derivatives(1.0, -4.0, 2.0).regularization_ratio == 0.5
