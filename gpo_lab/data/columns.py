"""Columns of the encoded pairs: reading one as a Python list through Arrow, and the reference
log-probs column that the reference cache adds.

``dataset[name]`` is a lazy column in datasets 4 and later: iterating it formats one row at a time,
about ten times slower than converting the Arrow column at once, which costs seconds on the
thousands of pairs a job reads at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import torch

REFERENCE_LOGPS = "reference_logps"  # per pair: [log pi_ref(chosen|x), log pi_ref(rejected|x)]


def column_values(dataset: datasets.Dataset | Mapping[str, Sequence[Any]], name: str) -> list[Any]:
    """The values of column ``name`` in row order (selections and shuffles included); a mapping of
    column names to values passes its column through."""
    if isinstance(dataset, datasets.Dataset):
        return dataset.with_format("arrow")[name].to_pylist()
    return list(dataset[name])


def batch_reference_logps(pairs: list[dict]) -> torch.Tensor:
    """The cached values of a list of pairs as GPOModule reads them: (2B,), chosen first, then rejected."""
    values = torch.tensor([p[REFERENCE_LOGPS] for p in pairs], dtype=torch.float32)
    return torch.cat([values[:, 0], values[:, 1]])
