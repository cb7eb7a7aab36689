"""What identifies a reference's log-probs on a dataset: fingerprints of the weights, the pairs and the
tokenizer, and the cache spec that gathers them with every other setting that changes the values.

The spec's hash is the key of an entry of :class:`gpo_lab.models.reference_cache.ReferenceLogpCache`;
change any input and a new entry is computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import torch
import transformers

from gpo_lab.data.columns import column_values
from gpo_lab.scoring.fast_path_checks import SCORING_VERSION

FORMAT_VERSION = 3  # 2: entries of the shared content cache (directories); 3: keyed by attention, precision, layout
ID_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def _hasher():
    return hashlib.blake2b(digest_size=16)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's class, config and every tensor of its state dict (names, dtypes, shapes, bytes).

    A reference loaded on demand (:class:`gpo_lab.models.reference.LazyReference`, which fingerprints what it
    loads with this function) is read through ``loaded``, the model it stands for.
    """
    model = getattr(model, "loaded", model)
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
    for column in ID_COLUMNS:
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
    precision: str | int = "32-true",
    packing: bool = True,
) -> dict[str, Any]:
    """Everything that determines the cached values; its hash is the key."""
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
