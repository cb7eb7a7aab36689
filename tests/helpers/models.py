"""Small models saved like hub checkpoints, and a stand-in hub that serves them under hub names."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForSequenceClassification

from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer

# A tiny causal LM config, as the synthetic task's model group gives one (for SFT and cache tests).
TINY_MODEL = {
    "_target_": "gpo_lab.models.tiny.tiny_causal_lm",
    "hidden_size": 16,
    "num_layers": 1,
    "num_heads": 2,
    "max_position_embeddings": 32,
}


def tiny_reward_model(path: Path, seed: int = 1) -> Path:
    """A randomly initialised sequence classifier saved like a hub reward model (1 output)."""
    tokenizer = byte_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_causal_lm_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny causal LM and its byte tokenizer saved like a hub checkpoint (model=hf model.name=PATH loads it)."""
    tokenizer = byte_tokenizer()
    torch.manual_seed(seed)
    tiny_causal_lm(tokenizer, hidden_size=32, num_layers=1, num_heads=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def serve_hub_names(monkeypatch, checkpoints: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """Make ``from_pretrained(NAME)`` of the Auto classes load ``checkpoints[NAME]``: a config that names hub
    models builds offline. Returns what was asked for, in order: (Auto class, NAME, whether remote code was
    allowed); a name not served fails the test."""
    requested: list[tuple[str, str, bool]] = []
    for auto in ("AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSequenceClassification"):
        cls = getattr(transformers, auto)

        def from_pretrained(name, *args, _original=cls.from_pretrained, _auto=auto, **kwargs):
            requested.append((_auto, str(name), bool(kwargs.get("trust_remote_code", False))))
            return _original(str(checkpoints[str(name)]), *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", staticmethod(from_pretrained))
    return requested
