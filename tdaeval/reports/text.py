"""Plain-text report: one ranked table per metric, as ``tdaeval run`` prints it.

The table is the result's own string form (:meth:`tdaeval.suites.SuiteResult.table`,
``str(result)``), so that :mod:`tdaeval.suites` needs nothing from the reports.
"""

from __future__ import annotations

from tdaeval.suites.result import SuiteResult

__all__ = ["render_text"]


def render_text(result: SuiteResult) -> str:
    """The plain-text table of ``result``, one ranked table per metric: :meth:`~tdaeval.suites.SuiteResult.table`.

    Parameters
    ----------
    result : SuiteResult
        The results to show.

    Returns
    -------
    str
        Lines joined by newlines (no trailing newline).
    """
    return result.table()
