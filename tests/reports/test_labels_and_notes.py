"""Every report shows user labels as written (escaped for its format), every threshold outcome, the notes on
what was left unchecked, and the optional provenance fields (``ci_covers``, ``test``) and entry ``warnings``.

The Markdown is rendered with markdown-it-py (CommonMark with GitHub's tables, raw HTML allowed as on
GitHub) and read back, so what is checked is what a pull-request comment would show.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from tdaeval.reports import render_html, render_junit, render_markdown
from tdaeval.suites.checks import CheckOutcome
from tdaeval.suites.result import Entry, SuiteResult
from tests.suites.helpers import metric_result, synthetic_result

# A 1 x 1 PNG: the plots are not what these tests are about, and drawing them takes seconds per report.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    import tdaeval.reports.html

    monkeypatch.setattr(tdaeval.reports.html, "_png", lambda draw, *args: TINY_PNG)


EVIL = ["<script>alert(1)</script>", "a|b", "*x* _y_ ~~z~~", "`code` [link](https://example.com)", "&lt;b&gt; back\\slash"]


class _Page(HTMLParser):
    """Start tags, and the text of each table row's cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _markdown_page(result: SuiteResult) -> _Page:
    renderer = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    return _page(renderer.render(render_markdown(result)))


def _labelled(label: str, where: str) -> SuiteResult:
    """A small result with ``label`` as the one user-provided string named by ``where``."""
    attributor = label if where == "attributor" else "grad_dot"
    metric = label if where == "metric" else "lds"
    result = synthetic_result(
        {metric: ({attributor: [0.5, 0.6, 0.4, 0.55], "random": [0.0, 0.1, -0.1, 0.05]}, True)},
        failures=[("broken", metric, label if where == "error" else "out of memory")],
    )
    if where == "suite":
        result.provenance["suite"] = {"name": label}
    if where == "task":
        result.task["name"] = label
    if where == "measurement":
        result.task["measurement"] = label
    if where == "device":
        result.provenance["device"] = label
    if where in ("check name", "check message"):
        result.checks = [CheckOutcome(label if where == "check name" else "grad_dot / lds >= 0.1", "floor", "grad_dot", "lds", False,
                                      label if where == "check message" else "value 0 violates >= 0.1", 0.0, 0.1, (0.0, 0.0)).to_dict()]
    if where == "note":
        result.provenance["check_notes"] = [label]
    if where == "warning":
        result.entries[0].warnings = [label]
    if where in ("ci_covers", "test"):
        result.entries[0].result.provenance[where] = label
    return result


SITES = ["attributor", "metric", "error", "suite", "task", "measurement", "device", "check name", "check message", "note",
         "warning", "ci_covers", "test"]


@pytest.mark.parametrize("where", SITES)
@pytest.mark.parametrize("label", EVIL, ids=["script", "pipe", "emphasis", "code-and-link", "entity-and-backslash"])
def test_markdown_shows_every_label_as_written(label, where):
    page = _markdown_page(_labelled(label, where))
    text = "".join(page.text)
    assert label in text, f"{label!r} at {where} does not show as written"
    assert not {"script", "a", "em", "del", "b"} & set(page.tags), set(page.tags)  # no markup from a label
    assert page.tags.count("code") == 2  # measurement and fingerprint only
    header = next(row for row in page.rows if row and row[0] == "rank")
    for row in page.rows:
        if len(row) == len(header) and row[0] != "rank":
            assert row[1].removesuffix(" ⚠") in ("grad_dot", "random", "broken", label)


@pytest.mark.parametrize("where", SITES)
def test_html_shows_every_label_as_written(where):
    label = EVIL[0] + EVIL[1]
    page = _page(render_html(_labelled(label, where)))
    assert "script" not in page.tags
    assert label in "".join(page.text)


def _checked() -> SuiteResult:
    result = synthetic_result({"lds": ({"grad_dot": [0.5, 0.6, 0.4, 0.55], "random": [0.0, 0.1, -0.1, 0.05]}, True)})
    result.checks = [
        CheckOutcome("grad_dot / lds >= 0.3", "floor", "grad_dot", "lds", True, "value 0.5125 satisfies >= 0.3", 0.5125, 0.3, (0.4, 0.6)).to_dict(),
        CheckOutcome("random / lds >= 0.3", "floor", "random", "lds", False, "value 0.0125 violates >= 0.3", 0.0125, 0.3, (-0.1, 0.1)).to_dict(),
    ]
    result.provenance["check_notes"] = ["thresholds.max_regression (0.02) is not checked: the baseline file 'b.json' does not exist."]
    return result


