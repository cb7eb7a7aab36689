"""Whether a reference scores a pair the same whatever it is batched with: the check that decides whether
its cached log-probs may stand in for the training batches' own.

Cached values come from the cache's batches, the policy's from the training batches; rho is 0 at the
first step only if a pair's log-probs do not depend on its batch (the sdpa kernel's bf16 rounding on CPU
varies with the batch's padding, for one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from gpo_lab.data.columns import column_values
from gpo_lab.models.fingerprints import ID_COLUMNS
from gpo_lab.models.reference_logps import placed_on, score_pairs, scoring_mode
from gpo_lab.scoring.fast_path_checks import MIN_PROBE_SPAN, context, describe, position_limits
from gpo_lab.scoring.rows import Pair

log = logging.getLogger(__name__)

# PROBE_PAIRS pairs of the data, from the shortest to the longest, are scored alone and then in one batch with a
# pair longer than all of them (so every probe row is padded). A value may move by BATCH_ROUNDINGS float32
# roundings (float32's eps times the value's magnitude). Measured on CPU with the smoke run's Llama (5 seeds,
# packed and plain rows): float32 (sdpa, eager) and eager bf16 move by at most 1; sdpa under bf16-mixed, whose
# kernel rounds differently once a row is padded, by 18 to 499.
PROBE_PAIRS = 8
BATCH_ROUNDINGS = 8


def batch_dependence(
    reference: torch.nn.Module,
    pairs,
    pad_id: int,
    packing: bool = True,
    precision: str | int = "32-true",
    device: str | torch.device | None = None,
) -> str | None:
    """None when ``reference`` scores pairs the same whatever they are batched with, else how far they moved.

    :data:`PROBE_PAIRS` of ``pairs``, from the shortest to the longest, are scored alone and in one batch
    with a longer pair (every probe row padded), under ``precision``, in the cache's layout (``packing``)
    and on ``device`` (where the cache is computed); a value may move by :data:`BATCH_ROUNDINGS` float32
    roundings.
    """
    probes = _probe_pairs(pairs)
    if not probes:
        return None
    started = time.perf_counter()
    with placed_on(reference, device), scoring_mode(reference, precision) as model:
        filler = _longer_pair(model, probes)
        alone = torch.cat([score_pairs(model, [pair], pad_id, packing) for pair in probes])
        batched = score_pairs(model, [*probes, filler], pad_id, packing)[: len(probes)]
        where = describe(context(model))
    alone, batched = alone.double(), batched.double()
    moved = (batched - alone).abs()
    roundings = (moved / (torch.finfo(torch.float32).eps * alone.abs().clamp_min(1.0))).max().item()
    if not roundings <= BATCH_ROUNDINGS:  # NaN (an infinite or undefined log-prob) counts as moved
        return (
            f"the reference's log-probs depend on what a pair is batched with ({where}: a pair moved by "
            f"{moved.max().item():.3g} nats, {roundings:.0f} float32 roundings, when batched with a longer one; "
            f"tolerance {BATCH_ROUNDINGS}), so cached values would differ from the training batches' and the "
            "reference is scored in each training batch"
        )
    log.info(
        "Reference log-probs do not depend on the batch (%s; %d probe pairs moved by at most %.3g nats, "
        "%.1f float32 roundings; checked in %.2f s): the cache is used.",
        where,
        len(probes),
        moved.max().item(),
        roundings,
        time.perf_counter() - started,
    )
    return None


def _probe_pairs(pairs) -> list[Pair]:
    """Up to :data:`PROBE_PAIRS` of ``pairs``, evenly spaced from the shortest to the longest."""
    if pairs is None or len(pairs) == 0:
        return []
    lengths = np.sum([_lengths(pairs, column) for column in ID_COLUMNS], axis=0)
    order = np.argsort(lengths, kind="stable")
    picks = sorted({int(order[round(k * (len(order) - 1) / max(PROBE_PAIRS - 1, 1))]) for k in range(PROBE_PAIRS)})
    if isinstance(pairs, datasets.Dataset):
        subset: Any = pairs.select(picks)
    else:
        subset = {column: [pairs[column][i] for i in picks] for column in ID_COLUMNS}
    return list(zip(*(column_values(subset, column) for column in ID_COLUMNS)))


def _lengths(pairs, column: str) -> np.ndarray:
    """The length of every row of ``column`` (of a dataset without reading its ids)."""
    if isinstance(pairs, datasets.Dataset):
        return pc.list_value_length(pairs.with_format("arrow")[column]).to_numpy(zero_copy_only=False)
    return np.array([len(ids) for ids in pairs[column]])


def _longer_pair(model: torch.nn.Module, probes: Sequence[Pair]) -> Pair:
    """A pair ``MIN_PROBE_SPAN`` tokens longer than every probe (within the model's positions): the longest
    probe's ids over and over, as a long prompt and one-token responses (each of its rows is longer too)."""
    ids = [int(i) for i in max((list(p) + list(c) + list(r) for p, c, r in probes), key=len)]
    total = max(min([len(ids) + MIN_PROBE_SPAN, *position_limits(model)]), 3)
    ids = (ids * (total // len(ids) + 1))[:total]
    return ids[:-2], ids[-2:-1], ids[-1:]
