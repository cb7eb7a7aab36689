"""The start-up check of a user's f: finite, convex and decreasing at 0, measured, never assumed.

Three ways the first version could be skipped or fooled are closed here: a function is checked
whatever its name, the convexity tolerance is the rounding error of each stencil (the local scale
of f, not its largest value on the grid), and f is also evaluated between the grid nodes. No finite
sample proves convexity; this one catches what a plausible mistake produces.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gpo_lab.errors import ConfigError
from gpo_lab.losses.catalog import Derivatives

LossFunction = Callable[[torch.Tensor], torch.Tensor]


class InvalidGPOLoss(ConfigError):
    """Raised at start-up when a function does not define a GPO loss."""


def numerical_derivatives(f: LossFunction, h: float = 1e-4) -> Derivatives:
    """Central finite differences at 0 in float64; exact enough to check signs and ratios."""
    z = torch.tensor([-h, 0.0, h], dtype=torch.float64)
    lo, mid, hi = (float(v) for v in f(z))
    return Derivatives(mid, (hi - lo) / (2 * h), (hi - 2 * mid + lo) / h**2)


def sample_points(grid_radius: float, points: int, seed: int = 0) -> torch.Tensor:
    """The grid nodes, the midpoints between them and one random point in every cell, sorted (float64)."""
    nodes = torch.linspace(-grid_radius, grid_radius, points, dtype=torch.float64)
    step = nodes[1] - nodes[0]
    generator = torch.Generator().manual_seed(seed)
    jitter = nodes[:-1] + step * torch.rand(points - 1, generator=generator, dtype=torch.float64)
    return torch.sort(torch.cat([nodes, nodes[:-1] + step / 2, jitter])).values


def check_gpo_function(
    name: str, f: LossFunction, grid_radius: float = 10.0, points: int = 2001, allow_nonconvex: bool = False
) -> None:
    """Refuse f unless it is finite, convex and decreasing at 0 (f'(0) < 0).

    ``allow_nonconvex`` waives convexity and, with it, the slope at 0 (DiscoPOP's f rises at 0):
    f must then only reward a larger margin overall, f(-grid_radius) > f(grid_radius).
    """
    z = sample_points(grid_radius, points)
    try:
        values = f(z)
    except Exception as error:
        raise InvalidGPOLoss(f"Loss {name!r} fails on a float64 tensor: {error}") from error
    if not isinstance(values, torch.Tensor) or values.shape != z.shape:
        raise InvalidGPOLoss(f"Loss {name!r} must map a tensor z to a tensor of the same shape, elementwise.")
    values = values.to(torch.float64)
    if not torch.isfinite(values).all():
        bad = z[~torch.isfinite(values)][0].item()
        raise InvalidGPOLoss(f"Loss {name!r} is not finite at z={bad:.6g}.")
    if allow_nonconvex:
        if not values[0] > values[-1]:
            raise InvalidGPOLoss(
                f"Loss {name!r} has f({-grid_radius:g}) <= f({grid_radius:g}): it does not reward a larger margin."
            )
        return
    check_convex(name, z, values)
    slope = numerical_derivatives(f).d1
    if not slope < 0:
        raise InvalidGPOLoss(
            f"Loss {name!r} has f'(0) = {slope:.4g}, but a GPO loss needs f'(0) < 0 "
            "(it must reward a larger preference margin)."
        )


def check_convex(name: str, z: torch.Tensor, values: torch.Tensor) -> None:
    """Every divided second difference of three neighbours is >= 0, up to the stencil's own rounding error.

    The points need not be equally spaced: f is convex iff every slope is no smaller than the one
    before it. The tolerance scales with the three values of each stencil, so a huge f far away
    cannot hide a negative curvature near 0.
    """
    left, mid, right = values[:-2], values[1:-1], values[2:]
    h_left, h_right = z[1:-1] - z[:-2], z[2:] - z[1:-1]
    # Second divided difference times (h_left + h_right) / 2: comparable to f'' h^2 on a uniform grid.
    curvature = (right - mid) / h_right - (mid - left) / h_left
    rounding = 1e-9 * (1 + left.abs() + 2 * mid.abs() + right.abs()) * (1 / h_left + 1 / h_right)
    bad = curvature < -rounding
    if bad.any():
        where = z[1:-1][bad][0].item()
        raise InvalidGPOLoss(
            f"Loss {name!r} is not convex: its second difference is negative near z={where:.3g}. "
            "A GPO loss needs a convex f with f'(0) < 0 (loss.allow_nonconvex=true accepts a non-convex f "
            "on purpose; the offline-regularization theory then no longer applies)."
        )
