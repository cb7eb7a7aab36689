"""Errors a user can fix from the command line; they are reported as one clear message, of bounded length."""

MAX_ERROR_CHARS = 2000  # an error's message in summary.json and the log (a data error may quote a whole file)


class ConfigError(ValueError):
    """A configuration value or an input that cannot work, with what to change."""


def user_facing_cause(error: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception, looking through wrappers such as Hydra's."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut in its middle to at most about ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]} ... [{len(text) - 2 * keep} characters cut] ... {text[-keep:]}"


def error_text(error: BaseException) -> str:
    """``Type: message``, bounded: what summary.json, the log and a sweep's exit message show."""
    return bounded(f"{type(error).__name__}: {error}")
