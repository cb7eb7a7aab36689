"""The GPO loss family: E_mu[f(beta * rho)] for a convex f with f'(0) < 0.

Each f of the paper's table is a plain function of a tensor ``z`` so that users and notebooks
can plot it, and one entry of :data:`MEMBERS`, the registry every list of losses in gpo_lab is
read from (adding a loss: docs/losses.md). :class:`GPOLoss` wraps any such f (a member or a
user's own, named by its dotted path in a config file), checks at start-up that it really
defines a GPO loss, and applies it to the policy/reference log-ratio margins of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from hydra.utils import get_method

from gpo_lab.errors import ConfigError

LossFunction = Callable[[torch.Tensor], torch.Tensor]


def logistic(z: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(-z)): DPO."""
    return F.softplus(-z)


def hinge(z: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - z): SLiC with the reference-normalised margin."""
    return torch.relu(1 - z)


def squared(z: torch.Tensor) -> torch.Tensor:
    """(z - 1)^2: IPO up to a rescaling of beta (see docs/losses.md)."""
    return (z - 1) ** 2


def exponential(z: torch.Tensor) -> torch.Tensor:
    """exp(-z), computed in at least float32 because it overflows for large negative z."""
    return torch.exp(-_at_least_float32(z))


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


def _at_least_float32(z: torch.Tensor) -> torch.Tensor:
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


@dataclass(frozen=True)
class Derivatives:
    """f(0), f'(0) and f''(0): what the offline-regularization analysis needs."""

    f0: float
    d1: float
    d2: float

    @property
    def regularization_ratio(self) -> float:
        """f''(0)/|f'(0)|: the weight of the mu-weighted squared penalty per unit of beta."""
        return self.d2 / abs(self.d1)


@dataclass(frozen=True)
class GPOMember:
    """One member of the family: the single place gpo_lab lists a loss.

    The unknown-name message, the report's order and colours, the bandit figures' line styles, the
    exact derivatives and the ``loss=<alias>`` config options are all read from :data:`MEMBERS`.
    """

    name: str  # the table name: ``loss=<name>``, summary.json's ``loss``
    function: LossFunction
    derivatives: Derivatives  # exact, from the closed form
    known_as: str  # what the paper's table calls it
    aliases: tuple[str, ...] = ()  # other papers' and libraries' names, each also a ``loss=`` option
    linestyle: str = "-"  # in the bandit figures, so that curves that coincide stay visible


MEMBERS: dict[str, GPOMember] = {
    member.name: member
    for member in (
        GPOMember("logistic", logistic, Derivatives(math.log(2.0), -0.5, 0.25), "DPO", ("dpo",)),
        GPOMember("hinge", hinge, Derivatives(1.0, -1.0, 0.0), "SLiC", ("slic",)),
        GPOMember("squared", squared, Derivatives(1.0, -2.0, 2.0), "IPO", ("ipo",)),
        GPOMember("exponential", exponential, Derivatives(1.0, -1.0, 1.0), "GPO", linestyle="--"),
        GPOMember("truncated_quadratic", truncated_quadratic, Derivatives(1.0, -2.0, 2.0), "GPO", linestyle="--"),
        GPOMember("savage", savage, Derivatives(0.25, -0.25, 0.125), "GPO", linestyle=":"),
    )
}


class _Derived(Mapping):
    """A read-only view of one field of :data:`MEMBERS` (or of their aliases), always in step with it."""

    def __init__(self, items: Callable[[], dict]):
        self._items = items

    def __getitem__(self, key):
        return self._items()[key]

    def __iter__(self) -> Iterator:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


# The views the rest of gpo_lab (and the docs) reads: name -> exact Derivatives, name -> f, alias -> name.
EXACT_DERIVATIVES: Mapping[str, Derivatives] = _Derived(lambda: {n: m.derivatives for n, m in MEMBERS.items()})
BUILTIN_FUNCTIONS: Mapping[str, LossFunction] = _Derived(lambda: {n: m.function for n, m in MEMBERS.items()})
ALIASES: Mapping[str, str] = _Derived(lambda: {a: n for n, m in MEMBERS.items() for a in m.aliases})


def register(member: GPOMember) -> GPOMember:
    """Add a member at run time (a notebook, a test), as an entry of :data:`MEMBERS` does; its names must be new."""
    taken = set(MEMBERS) | set(ALIASES)
    clashes = sorted(taken & {member.name, *member.aliases})
    if clashes:
        raise ValueError(f"Loss name(s) already registered: {', '.join(clashes)}.")
    MEMBERS[member.name] = member
    return member


def member(name: str) -> GPOMember | None:
    """The member named ``name`` or one of its aliases; None for anything else (e.g. a dotted path)."""
    return MEMBERS.get(ALIASES.get(name, name))


def derivatives_of(name: str) -> Derivatives:
    """Exact values for a member, central differences for an importable user function."""
    known = member(name)
    return known.derivatives if known is not None else numerical_derivatives(resolve_function(name)[1])


