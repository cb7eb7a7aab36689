"""The loss functions figure: each loss's f as it is, and rescaled to f(0) = 0, f'(0) = -1.

The curves come from the runs' own records (``summary.json``'s ``loss_function``: f on a grid of
z, f(0), f'(0), f''(0); see :mod:`~gpo_lab.report.loss_shapes`), so that the report draws any
f(beta * rho) loss, a user's own included, without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from gpo_lab.report.axes import MissingMetric
from gpo_lab.report.figure_style import LINESTYLES, loss_colors
from gpo_lab.report.loss_shapes import LossShape


def loss_functions(shapes: Mapping[str, LossShape]) -> Figure:
    """The functions f of ``shapes`` (loss -> shape, in drawing order) that have a recorded curve.

    Rescaled, each f is -z + (f''(0)/|f'(0)|) z²/2 + ... near 0: the curvature at the origin is
    the weight of the offline regularizer the loss applies per unit of beta.
    """
    drawn = {loss: shape for loss, shape in shapes.items() if shape.has_curve}
    if not drawn:
        raise MissingMetric(
            "no job recorded its loss function f (summary.json's loss_function, written at the start of training)"
        )
    colors = loss_colors(drawn)
    figure = Figure(figsize=(12, 5.4), layout="constrained")
    raw, scaled = figure.subplots(1, 2)
    for i, (loss, shape) in enumerate(drawn.items()):
        z, values = np.asarray(shape.z), np.asarray(shape.f)
        style = dict(color=colors[loss], ls=LINESTYLES[i % 2], lw=1.8)
        raw.plot(z, values, label=loss, **style)
        ratio = shape.regularization_ratio
        scaled.plot(z, (values - shape.f0) / abs(shape.d1), label=f"{loss}: f''(0)/|f'(0)| = {ratio:.3g}", **style)
    z = np.linspace(-3, 3, 61)
    scaled.plot(z, -z, color="0.4", lw=1, ls=(0, (1, 2)), label="−z (first-order term)")
    raw.set_ylim(-0.2, 6)
    scaled.set_ylim(-3.2, 4)
    raw.set_xlabel("z = β·ρ")
    raw.set_ylabel("f(z)")
    raw.set_title("GPO loss functions f")
    scaled.set_xlabel("z = β·ρ")
    scaled.set_ylabel("(f(z) − f(0)) / |f'(0)|")
    scaled.set_title("rescaled: the curvature at 0 sets the offline regularization")
    for ax in (raw, scaled):
        ax.axvline(0, color="0.7", lw=0.8)
        ax.grid(alpha=0.3)
    figure.legend(*scaled.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=4)
    return figure
