"""Reports rendered from a :class:`~tdaeval.suites.SuiteResult`: plain text, Markdown, HTML, JUnit XML, comparisons.

Renderers read a result's rankings, computed once and stored (:attr:`~tdaeval.suites.SuiteResult.rankings`), and compute none of their own.
"""

from tdaeval.reports.compare import render_comparison
from tdaeval.reports.html import render_html
from tdaeval.reports.junit import render_junit
from tdaeval.reports.markdown import render_markdown
from tdaeval.reports.schema import result_schema
from tdaeval.reports.text import render_text

__all__ = ["render_comparison", "render_html", "render_junit", "render_markdown", "render_text", "result_schema"]
