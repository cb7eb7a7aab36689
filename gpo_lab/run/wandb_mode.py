"""Which wandb mode a run or a report uses: online with an API key, offline without one.

Kept apart from the Lightning logger (:mod:`gpo_lab.run.wandb_logging`) so that the report can ask
the same question without loading Lightning; wandb itself is imported only when a key is looked for.
The key is never read into a config or written to a log: only whether one exists is checked,
without any network call. :func:`server_unreachable` is the one network call: a short request to
the wandb server before an online run, so that a machine without network logs offline at once
instead of waiting minutes for wandb's own timeout in every job.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import urllib.error
import urllib.request
import warnings

from gpo_lab.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
DEFAULT_SERVER = "https://api.wandb.ai"
REACH_TIMEOUT_S = 5.0  # wandb.init itself waits about 90 s, then fails; this check answers in at most this long
_reached: dict[str, str | None] = {}  # server -> why it could not be reached (None: it answered); once a process


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


def server_url() -> str:
    """The wandb server an online run would talk to: ``WANDB_BASE_URL``, wandb's settings, or wandb.ai's."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url or DEFAULT_SERVER)
    except Exception as error:  # another wandb version, an unreadable settings file: the public server
        log.debug("wandb server lookup failed: %s", error)
        return DEFAULT_SERVER


def _probe(url: str, timeout_s: float, outcome: dict) -> None:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        pass  # the server answered (with an error status for a bare HEAD): it is reachable
    except urllib.error.URLError as error:
        if not isinstance(error.reason, ssl.SSLError):  # a TLS complaint is an answer: wandb says the rest
            outcome["why"] = str(error.reason)
    except (OSError, ValueError) as error:
        outcome["why"] = f"{type(error).__name__}: {error}"
    outcome["done"] = True


def server_unreachable(url: str | None = None, timeout_s: float = REACH_TIMEOUT_S) -> str | None:
    """Why the wandb server cannot be reached within ``timeout_s``, or None when it answers.

    Any HTTP answer counts as reachable (the key and the project are wandb's to check); proxies
    from the environment are used as wandb uses them. The request runs in a daemon thread, so a
    name lookup that hangs is bounded too. Each server is asked once a process: the jobs of a sweep
    after the first reuse the answer.
    """
    url = url or server_url()
    if url not in _reached:
        outcome: dict = {}
        thread = threading.Thread(target=_probe, args=(url, timeout_s, outcome), daemon=True)
        thread.start()
        thread.join(timeout_s + 0.5)
        _reached[url] = outcome.get("why") if outcome.get("done") else f"no answer within {timeout_s:g} s"
    return _reached[url]


def reachable_mode(mode: str) -> tuple[str, str | None]:
    """``mode``, or offline when it is online and the server cannot be reached (with why, for the log).

    Nothing is lost offline: the run is written under its directory's ``wandb/`` and ``wandb sync``
    uploads it later; the local ``metrics.jsonl`` and ``summary.json`` are written either way.
    """
    if mode != "online":
        return mode, None
    url = server_url()
    why = server_unreachable(url)
    if why is None:
        return mode, None
    log.warning(
        "wandb: cannot reach %s (%s). Logging OFFLINE instead: upload the run later with `wandb sync` (the "
        "command is printed below); set WANDB_MODE=offline to skip this check, or fix the network or "
        "WANDB_BASE_URL to log online.",
        url,
        why,
    )
    return "offline", f"cannot reach {url}: {why}"
