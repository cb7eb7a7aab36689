"""The GPO loss family: E_mu[f(beta * rho)] for a convex f with f'(0) < 0, and the field around it.

Each f of the paper's table is a plain function of a tensor ``z`` so that users and notebooks
can plot it, and one entry of :data:`MEMBERS`, the registry every list of losses in gpo_lab is
read from (adding a loss: docs/losses.md). :class:`GPOLoss` wraps any such f (a member or a
user's own, named by its dotted path in a config file), checks at start-up that it really
defines a GPO loss, and applies it to the policy/reference log-ratio margins of a batch.

The other offline preference losses researchers compare against (SimPO, cDPO, TRL's loss types,
...) are built from parts (:mod:`gpo_lab.losses.margins`, :mod:`gpo_lab.losses.parts`) and named
in :mod:`gpo_lab.losses.field`; every loss maps a batch's
:class:`~gpo_lab.scoring.batches.PairLogps` and beta to per-example losses with
``loss.pair_loss(logps, beta)``. The start-up check is :mod:`gpo_lab.losses.check`.
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
from gpo_lab.losses.check import InvalidGPOLoss, LossFunction, check_gpo_function, numerical_derivatives


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
        GPOMember("logistic", logistic, Derivatives(math.log(2.0), -0.5, 0.25), "DPO", ("dpo", "sigmoid")),
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
    """Exact values for a member, central differences for a field loss of beta * rho or a user function.

    Raises :class:`NotOnRho` for a field loss that is not f(beta * rho): it has no f''(0).
    """
    known = member(name)
    if known is not None:
        return known.derivatives
    if name in FIELD:
        built = FIELD[name].build(**({"allow_nonconvex": True} if FIELD[name].nonconvex else {}))
        if built.derivatives is None:
            raise NotOnRho(f"Loss {name!r} is not a function of beta * rho: it has no f''(0).")
        return built.derivatives  # type: ignore[return-value]  # a Derivatives, set by every field loss
    return numerical_derivatives(resolve_function(name)[1])


def register_loss_configs() -> None:
    """Each alias becomes a ``loss=<alias>`` option that composes exactly as ``loss=<name>`` (its yaml).

    Called once by the command line (``gpo_lab.__main__``) before Hydra composes a config, so the
    aliases need no yaml files of their own.
    """
    store = ConfigStore.instance()
    for alias, name in ALIASES.items():
        store.store(group="loss", name=alias, node={"defaults": [name]}, provider="gpo_lab")


def resolve_function(fn: str | LossFunction) -> tuple[str, LossFunction]:
    """Turn a table name, an alias or a dotted import path into (name, f).

    A user's function keeps its own name unless that name is a member's: then it is named by its
    import path, so that it is never mistaken for (or trusted as) the member.
    """
    if callable(fn):
        name = getattr(fn, "__name__", "custom")
        if _is_taken(name, fn):
            name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', name)}".lstrip(".")
        return name, fn
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
    name = fn.rsplit(".", 1)[-1]
    return (fn if _is_taken(name, function) else name), function


def _is_taken(name: str, function: LossFunction) -> bool:
    """True when ``name`` is a member's (or an alias) but ``function`` is not that member's f."""
    known = member(name)
    return known is not None and known.function is not function


def builtin_member(name: str, function: LossFunction) -> GPOMember | None:
    """The member whose f *is* ``function`` (identity, not name): the only functions trusted unchecked."""
    known = MEMBERS.get(name)
    return known if known is not None and known.function is function else None


class GPOLoss(torch.nn.Module):
    """f(beta * rho) for f given by name or dotted path: the GPO member of the loss interface.

    Built from the ``loss`` config group; ``fn`` is a table name (``logistic``), an alias
    (``dpo``) or the import path of any user function (``mypkg.losses.my_f``). Every user function
    is checked at start-up (finite, convex, f'(0) < 0; ``allow_nonconvex`` waives convexity) and its
    derivatives at 0 are measured; only the table's own functions (by identity) are trusted as they are.
    """

    uses_reference = True  # rho is reference-normalized
    on_rho = True  # a function of rho alone: the bandit can take it

    def __init__(self, fn: str | LossFunction, check: bool | None = None, allow_nonconvex: bool = False):
        super().__init__()
        self.name, self.function = resolve_function(fn)
        known = builtin_member(self.name, self.function)
        if check if check is not None else known is None:
            check_gpo_function(self.name, self.function, allow_nonconvex=allow_nonconvex)
        self.derivatives = known.derivatives if known is not None else numerical_derivatives(self.function)

    def per_example(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        return self.function(beta * _at_least_float32(rho))

    def pair_loss(self, logps, beta: float) -> torch.Tensor:
        """The loss interface: per-example losses of a batch's :class:`PairLogps`."""
        return self.per_example(logps.rho, beta)

    def forward(self, rho: torch.Tensor, beta: float) -> torch.Tensor:
        return self.per_example(rho, beta).mean()

    def extra_repr(self) -> str:
        d = self.derivatives
        return f"{self.name}: f(0)={d.f0:.4g}, f'(0)={d.d1:.4g}, f''(0)={d.d2:.4g}"


def validate_beta(beta: float) -> float:
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not math.isfinite(beta) or beta <= 0:
        raise ConfigError(f"beta must be a finite number > 0, got {beta!r}. Set e.g. beta=0.1.")
    return float(beta)


# The rest of the field, built from parts (imported last: they use the family above).
from gpo_lab.losses.field import FIELD, FieldEntry, describe  # noqa: E402
from gpo_lab.losses.margins import MarginLoss  # noqa: E402
from gpo_lab.losses.parts import AOTLoss, ChosenNLL, NotOnRho, PairFunctionLoss, WeightedSum  # noqa: E402

__all__ = [
    "ALIASES",
    "AOTLoss",
    "BUILTIN_FUNCTIONS",
    "ChosenNLL",
    "Derivatives",
    "EXACT_DERIVATIVES",
    "FIELD",
    "FieldEntry",
    "GPOLoss",
    "GPOMember",
    "InvalidGPOLoss",
    "MEMBERS",
    "MarginLoss",
    "NotOnRho",
    "PairFunctionLoss",
    "WeightedSum",
    "check_gpo_function",
    "describe",
    "numerical_derivatives",
]
