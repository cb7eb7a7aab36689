"""No secrets in saved configs: values of secret-looking keys are replaced before anything is written."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password)", re.IGNORECASE)


REDACTED = "<redacted>"


def redact_secrets(value: Any) -> Any:
    """A copy of a plain config container with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if SECRET_KEY.search(str(k)) and v is not None else redact_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str):
        return redact_override(value)  # command-line overrides recorded in the config
    return value


def redact_override(override: str) -> str:
    """``+x.api_key=abc`` becomes ``+x.api_key=<redacted>``; other overrides are unchanged."""
    key, sep, value = override.partition("=")
    return f"{key}={REDACTED}" if sep and SECRET_KEY.search(key) else override
