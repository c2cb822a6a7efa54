"""Reports rendered from a :class:`~tdaeval.suites.SuiteResult`."""

from tdaeval.reports.markdown import render_markdown

__all__ = ["render_markdown"]
