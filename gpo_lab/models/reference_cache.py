"""Reference log-probs of a dataset's pairs, computed once and reused from disk.

pi_ref is frozen, so log pi_ref(y|x) of every pair is a fixed number: computing it at every step
(or in every job of a sweep) is wasted work. The cache key is a hash of everything that determines
the values (:func:`gpo_lab.models.fingerprints.cache_spec`): the reference weights (and config), the
pairs' token ids, the tokenizer and the truncation settings, the attention implementation, the run's
precision, the layout (packed or plain rows) and the scoring code's version; change any of them and a
new entry is computed. The values are computed under the same precision (autocast or weight dtype) as
the policy is trained in (:mod:`gpo_lab.models.reference_logps`), so that rho is 0 at the first step;
that holds only where the reference's numbers do not depend on what a pair is batched with, which
:func:`gpo_lab.models.batch_dependence.batch_dependence` checks at start-up. Entries live in the locked
content-addressed cache of :mod:`gpo_lab.store.cache` (a partial entry is never read; jobs that start
together compute once while the others wait and then read it), each one safetensors file. An entry
that does not read back as ``(pairs, 2)`` values is moved aside and computed again.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gpo_lab.data.columns import REFERENCE_LOGPS
from gpo_lab.models.fingerprints import cache_spec, weights_fingerprint
from gpo_lab.models.reference_logps import compute_on
from gpo_lab.scoring.segment_attention import attention_name
from gpo_lab.store.cache import CACHE_ENV, ContentCache, spec_key

log = logging.getLogger(__name__)

# How a user points this cache elsewhere or does without it (conf/config.yaml's reference_cache block).
FIX = (
    ", or set reference_cache.dir to one, or switch this cache off with reference_cache.enabled=false "
    "(the reference then scores every training batch)"
)
COLUMN = REFERENCE_LOGPS
SPLITS = {"train": "train_set", "validation": "val_set"}


def default_cache_dir() -> Path:
    """``$GPO_LAB_CACHE/reference_logps``, or ``.cache/gpo_lab/reference_logps`` when the variable is unset."""
    return Path(os.environ.get(CACHE_ENV, ".cache/gpo_lab")) / "reference_logps"


class ReferenceLogpCache:
    """Entries ``logps-<key>/logps.safetensors``: a float32 tensor (pairs, 2), keyed by its spec."""

    KIND = "logps"
    VALUES_FILE = "logps.safetensors"

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.store = ContentCache(self.root, FIX)

    def path(self, key: str) -> Path:
        return self.store.entry(self.KIND, key) / self.VALUES_FILE

    def load(self, key: str) -> torch.Tensor | None:
        """The entry for ``key``, or None if there is none (temporary files of a writer are never looked at)."""
        path = self.path(key)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor("logps")

    def get_or_compute(self, spec: dict[str, Any], compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """The values for ``spec``: read from the cache, or computed by ``compute()`` and stored.

        Returns the values and whether this call computed them. Concurrent callers with the same
        spec serialise on a file lock: the first computes, the others read its entry. An entry that
        cannot be read, or holds values of another shape, is moved aside and computed again.
        """

        def build(directory: Path) -> None:
            values = self._checked(compute().detach().to("cpu", torch.float32).contiguous(), spec)
            save_file({"logps": values}, str(directory / self.VALUES_FILE))

        def read(entry: Path) -> torch.Tensor:
            with safe_open(str(entry / self.VALUES_FILE), framework="pt") as handle:
                return self._checked(handle.get_tensor("logps"), spec)

        values, _, computed = self.store.read_or_build(self.KIND, spec, build, read)
        return values, computed

    @staticmethod
    def _checked(values: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
        if tuple(values.shape) != (spec["num_pairs"], 2):
            raise ValueError(
                f"Reference log-probs of shape {tuple(values.shape)} for {spec['num_pairs']} pairs; "
                "expected (pairs, 2)."
            )
        return values


def attach_reference_logps(
    datamodule,
    reference: torch.nn.Module,
    cache: ReferenceLogpCache | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    precision: str | int = "32-true",
) -> dict[str, str]:
    """Give the data module's encoded splits a ``reference_logps`` column, from the cache or computed once.

    Its batches then carry ``reference_logps`` and training never runs the reference. Each split
    records in ``datamodule.stats`` whether it was computed or reused. On a miss the reference is
    moved to ``device`` (the accelerator when there is one) for the computation and back afterwards.
    The values are computed under the trainer's ``precision`` and in the data module's layout
    (``packing``), as the policy's log-probs will be.
    """
    cache = cache or ReferenceLogpCache()
    fingerprint = weights_fingerprint(reference)
    packing = bool(getattr(datamodule, "packing", True))
    attention = attention_name(reference)
    outcome = {}
    for split, attribute in SPLITS.items():
        pairs = getattr(datamodule, attribute, None)
        if pairs is None or len(pairs) == 0:
            continue
        if COLUMN in pairs.column_names:
            pairs = pairs.remove_columns(COLUMN)
        spec = cache_spec(
            fingerprint, pairs, datamodule.tokenizer, datamodule.truncation, attention, precision, packing
        )
        started = time.perf_counter()
        values, computed = cache.get_or_compute(
            spec,
            functools.partial(
                compute_on, reference, pairs, datamodule.tokenizer.pad_token_id, batch_size, device, packing, precision
            ),
        )
        outcome[split] = "computed" if computed else "cached"
        log.info(
            "Reference log-probs of %d %s pairs: %s in %.1f s (%s).",
            len(pairs),
            split,
            outcome[split],
            time.perf_counter() - started,
            cache.path(spec_key(spec)),
        )
        setattr(datamodule, attribute, pairs.add_column(COLUMN, values.tolist()))
    stats = getattr(datamodule, "stats", None)
    if isinstance(stats, dict):
        stats.update({f"reference_logps_{split}": state for split, state in outcome.items()})
    return outcome
