"""Exceptions raised by tdaeval.

Every input check raises one of these (never ``assert``), with a message that
names the parameter, attributor or file and what was expected.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["TdaevalError", "ConfigError", "AttributorError", "StoreError", "TdaevalWarning", "ConvergenceWarning", "collect_warnings"]


class TdaevalError(Exception):
    """Base class of every error tdaeval raises on purpose."""


class ConfigError(TdaevalError, ValueError):
    """A parameter, a name or a configuration value is invalid."""


class AttributorError(TdaevalError):
    """An attributor failed or returned an invalid result."""


class StoreError(TdaevalError):
    """The artifact store cannot be used or holds an artifact that does not match."""


class TdaevalWarning(UserWarning):
    """Base class of the warnings tdaeval issues about a result it still returns (results record them)."""


class ConvergenceWarning(TdaevalWarning):
    """An iterative solver (e.g. influence's conjugate gradients) stopped before reaching its tolerance."""


@contextlib.contextmanager
def collect_warnings(into: list[str]) -> Iterator[list[str]]:
    """Append ``"Category: message"`` of every :class:`TdaevalWarning` raised inside the block to ``into``.

    Each is recorded whatever the active filters (once per distinct message),
    then every warning caught in the block, tdaeval's or not, is issued again
    on exit under the caller's filters, so the console still shows it.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always", TdaevalWarning)
            caught = recorded
            yield into
    finally:  # also when the block failed: what was said before the failure stays on record
        for w in caught:
            if issubclass(w.category, TdaevalWarning):
                text = f"{w.category.__name__}: {w.message}"
                if text not in into:
                    into.append(text)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
