"""Reference log-probs of a dataset's pairs, computed once and reused from disk.

pi_ref is frozen, so log pi_ref(y|x) of every pair is a fixed number: computing it at every step
(or in every job of a sweep) is wasted work. The cache key is a hash of everything that determines
the values: the reference weights (and config), the pairs' token ids, the tokenizer and the
truncation settings, the attention implementation, the run's precision, the layout (packed or
plain rows) and the scoring code's version; change any of them and a new entry is computed. The
values are computed under the same precision (autocast or weight dtype) as the policy is trained
in, so that rho is 0 at the first step; that holds only where the reference's numbers do not depend
on what a pair is batched with, which :func:`batch_dependence` checks at start-up (the sdpa kernel's
bf16 rounding on CPU varies with the batch's padding). Entries live in the locked
content-addressed cache of :mod:`gpo_lab.store.cache` (a partial entry is never read; jobs that start
together compute once while the others wait and then read it), each one safetensors file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gpo_lab.data.columns import REFERENCE_LOGPS, column_values
from gpo_lab.models.reference import LazyReference
from gpo_lab.scoring import fast_path_checks as verify
from gpo_lab.scoring.batches import Pair, PlainPairs
from gpo_lab.scoring.fast_path_checks import SCORING_VERSION
from gpo_lab.scoring.packing import PackedPairs
from gpo_lab.scoring.startup import training_precision
from gpo_lab.store.cache import ContentCache, spec_key

log = logging.getLogger(__name__)

CACHE_ENV = "GPO_LAB_CACHE"
FORMAT_VERSION = 3  # 2: entries of the shared content cache (directories); 3: keyed by attention, precision, layout
COLUMN = REFERENCE_LOGPS
SPLITS = {"train": "train_set", "validation": "val_set"}
IDS = ("prompt_ids", "chosen_ids", "rejected_ids")
# The start-up check of batch dependence: PROBE_PAIRS pairs of the data, from the shortest to the longest, are
# scored alone and then in one batch with a pair longer than all of them (so every probe row is padded). A
# value may move by BATCH_ROUNDINGS float32 roundings (float32's eps times the value's magnitude). Measured on
# CPU with the smoke run's Llama (5 seeds, packed and plain rows): float32 (sdpa, eager) and eager bf16 move by
# at most 1; sdpa under bf16-mixed, whose kernel rounds differently once a row is padded, by 18 to 499.
PROBE_PAIRS = 8
BATCH_ROUNDINGS = 8


def default_cache_dir() -> Path:
    """``$GPO_LAB_CACHE/reference_logps``, or ``.cache/gpo_lab/reference_logps`` when the variable is unset."""
    return Path(os.environ.get(CACHE_ENV, ".cache/gpo_lab")) / "reference_logps"


# ----------------------------------------------------------------------------------- fingerprints
def _hasher():
    return hashlib.blake2b(digest_size=16)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's class, config and every tensor of its state dict (names, dtypes, shapes, bytes)."""
    if isinstance(model, LazyReference):
        model = model.loaded
    digest = _hasher()
    digest.update(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        settings = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    state = model.base_state_dict() if hasattr(model, "base_state_dict") else model.state_dict()  # LoRA: base weights
    for name, tensor in sorted(state.items()):
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def pairs_fingerprint(pairs) -> str:
    """A hash of the pairs' token ids, in order (the encoded dataset: prompt_ids, chosen_ids, rejected_ids)."""
    digest = _hasher()
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        for ids in column_values(pairs, column):
            array = np.asarray(ids, dtype=np.int64)
            digest.update(np.int64(array.size).tobytes())
            digest.update(array.tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition (vocabulary, merges, normalization), specials and chat template."""
    digest = _hasher()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    extras = {
        "class": type(tokenizer).__name__,
        "special": getattr(tokenizer, "special_tokens_map", {}),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    digest.update(json.dumps(extras, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cache_spec(
    reference_fingerprint: str,
    pairs,
    tokenizer,
    truncation,
    attention: str | None = None,
    precision: str = "32-true",
    packing: bool = True,
) -> dict[str, Any]:
    """Everything that determines the cached values; its hash is the key."""
    import transformers

    truncation = dataclasses.asdict(truncation) if dataclasses.is_dataclass(truncation) else dict(truncation)
    return {
        "format": FORMAT_VERSION,
        "reference": reference_fingerprint,
        "pairs": pairs_fingerprint(pairs),
        "num_pairs": len(pairs),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "truncation": truncation,
        "attention": attention,
        "precision": str(precision),
        "packing": bool(packing),
        "scoring": SCORING_VERSION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


# ----------------------------------------------------------------------------------- the store
class ReferenceLogpCache:
    """Entries ``logps-<key>/logps.safetensors``: a float32 tensor (pairs, 2), keyed by its spec."""

    KIND = "logps"
    VALUES_FILE = "logps.safetensors"

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.store = ContentCache(self.root)

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
        spec serialise on a file lock: the first computes, the others read its entry.
        """
        computed: list[torch.Tensor] = []

        def build(directory: Path) -> None:
            values = self._checked(compute().detach().to("cpu", torch.float32).contiguous(), spec)
            save_file({"logps": values}, str(directory / self.VALUES_FILE))
            computed.append(values)

        _, built = self.store.get_or_build(self.KIND, spec, build)
        return (computed[0], True) if built else (self._checked(self.load(spec_key(spec)), spec), False)

    @staticmethod
    def _checked(values: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
        if tuple(values.shape) != (spec["num_pairs"], 2):
            raise ValueError(
                f"Reference log-probs of shape {tuple(values.shape)} for {spec['num_pairs']} pairs; "
                "expected (pairs, 2)."
            )
        return values


# ----------------------------------------------------------------------------------- computing and attaching
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
    prompts, chosen, rejected = (column_values(pairs, c) for c in IDS)
    order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(chosen[i]) + len(rejected[i])))
    out = torch.empty((len(order), 2), dtype=torch.float32)
    with _scoring(reference, precision) as model:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            out[index] = _scored(model, [(prompts[i], chosen[i], rejected[i]) for i in index], pad_id, packing)
    return out


@contextlib.contextmanager
def _scoring(reference: torch.nn.Module, precision: str | int) -> Iterator[torch.nn.Module]:
    """The reference to score with: in eval mode, without gradients, under ``precision`` (as the policy)."""
    was_training = reference.training
    reference.eval()
    try:
        with torch.no_grad(), training_precision(reference, precision) as model:
            yield model
    finally:
        reference.train(was_training)


def _scored(model: torch.nn.Module, pairs: Sequence[Pair], pad_id: int, packing: bool) -> torch.Tensor:
    """(pairs, 2) float32 on the CPU: ``model``'s log-probs of each pair's chosen and rejected response, one batch."""
    batch = (PackedPairs if packing else PlainPairs).from_pairs(pairs, pad_id)
    values = batch.to(next(model.parameters()).device).score(model).float().cpu()
    return values.view(2, len(pairs)).T


def batch_dependence(
    reference: torch.nn.Module,
    pairs,
    pad_id: int,
    packing: bool = True,
    precision: str | int = "32-true",
    device: str | torch.device | None = None,
) -> str | None:
    """None when ``reference`` scores pairs the same whatever they are batched with, else how far they moved.

    Cached values come from the cache's batches, the policy's from the training batches; they are equal
    at the first step only if a pair's log-probs do not depend on its batch. :data:`PROBE_PAIRS` of
    ``pairs``, from the shortest to the longest, are scored alone and in one batch with a longer pair
    (every probe row padded), under ``precision``, in the cache's layout (``packing``) and on ``device``
    (where the cache is computed); a value may move by :data:`BATCH_ROUNDINGS` float32 roundings.
    """
    probes = _probe_pairs(pairs)
    if not probes:
        return None
    started = time.perf_counter()
    with _placed(reference, device), _scoring(reference, precision) as model:
        filler = _longer_pair(model, probes)
        alone = torch.cat([_scored(model, [pair], pad_id, packing) for pair in probes])
        batched = _scored(model, [*probes, filler], pad_id, packing)[: len(probes)]
        where = verify.describe(verify.context(model))
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
    lengths = np.sum([_lengths(pairs, column) for column in IDS], axis=0)
    order = np.argsort(lengths, kind="stable")
    picks = sorted({int(order[round(k * (len(order) - 1) / max(PROBE_PAIRS - 1, 1))]) for k in range(PROBE_PAIRS)})
    if isinstance(pairs, datasets.Dataset):
        subset: Any = pairs.select(picks)
    else:
        subset = {column: [pairs[column][i] for i in picks] for column in IDS}
    return list(zip(*(column_values(subset, column) for column in IDS)))


def _lengths(pairs, column: str) -> np.ndarray:
    """The length of every row of ``column`` (of a dataset without reading its ids)."""
    if isinstance(pairs, datasets.Dataset):
        return pc.list_value_length(pairs.with_format("arrow")[column]).to_numpy(zero_copy_only=False)
    return np.array([len(ids) for ids in pairs[column]])


def _longer_pair(model: torch.nn.Module, probes: Sequence[Pair]) -> Pair:
    """A pair :data:`verify.MIN_PROBE_SPAN` tokens longer than every probe (within the model's positions): the
    longest probe's ids over and over, as a long prompt and one-token responses (each of its rows is longer too)."""
    ids = [int(i) for i in max((list(p) + list(c) + list(r) for p, c, r in probes), key=len)]
    total = max(min([len(ids) + verify.MIN_PROBE_SPAN, *verify.position_limits(model)]), 3)
    ids = (ids * (total // len(ids) + 1))[:total]
    return ids[:-2], ids[-2:-1], ids[-1:]


@contextlib.contextmanager
def _placed(reference: torch.nn.Module, device: str | torch.device | None) -> Iterator[None]:
    """``reference`` on ``device`` (by default the GPU when there is one) for the block, then back where it was."""
    home = next(reference.parameters()).device
    target = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else home)
    reference.to(target)
    try:
        yield
    finally:
        reference.to(home)


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
    attention = getattr(getattr(reference, "config", None), "_attn_implementation", None)
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
                _compute_on, reference, pairs, datamodule.tokenizer.pad_token_id, batch_size, device, packing, precision
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


def _compute_on(reference, pairs, pad_id, batch_size, device, packing, precision) -> torch.Tensor:
    with _placed(reference, device):
        return compute_reference_logps(reference, pairs, pad_id, batch_size, packing, precision)
