"""Hugging Face models by hub name or local path: causal LMs, encoder-decoders and their tokenizers."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from gpo_lab.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODEL_KEYS = "model.name (reference.model.name for reference=model)"


def looks_local(name: str) -> bool:
    """Whether ``name`` can only be a path: a hub id is ``name`` or ``namespace/name``, never absolute,
    never ``./``, ``../`` or ``~``, never with two slashes or a backslash."""
    return (
        name.startswith((".", "~")) or os.path.isabs(name) or name.count("/") > 1 or "\\" in name or name.endswith("/")
    )


def model_location(name, key: str = MODEL_KEYS, saved_model: bool = True) -> str:
    """``name`` as Hugging Face should read it, after checking a local path ourselves.

    A path that does not exist would otherwise be read as a hub id and refused as a malformed one
    ("Repo id must use alphanumeric chars"); a file where a directory belongs, or (``saved_model``)
    a directory with no model config, fails deep inside transformers pointing at the hub. Hub ids
    pass through unchanged.
    """
    name = str(name)
    path = Path(name).expanduser()
    if not path.exists():
        if not looks_local(name):
            return name
        raise ConfigError(
            f"{key}: no such directory: {name}. Set it to the directory of a saved model (the one holding "
            "config.json, as written by save_pretrained) or to a hub name such as EleutherAI/pythia-160m."
        )
    if not path.is_dir():
        if not looks_local(name) and "/" not in name:
            return name  # a file that happens to bear a hub id's name, in the working directory
        raise ConfigError(
            f"{key}: {name} is a file, not a directory. Set it to the directory that holds the model's "
            "config.json and weights (as written by save_pretrained), not to one of its files."
        )
    if saved_model and not any((path / config).is_file() for config in ("config.json", "adapter_config.json")):
        raise ConfigError(
            f"{key}: {name} is a directory but holds no config.json, so it is not a saved model. Set it to the "
            "directory written by save_pretrained (or to a hub name such as EleutherAI/pythia-160m)."
        )
    return str(path)


def hf_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False, **kwargs):
    """A hub or local tokenizer; a pad token is added from EOS when the model has none."""
    tokenizer = AutoTokenizer.from_pretrained(
        model_location(name, saved_model=False), revision=revision, trust_remote_code=trust_remote_code, **kwargs
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype named by a model config's ``dtype`` key, with the valid names in the error."""
    if dtype not in DTYPES:
        raise ValueError(f"model dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def pretrained(auto_class, tokenizer, name: str, dtype: str = "float32", **kwargs) -> PreTrainedModel:
    """``auto_class.from_pretrained`` with the tokenizer's pad token where the model names none."""
    # A GGUF checkpoint is one file in its directory, with no config.json beside it.
    location = model_location(name, saved_model="gguf_file" not in kwargs)
    model = auto_class.from_pretrained(location, dtype=torch_dtype(dtype), **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def hf_causal_lm(
    tokenizer,
    name: str,
    revision: str | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
    **kwargs,
) -> PreTrainedModel:
    """A hub or local causal LM; remote code runs only when the config asks for it."""
    return pretrained(
        AutoModelForCausalLM,
        tokenizer,
        name,
        dtype,
        revision=revision,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        **kwargs,
    )


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout to p=0 so policy and reference agree exactly at the start (as TRL does)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def hf_seq2seq_lm(
    tokenizer,
    name: str,
    revision: str | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    **kwargs,
) -> PreTrainedModel:
    """A hub or local encoder-decoder (T5, Flan-T5, BART, ...); remote code runs only when asked for."""
    model = pretrained(
        AutoModelForSeq2SeqLM,
        tokenizer,
        name,
        dtype,
        revision=revision,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    if model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = model.config.pad_token_id
    return model


def is_encoder_decoder(model) -> bool:
    """What the model's own config says (a LoRA wrapper passes its base model's config through)."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def cache_keyword(model) -> str:
    """The name under which the model (behind a peft wrapper, its base model) takes its KV cache:
    ``cache`` from transformers 5.2x on, ``past_key_values`` before."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_of(output):
    """The KV cache a forward pass returned, under either name."""
    cache = output.get("cache")
    return cache if cache is not None else output.get("past_key_values")
