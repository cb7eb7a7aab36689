"""Errors a user can fix from the command line; they are reported as one clear message."""


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
