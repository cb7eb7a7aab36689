"""Computing a reference's log-probs of a dataset's pairs, as the policy's will be computed in training.

The values are scored under the run's precision (autocast or cast weights) and in the training batches'
layout (prefix-shared packed rows, or plain ones), so that rho is 0 at the first step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from gpo_lab.data.columns import column_values
from gpo_lab.models.fingerprints import ID_COLUMNS
from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.packing import PackedPairs
from gpo_lab.scoring.precision import training_precision
from gpo_lab.scoring.rows import Pair


def compute_reference_logps(
    reference: torch.nn.Module,
    pairs,
    pad_id: int,
    batch_size: int = 16,
    packing: bool = True,
    precision: str | int = "32-true",
) -> torch.Tensor:
    """(pairs, 2) float32: log pi_ref of each pair's chosen and rejected response, under ``precision``.

    With ``packing``, prefix-shared rows (plain ones when the model fails the start-up check), as
    the training batches; else plain rows. Pairs are batched longest first, so each batch holds
    pairs of similar length (little padding).
    """
    prompts, chosen, rejected = (column_values(pairs, c) for c in ID_COLUMNS)
    order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(chosen[i]) + len(rejected[i])))
    out = torch.empty((len(order), 2), dtype=torch.float32)
    # 92k TL;DR pairs on a 1B reference take a while: a bar, updated every 10 s at most (readable in a log file).
    bar = tqdm(total=len(order), desc="reference log-probs", unit="pair", mininterval=10, disable=len(order) < 1024)
    with scoring_mode(reference, precision) as model, bar:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            out[index] = score_pairs(model, [(prompts[i], chosen[i], rejected[i]) for i in index], pad_id, packing)
            bar.update(len(index))
    return out


@contextlib.contextmanager
def scoring_mode(reference: torch.nn.Module, precision: str | int) -> Iterator[torch.nn.Module]:
    """The reference to score with: in eval mode, without gradients, under ``precision`` (as the policy)."""
    was_training = reference.training
    reference.eval()
    try:
        with torch.no_grad(), training_precision(reference, precision) as model:
            yield model
    finally:
        reference.train(was_training)


def score_pairs(model: torch.nn.Module, pairs: Sequence[Pair], pad_id: int, packing: bool) -> torch.Tensor:
    """(pairs, 2) float32 on the CPU: ``model``'s log-probs of each pair's chosen and rejected response, one batch."""
    batch = (PackedPairs if packing else PlainPairs).from_pairs(pairs, pad_id)
    values = batch.to(next(model.parameters()).device).score(model).float().cpu()
    return values.view(2, len(pairs)).T


@contextlib.contextmanager
def placed_on(reference: torch.nn.Module, device: str | torch.device | None) -> Iterator[None]:
    """``reference`` on ``device`` (by default the GPU when there is one) for the block, then back where it was."""
    home = next(reference.parameters()).device
    target = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else home)
    reference.to(target)
    try:
        yield
    finally:
        reference.to(home)


def compute_on(
    reference: torch.nn.Module,
    pairs,
    pad_id: int,
    batch_size: int,
    device: str | torch.device | None,
    packing: bool,
    precision: str | int,
) -> torch.Tensor:
    """:func:`compute_reference_logps` with the reference moved to ``device`` for the computation."""
    with placed_on(reference, device):
        return compute_reference_logps(reference, pairs, pad_id, batch_size, packing, precision)
