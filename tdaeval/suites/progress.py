"""Progress of a run: plain, numbered lines on the ``tdaeval`` logger, or a callback.

:func:`tdaeval.evaluate`, :func:`~tdaeval.suites.run_suite` and
:func:`~tdaeval.suites.build_groundtruth` take ``progress``:

* ``"auto"`` (the default): INFO records on the logger ``"tdaeval"``, one per
  step and at most one every :data:`INTERVAL_S` seconds while a step trains
  many models, e.g. ``[2/4] lds: building ground truth`` and
  ``[3/4] grad_dot: done (fit 0.12 s, attribute 0.03 s)``. They show wherever
  logging is configured to show INFO records of ``"tdaeval"`` (the command
  line does, on standard error; so does ``logging.basicConfig(level=logging.INFO)``),
  and nowhere else.
* ``True``: the same records, shown on standard error even when logging is
  not configured (a notebook, a script): for the length of the call the
  ``"tdaeval"`` logger is set to INFO and, when no handler would receive its
  records, given one that writes to standard error.
* ``False`` or ``None``: nothing.
* a callable: called as ``progress(stage, done, total)`` (``stage`` is
  ``"reference model"``, ``"ground truth (<metric>)"`` or ``"attributors"``)
  instead of logging; the command line draws its progress bars this way on a
  terminal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from tdaeval.errors import ConfigError

__all__ = ["INTERVAL_S", "LOGGER", "Reporter", "check_progress", "make_reporter", "log_to_stderr"]

#: The logger progress lines go to.
LOGGER = logging.getLogger("tdaeval")

#: Fewest seconds between two progress lines of one step that trains models.
INTERVAL_S = 10.0


class Reporter:
    """Numbered progress lines ``[k/N] ...`` with timings, or a ``progress(stage, done, total)`` callback.

    Parameters
    ----------
    n_steps : int
        Steps of the run (reference model, one per metric's ground truth, one per attributor).
    callback : callable, optional
        ``callback(stage, done, total)``; when given, nothing is logged.
    log : bool
        Write lines to :data:`LOGGER` (ignored when ``callback`` is given).
    """

    def __init__(self, n_steps: int, callback: Callable[[str, int, int], None] | None = None, log: bool = True) -> None:
        self.n_steps = n_steps
        self.callback = callback
        self.log = log and callback is None
        self.step = 0
        self._label = ""
        self._start = self._last_line = time.perf_counter()
        self._last_total: int | None = None
        self._restore: Callable[[], None] | None = None

    def _line(self, text: str) -> None:
        if self.log:
            LOGGER.info("[%d/%d] %s", self.step, self.n_steps, text)
            self._last_line = time.perf_counter()

    def begin(self, label: str, doing: str) -> None:
        """Start the next step: ``[k/N] label: doing``."""
        self.step += 1
        self._label = label
        self._last_total = None
        self._start = time.perf_counter()
        self._line(f"{label}: {doing}")

    def update(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` within the current step (models trained or loaded, attributors run)."""
        if self.callback is not None:
            self.callback(stage, done, total)
            return
        if not self.log or not stage.startswith("ground truth"):
            return
        if total and total != self._last_total:  # a new set of jobs: say how many, and how many are already stored
            self._last_total = total
            self._line(f"{self._label}: {total} models, {done} already stored")
        elif done < total and time.perf_counter() - self._last_line >= INTERVAL_S:
            self._line(f"{self._label}: {done}/{total} models ({time.perf_counter() - self._start:.1f} s)")

    def end(self, outcome: str, timings: str = "") -> None:
        """Close the current step: ``[k/N] label: outcome (timings; seconds in all)``."""
        elapsed = f"{time.perf_counter() - self._start:.2f} s"
        self._line(f"{self._label}: {outcome} ({timings + '; ' + elapsed + ' in all' if timings else elapsed})")

    def close(self) -> None:
        """Undo the logging set-up of ``progress=True`` (once; later calls do nothing)."""
        if self._restore is not None:
            self._restore()
            self._restore = None


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _plain_stderr_handler() -> logging.Handler:
    """A handler printing bare messages on standard error."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def check_progress(progress: Any, owner: str) -> None:
    """Raise ConfigError unless ``progress`` is True, False, None, ``"auto"`` or a callable."""
    if progress is None or isinstance(progress, bool) or progress == "auto" or callable(progress):
        return
    raise ConfigError(
        f"The 'progress' parameter of {owner} must be True, False, 'auto' or a callable progress(stage, done, total). "
        f"Got {progress!r} instead."
    )


def make_reporter(progress: Any, n_steps: int, owner: str) -> Reporter:
    """A :class:`Reporter` for ``progress`` (see the module's documentation); call its ``close()`` at the end.

    Raises
    ------
    ConfigError
        When ``progress`` is not True, False, None, ``"auto"`` or a callable.
    """
    check_progress(progress, owner)
    if callable(progress) and not isinstance(progress, bool):
        return Reporter(n_steps, callback=progress)
    reporter = Reporter(n_steps, log=bool(progress))
    if progress is True:  # shown even where logging is not configured, for the length of the call
        level = LOGGER.level
        handler = None
        if LOGGER.getEffectiveLevel() > logging.INFO:
            LOGGER.setLevel(logging.INFO)
        if not LOGGER.hasHandlers():
            handler = _plain_stderr_handler()
            LOGGER.addHandler(handler)

        def restore() -> None:
            LOGGER.setLevel(level)
            if handler is not None:
                LOGGER.removeHandler(handler)

        reporter._restore = restore
    return reporter


@contextlib.contextmanager
def log_to_stderr() -> Iterator[None]:
    """For the command line: INFO records of ``"tdaeval"`` printed on standard error, plain, while in the block."""
    level = LOGGER.level
    handler = _plain_stderr_handler()
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
