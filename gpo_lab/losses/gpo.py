"""The GPO family: E_mu[f(beta * rho)] for a convex f with f'(0) < 0, and :class:`GPOLoss`, which applies any such f.

Each f of the paper's table is a plain function of a tensor ``z`` that users and notebooks can plot;
:data:`MEMBER_FUNCTIONS` lists them in the paper's order (:data:`~gpo_lab.losses.catalog.GPO_MEMBERS`,
with their exact derivatives in :mod:`gpo_lab.losses.catalog`). A user's own f is named by its dotted
import path and checked at start-up (:mod:`gpo_lab.losses.function_check`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hydra.utils import get_method

from gpo_lab.losses.base import PreferenceLoss, at_least_float32
from gpo_lab.losses.catalog import ALIASES, EXACT_DERIVATIVES, GPO_MEMBERS, canonical_name
from gpo_lab.losses.function_check import InvalidGPOLoss, LossFunction, check_gpo_function, numerical_derivatives


def logistic(z: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(-z)): DPO."""
    return F.softplus(-z)


def hinge(z: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - z): SLiC with the reference-normalized margin."""
    return torch.relu(1 - z)


def squared(z: torch.Tensor) -> torch.Tensor:
    """(z - 1)^2: IPO up to a rescaling of beta (see docs/losses.md)."""
    return (z - 1) ** 2


def exponential(z: torch.Tensor) -> torch.Tensor:
    """exp(-z), computed in at least float32 because it overflows for large negative z."""
    return torch.exp(-at_least_float32(z))


def truncated_quadratic(z: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - z)^2."""
    return torch.relu(1 - z) ** 2


def savage(z: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(z))^2 = sigmoid(-z)^2, stable for any z.

    The paper's table lists it with the convex losses, but it is convex only for z > -log 2
    (f'' = 2 s^2 (1 - s)(2 - 3 s) with s = sigmoid(-z)); it is therefore exempt from the
    start-up convexity check that user functions get.
    """
    return torch.sigmoid(-z) ** 2


# Each member's f is the function of this module named after it, in the paper's order.
MEMBER_FUNCTIONS: dict[str, LossFunction] = {name: globals()[name] for name in GPO_MEMBERS}


def resolve_function(fn: str | LossFunction) -> tuple[str, LossFunction]:
    """Turn a member's name, an alias or a dotted import path into (name, f).

    A user's function keeps its own name unless that name is a member's: then it is named by its
    import path, so that it is never mistaken for (or trusted as) the member.
    """
    if callable(fn):
        name = getattr(fn, "__name__", "custom")
        if _is_taken(name, fn):
            name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', name)}".lstrip(".")
        return name, fn
    if canonical_name(fn) in MEMBER_FUNCTIONS:
        return canonical_name(fn), MEMBER_FUNCTIONS[canonical_name(fn)]
    if "." not in fn:
        valid = sorted(MEMBER_FUNCTIONS) + sorted(ALIASES)
        raise InvalidGPOLoss(
            f"Unknown GPO loss {fn!r}. Valid names: {', '.join(valid)}; "
            "or give the dotted import path of your own convex function (e.g. mypkg.losses.my_f)."
        )
    try:
        function = get_method(fn)
    except Exception as error:  # hydra wraps import errors in its own types
        raise InvalidGPOLoss(f"Cannot import the loss function {fn!r}: {error}") from error
    name = fn.rsplit(".", 1)[-1]
    return (fn if _is_taken(name, function) else name), function


def _is_taken(name: str, function: LossFunction) -> bool:
    """True when ``name`` is a member's (or an alias) but ``function`` is not that member's f."""
    known = MEMBER_FUNCTIONS.get(canonical_name(name))
    return known is not None and known is not function


def is_member_function(name: str, function: LossFunction) -> bool:
    """True when ``function`` *is* member ``name``'s f (identity, not name): the only f trusted unchecked."""
    return MEMBER_FUNCTIONS.get(name) is function


class GPOLoss(PreferenceLoss):
    """f(beta * rho) for f given by name or dotted path: the GPO member of the loss interface.

    Built from the ``loss`` config group; ``fn`` is a member's name (``logistic``), an alias
    (``dpo``) or the import path of any user function (``mypkg.losses.my_f``). Every user function
    is checked at start-up (finite, convex, f'(0) < 0; ``allow_nonconvex`` waives convexity) and its
    derivatives at 0 are measured; only the members' own functions (by identity) are trusted as they are.
    """

    def __init__(self, fn: str | LossFunction, check: bool | None = None, allow_nonconvex: bool = False):
        super().__init__()
        self.name, self.function = resolve_function(fn)
        trusted = is_member_function(self.name, self.function)
        if check if check is not None else not trusted:
            check_gpo_function(self.name, self.function, allow_nonconvex=allow_nonconvex)
        self.derivatives = EXACT_DERIVATIVES[self.name] if trusted else numerical_derivatives(self.function)

    def per_example(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        return self.function(beta * at_least_float32(rho))

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        return self.per_example(logps.rho, beta)

    def extra_repr(self) -> str:
        d = self.derivatives
        assert d is not None  # set in __init__: a GPO loss is f(beta * rho)
        return f"{self.name}: f(0)={d.f0:.4g}, f'(0)={d.d1:.4g}, f''(0)={d.d2:.4g}"