def _report_text(fmt: str, result: SuiteResult) -> str:
    if fmt == "md":
        return "".join(_markdown_page(result).text)
    if fmt == "html":
        return "".join(_page(render_html(result)).text)
    root = ET.fromstring(render_junit(result).split("?>", 1)[1])
    return " ".join(f"{el.get('name', '')} {el.get('message', '')} {el.text or ''}" for el in root.iter())


@pytest.mark.parametrize("fmt", ["md", "html", "junit"])
def test_every_report_format_shows_every_check_and_note(fmt):
    result = _checked()
    text = " ".join(_report_text(fmt, result).split())
    for check in result.checks:
        assert check["name"] in text and check["message"] in text, (fmt, check["name"])
    assert result.provenance["check_notes"][0] in text
    if fmt != "junit":
        assert "1 of 2 thresholds failed" in text


def test_junit_lists_a_note_as_a_skipped_test_case():
    suite = ET.fromstring(render_junit(_checked()).split("?>", 1)[1]).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")


def test_html_check_rows_mark_the_failed_threshold():
    page = _page(render_html(_checked()))
    rows = [row for row in page.rows if row and row[0] in ("✅ pass", "❌ FAIL")]
    assert rows == [["✅ pass", "grad_dot / lds >= 0.3", "value 0.5125 satisfies >= 0.3"],
                    ["❌ FAIL", "random / lds >= 0.3", "value 0.0125 violates >= 0.3"]]


def _document(with_fields: bool) -> dict:
    """A results document written by hand, as an older (without the fields) or newer tdaeval would."""
    doc = json.loads(synthetic_result({
        "lds": ({"influence": [0.5, 0.6, 0.4, 0.55], "random": [0.0, 0.1, -0.1, 0.05]}, True),
        "seed_reliability": ({"influence": [0.9, 0.8, 0.7, 0.9], "random": [0.1, 0.0, 0.05, 0.1]}, True),
    }).to_json())
    if with_fields:
        for item in doc["results"]:
            item["provenance"]["ci_covers"] = "test points resampled; ground truth fixed"
            if item["metric"] == "seed_reliability":
                item["provenance"]["test"] = "two-sided Welch t-test over seeds"
    return doc


def _with_warnings(result: SuiteResult) -> SuiteResult:
    for entry in result.entries:
        if entry.attributor == "influence" and entry.metric == "lds":
            entry.warnings = ["the CG solve did not converge (residual 0.31 after 100 iterations)"]
    return result


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_reports_show_what_the_ci_covers_the_test_and_the_warnings(fmt):
    result = _with_warnings(SuiteResult.from_dict(_document(with_fields=True)))
    text = _report_text(fmt, result)
    assert text.count("CI: test points resampled; ground truth fixed.") == 2  # under each metric's table
    assert text.count("test: two-sided Welch t-test over seeds.") == 1  # only the metric that records it
    assert text.count("the CG solve did not converge (residual 0.31 after 100 iterations)") == 1
    page = _markdown_page(result) if fmt == "md" else _page(render_html(result))
    marked = [row[1] for row in page.rows if len(row) > 2 and row[1].startswith("influence")]
    assert marked == ["influence ⚠", "influence"]  # the lds row (with the warning), then seed_reliability's


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_reports_of_older_results_files_have_no_such_notes(fmt):
    result = SuiteResult.from_dict(_document(with_fields=False))
    text = _report_text(fmt, result)
    assert "CI: " not in text and "test: " not in text and "⚠" not in text


def test_metric_result_helper_keeps_provenance():
    """The fields travel in the metric result's provenance, which a results file keeps."""
    result = metric_result([0.1, 0.2])
    result.provenance["ci_covers"] = "x"
    entry = Entry("a", "lds", result)
    provenance = {"tdaeval": "test", "torch": "x", "python": "3", "git": None, "seed": 0, "device": "cpu"}
    again = SuiteResult.from_dict(SuiteResult([entry], task={"name": "t"}, provenance=provenance).to_dict())
    assert again.entries[0].result.provenance["ci_covers"] == "x"
