"""Exceptions raised by tdaeval.

Every input check raises one of these (never ``assert``), with a message that
names the parameter, attributor or file and what was expected.
"""

from __future__ import annotations

__all__ = ["TdaevalError", "ConfigError", "AttributorError", "StoreError"]


class TdaevalError(Exception):
    """Base class of every error tdaeval raises on purpose."""


class ConfigError(TdaevalError, ValueError):
    """A parameter, a name or a configuration value is invalid."""


class AttributorError(TdaevalError):
    """An attributor failed or returned an invalid result."""


class StoreError(TdaevalError):
    """The artifact store cannot be used or holds an artifact that does not match."""


def check_in_open_interval(name: str, owner: str, value: float, low: float, high: float) -> float:
    """Raise ``ConfigError`` unless ``low < value < high``."""
    if not isinstance(value, (int, float)) or not (low < float(value) < high):
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be in ({low:g}, {high:g}). Got {value!r} instead."
        )
    return float(value)


def check_int_at_least(name: str, owner: str, value: int, minimum: int) -> int:
    """Raise ``ConfigError`` unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be an integer >= {minimum}. Got {value!r} instead."
        )
    return value
