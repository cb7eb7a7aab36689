"""A stop at the first non-finite loss or gradient, before the update is applied."""

from __future__ import annotations

import torch


class NonFiniteError(FloatingPointError):
    """A NaN or infinity in the loss or the gradients; the run stops before applying it."""


def check_finite_loss(step: int, losses: torch.Tensor, rho: torch.Tensor) -> None:
    if torch.isfinite(losses).all():
        return
    bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    raise NonFiniteError(
        f"Non-finite loss at step {step}: examples {bad[:8]} of the batch have loss "
        f"{losses[bad[:8]].tolist()} with rho {rho.detach()[bad[:8]].tolist()}. The last good checkpoint is kept; "
        "lower optim.lr or beta, or check the data of this batch."
    )


def check_finite_gradients(step: int, named_parameters) -> torch.Tensor:
    """The global gradient norm, after making sure no gradient holds a NaN or an infinity.

    The norms come from one fused call (as ``clip_grad_norm_`` computes them); the parameters are
    named only when one is not finite.
    """
    named = [(name, parameter.grad.detach()) for name, parameter in named_parameters if parameter.grad is not None]
    if not named:
        return torch.zeros(())
    norms = torch._foreach_norm([grad for _, grad in named], 2)
    total = torch.linalg.vector_norm(torch.stack(norms))
    if torch.isfinite(total):
        return total
    bad = [name for (name, _), norm in zip(named, norms) if not torch.isfinite(norm)]
    raise NonFiniteError(
        f"Non-finite gradient at step {step} in {len(bad)} parameters, e.g. {', '.join(bad[:4])}. The update "
        "was not applied and the last good checkpoint is kept; lower optim.lr or set trainer.gradient_clip_val."
    )
