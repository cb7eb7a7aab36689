"""A loss by its ``loss=<name>`` option, built from its ``conf/loss/<name>.yaml`` (the one place its options are).

For code that names a loss outside Hydra's composition: tests, notebooks, the bandit report, and
:func:`derivatives_of`, which training and the bandit use for any f(beta * rho) loss.
"""

from __future__ import annotations

from typing import Any

import yaml
from hydra.utils import instantiate

from gpo_lab.losses.base import NotOnRho, PreferenceLoss
from gpo_lab.losses.catalog import EXACT_DERIVATIVES, FIELD_LOSSES, LOSS_CONFIG_DIR, Derivatives, canonical_name
from gpo_lab.losses.function_check import numerical_derivatives
from gpo_lab.losses.gpo import resolve_function

NONCONVEX_SWITCH = "allow_nonconvex"  # a yaml sets it (to false) exactly when its loss's f is not convex


def loss_config(name: str) -> dict[str, Any]:
    """The content of ``conf/loss/<name>.yaml`` (an alias read as its member's)."""
    path = LOSS_CONFIG_DIR / f"{canonical_name(name)}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in LOSS_CONFIG_DIR.glob("*.yaml"))
        raise KeyError(f"No loss named {name!r}; the loss options are: {', '.join(known)}.")
    return yaml.safe_load(path.read_text())


def needs_nonconvex_switch(name: str) -> bool:
    """True for a loss refused unless ``loss.allow_nonconvex=true`` (its f is not convex: EXO, DiscoPOP)."""
    return NONCONVEX_SWITCH in loss_config(name)


def build_loss(name: str, **overrides: Any) -> PreferenceLoss:
    """The loss ``loss=<name>`` builds, with ``overrides`` as ``loss.<key>=<value>`` would give them."""
    return instantiate({**loss_config(name), **overrides}, _convert_="all")


def derivatives_of(name: str) -> Derivatives:
    """Exact values for a member, central differences for a field loss of beta * rho or a user function.

    Raises :class:`~gpo_lab.losses.base.NotOnRho` for a named loss that is not f(beta * rho): it has no f''(0).
    """
    name = canonical_name(name)
    if name in EXACT_DERIVATIVES:
        return EXACT_DERIVATIVES[name]
    if name in FIELD_LOSSES:
        built = build_loss(name, **({NONCONVEX_SWITCH: True} if needs_nonconvex_switch(name) else {}))
        if built.derivatives is None:
            raise NotOnRho(f"Loss {name!r} is not a function of beta * rho: it has no f''(0).")
        return built.derivatives
    return numerical_derivatives(resolve_function(name)[1])