def register_loss_configs() -> None:
    """Each alias becomes a ``loss=<alias>`` option that composes exactly as ``loss=<name>`` (its yaml).

    Called once by the command line (``gpo_lab.__main__``) before Hydra composes a config, so the
    aliases need no yaml files of their own.
    """
    store = ConfigStore.instance()
    for alias, name in ALIASES.items():
        store.store(group="loss", name=alias, node={"defaults": [name]}, provider="gpo_lab")


class InvalidGPOLoss(ConfigError):
    """Raised at start-up when a function does not define a GPO loss."""


def resolve_function(fn: str | LossFunction) -> tuple[str, LossFunction]:
    """Turn a table name, an alias or a dotted import path into (name, f)."""
    if callable(fn):
        return getattr(fn, "__name__", "custom"), fn
    known = member(fn)
    if known is not None:
        return known.name, known.function
    if "." not in fn:
        valid = sorted(MEMBERS) + sorted(ALIASES)
        raise InvalidGPOLoss(
            f"Unknown GPO loss {fn!r}. Valid names: {', '.join(valid)}; "
            "or give the dotted import path of your own convex function (e.g. mypkg.losses.my_f)."
        )
    try:
        function = get_method(fn)
    except Exception as error:  # hydra wraps import errors in its own types
        raise InvalidGPOLoss(f"Cannot import the loss function {fn!r}: {error}") from error
    return fn.rsplit(".", 1)[-1], function


def numerical_derivatives(f: LossFunction, h: float = 1e-4) -> Derivatives:
    """Central finite differences at 0 in float64; exact enough to check signs and ratios."""
    z = torch.tensor([-h, 0.0, h], dtype=torch.float64)
    lo, mid, hi = (float(v) for v in f(z))
    return Derivatives(mid, (hi - lo) / (2 * h), (hi - 2 * mid + lo) / h**2)


def check_gpo_function(name: str, f: LossFunction, grid_radius: float = 10.0, points: int = 2001) -> None:
    """Refuse f unless it is finite, convex on a grid and decreasing at 0 (f'(0) < 0)."""
    z = torch.linspace(-grid_radius, grid_radius, points, dtype=torch.float64)
    try:
        values = f(z)
    except Exception as error:
        raise InvalidGPOLoss(f"Loss {name!r} fails on a float64 tensor: {error}") from error
    if not isinstance(values, torch.Tensor) or values.shape != z.shape:
        raise InvalidGPOLoss(f"Loss {name!r} must map a tensor z to a tensor of the same shape, elementwise.")
    values = values.to(torch.float64)
    if not torch.isfinite(values).all():
        bad = z[~torch.isfinite(values)][0].item()
        raise InvalidGPOLoss(f"Loss {name!r} is not finite at z={bad:.3g}.")
    second_differences = values[2:] - 2 * values[1:-1] + values[:-2]
    tolerance = 1e-9 * (1 + values.abs().max().item())
    if (second_differences < -tolerance).any():
        where = z[1:-1][second_differences < -tolerance][0].item()
        raise InvalidGPOLoss(
            f"Loss {name!r} is not convex: its second difference is negative near z={where:.3g}. "
            "A GPO loss needs a convex f with f'(0) < 0."
        )
    slope = numerical_derivatives(f).d1
    if not slope < 0:
        raise InvalidGPOLoss(
            f"Loss {name!r} has f'(0) = {slope:.4g}, but a GPO loss needs f'(0) < 0 "
            "(it must reward a larger preference margin)."
        )


class GPOLoss(torch.nn.Module):
    """f(beta * rho) averaged over a batch, for f given by name or dotted path.

    Built from the ``loss`` config group; ``fn`` is a table name (``logistic``), an alias
    (``dpo``) or the import path of any user function (``mypkg.losses.my_f``). User functions
    are checked at start-up (convex on a grid, f'(0) < 0); the paper's table is trusted as is.
    """

    def __init__(self, fn: str | LossFunction, check: bool | None = None):
        super().__init__()
        self.name, self.function = resolve_function(fn)
        known = MEMBERS.get(self.name)  # the table's members are trusted as they are
        if check if check is not None else known is None:
            check_gpo_function(self.name, self.function)
        self.derivatives = known.derivatives if known is not None else numerical_derivatives(self.function)

    def per_example(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        return self.function(beta * _at_least_float32(rho))

    def forward(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        return self.per_example(rho, beta).mean()

    def extra_repr(self) -> str:
        d = self.derivatives
        return f"{self.name}: f(0)={d.f0:.4g}, f'(0)={d.d1:.4g}, f''(0)={d.d2:.4g}"


def validate_beta(beta: float) -> float:
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not math.isfinite(beta) or beta <= 0:
        raise ConfigError(f"beta must be a finite number > 0, got {beta!r}. Set e.g. beta=0.1.")
    return float(beta)
