"""Reports rendered from a :class:`~tdaeval.suites.SuiteResult`: Markdown, HTML, JUnit XML, comparisons."""

from tdaeval.reports.compare import render_comparison
from tdaeval.reports.html import render_html
from tdaeval.reports.junit import render_junit
from tdaeval.reports.markdown import render_markdown
from tdaeval.reports.schema import result_schema

__all__ = ["render_comparison", "render_html", "render_junit", "render_markdown", "result_schema"]
