"""Which wandb mode a run or a report uses: online with an API key, offline without one.

Kept apart from the Lightning logger (:mod:`gpo_lab.run.wandb_logging`) so that the report can ask
the same question without loading Lightning; wandb itself is imported only when a key is looked for.
The key is never read into a config or written to a log: only whether one exists is checked,
without any network call.
"""

from __future__ import annotations

import logging
import os
import warnings

from gpo_lab.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")


def has_credentials() -> bool:
    """Whether wandb would find an API key (environment, ``wandb login``'s netrc, settings).

    Reads local state only; the key itself is neither returned nor logged.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:  # wandb is optional and slow to import: only here, where a key is looked for
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        return bool(wbauth.read_netrc_auth(host=settings.base_url) or settings.api_key)
    except ImportError:  # another wandb version: its public (deprecated) accessor reads the same places
        import wandb

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(wandb.api.api_key)
    except Exception as error:  # an unreadable netrc or settings file means no usable key
        log.debug("wandb credentials check failed: %s", error)
        return False


def resolve_mode(mode: str | None = None) -> str:
    """The wandb mode to run in: ``mode`` if given, else ``WANDB_MODE``, else online iff a key exists."""
    requested = mode or os.environ.get("WANDB_MODE") or None
    if requested is None:
        return "online" if has_credentials() else "offline"
    requested = {"dryrun": "offline", "run": "online"}.get(requested, requested)
    if requested not in MODES:
        raise ConfigError(
            f"Unknown wandb mode {requested!r}. Use one of {', '.join(MODES)} "
            "(logger.wandb.mode=..., or the WANDB_MODE environment variable), or leave it unset."
        )
    return requested
