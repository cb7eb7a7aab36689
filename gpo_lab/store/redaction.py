"""No secrets in saved files: values of secret-looking keys, and secrets taken from the environment, are replaced.

Two rules, because a secret reaches a config in two ways. By name: the value of a key such as
``api_key``, ``hf_token`` or ``password`` is redacted. By value: a value read from a secret-looking
environment variable (``${oc.env:WANDB_API_KEY}``, or ``$WANDB_API_KEY`` expanded by the shell) is
redacted wherever it appears, whatever the key holding it is called.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from gpo_lab.store.atomic import atomic_write_text

REDACTED = "<redacted>"
# Tokenizer settings, not credentials: ``pad_token: "<pad>"`` stays readable.
SPECIAL_TOKENS = {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "stop", "image"}
SECRET_WORDS = {"secret", "secrets", "password", "passwd", "passphrase", "credential", "credentials", "apikey"}
MIN_SCRUBBED_LENGTH = 6  # shorter environment values ("1", "true") are too common to scrub everywhere


def words(name: str) -> list[str]:
    """``hfToken`` and ``HF_TOKEN`` and ``hf-token`` are all ``["hf", "token"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def is_secret_name(name: str) -> bool:
    """Whether a key (or a dotted override key, or an environment variable) names a secret.

    Secret: ``api_key``, ``apikey``, ``private_key``, a ``token`` as the last word (``token``,
    ``hf_token``, ``auth_token``; not ``pad_token``), ``secret``, ``password``, ``credentials``.
    Not secret: ``tokenizer``, ``max_new_tokens``, ``sft_token_nll``, ``sft_key``.
    """
    for part in str(name).lstrip("+~").split("."):
        w = words(part)
        if SECRET_WORDS & set(w):
            return True
        pairs = set(zip(w, w[1:]))
        if ("api", "key") in pairs or ("private", "key") in pairs:
            return True
        if w and w[-1] == "token" and (len(w) == 1 or w[-2] not in SPECIAL_TOKENS):
            return True
    return False


def secret_environment_values() -> list[str]:
    """The values of this process's secret-looking environment variables, longest first."""
    values = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= MIN_SCRUBBED_LENGTH}
    return sorted(values, key=len, reverse=True)


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret environment value in it replaced by ``<redacted>``."""
    for secret in secret_environment_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact_secrets(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a plain config container with secret-named values and secret environment values replaced."""
    secrets = secret_environment_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_name(k) and v is not None else redact_secrets(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub(value, secrets)  # (the ``overrides`` list is redacted item by item: redact_override)
    return value


def redact_override(override: str) -> str:
    """``+x.api_key=abc`` becomes ``+x.api_key=<redacted>``; other overrides keep their text, minus secret values."""
    key, sep, value = override.partition("=")
    return f"{key}={REDACTED}" if sep and is_secret_name(key) else scrub(override)


def redact_hydra_record(run_dir: Path, overrides: list[str]) -> None:
    """Redact what Hydra wrote before the run started: ``.hydra/*.yaml`` and the sweep's ``multirun.yaml``.

    Hydra records the command line as typed, so a secret typed literally (``+x.api_key=abc``,
    or a shell-expanded ``$WANDB_API_KEY``) is in these files for the moment between their
    writing and this call; the run's own files never hold it.
    """
    secret_overrides = [o for o in overrides if "=" in o and is_secret_name(o.partition("=")[0])]
    secrets = secret_environment_values()

    def redacted(value: Any, key: Any = None) -> Any:
        if key is not None and is_secret_name(str(key)) and isinstance(value, (str, int, float)):
            return REDACTED
        if isinstance(value, dict):
            return {k: redacted(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [redacted(v) for v in value]
        if isinstance(value, str):
            for override in secret_overrides:
                value = value.replace(override, redact_override(override))
            return scrub(value, secrets)
        return value

    paths = [*sorted((Path(run_dir) / ".hydra").glob("*.yaml")), Path(run_dir).parent / "multirun.yaml"]
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        clean = redacted(data)
        if clean != data:
            atomic_write_text(path, yaml.safe_dump(clean, sort_keys=False))
