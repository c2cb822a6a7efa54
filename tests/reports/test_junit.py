"""The JUnit XML report: parses, counts failures and skips, one test case per check or per entry."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import torch

from tdaeval.metrics.base import MetricResult
from tdaeval.reports.junit import render_junit
from tdaeval.suites.checks import CheckOutcome
from tdaeval.suites.result import Entry, SuiteResult

NAME = 'a<b> & "c"'  # a label with XML's special characters


def _result(value: float) -> MetricResult:
    per_test = torch.full((10,), value, dtype=torch.float64)
    return MetricResult("lds", value, (value - 0.1, value + 0.1), per_test, True, 10 if math.isnan(value) else 0)


def _suite(checks: list[dict] | None = None, **provenance) -> SuiteResult:
    entries = [
        Entry("grad_dot", "lds", _result(0.51234)),
        Entry(NAME, "lds", _result(math.nan)),
        Entry("broken", "lds", None, error="ValueError: shape <3, 4> & more"),
    ]
    return SuiteResult(entries, {"name": "digits"}, {"suite": {"name": "my <suite>"}, **provenance}, checks or [])


def _parse(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n') and text.endswith("\n")
    return ET.fromstring(text.split("?>", 1)[1])


def _cases(root: ET.Element) -> list[tuple[str, str, str]]:
    """(classname, name, outcome) per test case; outcome is 'failure: message', 'skipped: message' or 'out: text'."""
    out = []
    for case in root.iter("testcase"):
        failure, skipped, system_out = case.find("failure"), case.find("skipped"), case.find("system-out")
        if failure is not None:
            assert failure.text == failure.get("message") and failure.get("type") == "threshold"
            outcome = f"failure: {failure.get('message')}"
        elif skipped is not None:
            outcome = f"skipped: {skipped.get('message')}"
        else:
            outcome = f"out: {system_out.text}" if system_out is not None else "out: "
        out.append((case.get("classname"), case.get("name"), outcome))
    return out


def _counts(element: ET.Element) -> tuple[str | None, ...]:
    return element.get("tests"), element.get("failures"), element.get("errors"), element.get("skipped")


def test_without_checks_each_entry_is_a_test_case_that_fails_only_when_it_could_not_run():
    root = _parse(render_junit(_suite()))
    assert root.tag == "testsuites" and root.get("name") == "tdaeval"
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "my <suite>"  # escaped in the file, as written once parsed
    assert _counts(root)[:3] == ("3", "1", "0") and _counts(suites[0]) == ("3", "1", "0", "0")
    assert _cases(root) == [
        ("tdaeval.lds", "grad_dot / lds ran", "out: value 0.5123"),
        ("tdaeval.lds", f"{NAME} / lds ran", "out: value undefined"),  # a NaN value ran: it passes, marked undefined
        ("tdaeval.lds", "broken / lds ran", "failure: could not run: ValueError: shape <3, 4> & more"),
    ]


def _check(name: str, metric: str, passed: bool, message: str) -> CheckOutcome:
    return CheckOutcome(name, "floor", "grad_dot", metric, passed, message, 0.5, 0.3, (0.4, 0.6))


CHECKS = [
    _check("grad_dot / lds >= 0.3", "lds", True, "value 0.5 satisfies >= 0.3"),
    _check(f"{NAME} / loo >= 0.3", "loo", False, "value 0.1 < 0.3"),
    _check("random / lds <= 0.1", "lds", False, "value 0.2 > 0.1"),
]


def test_each_check_outcome_is_a_test_case_of_its_metric():
    root = _parse(render_junit(_suite(), checks=CHECKS))
    assert _counts(root)[:3] == ("3", "2", "0") and _counts(root.find("testsuite")) == ("3", "2", "0", "0")
    assert _cases(root) == [
        ("tdaeval.lds", "grad_dot / lds >= 0.3", "out: value 0.5 satisfies >= 0.3"),
        ("tdaeval.loo", f"{NAME} / loo >= 0.3", "failure: value 0.1 < 0.3"),
        ("tdaeval.lds", "random / lds <= 0.1", "failure: value 0.2 > 0.1"),
    ]


def test_checks_stored_in_the_result_and_notes_as_skipped_cases():
    notes = ["thresholds.max_regression (0.02) is not checked: no baseline <b.json>.", "second note"]
    result = _suite([c.to_dict() for c in CHECKS], check_notes=notes)
    root = _parse(render_junit(result))
    # the notes come first, each a skipped case; the entries are not listed when there are checks
    assert _counts(root)[:3] == ("5", "2", "0") and _counts(root.find("testsuite")) == ("5", "2", "0", "2")
    cases = _cases(root)
    assert cases[:2] == [("tdaeval.checks", note, f"skipped: {note}") for note in notes]
    assert [name for _, name, _ in cases[2:]] == [c.name for c in CHECKS]
    # a single note given as a string counts too
    single = _parse(render_junit(_suite(check_notes="only one")))
    assert _counts(single.find("testsuite")) == ("4", "1", "0", "1")


def test_suite_name_comes_from_the_argument_then_the_checked_suite_then_the_suite():
    assert _parse(render_junit(_suite(), suite_name="given")).find("testsuite").get("name") == "given"
    checked = _suite(checked_suite={"name": "checked"})
    assert _parse(render_junit(checked)).find("testsuite").get("name") == "checked"
    anonymous = SuiteResult([Entry("grad_dot", "lds", _result(0.5))])
    assert _parse(render_junit(anonymous)).find("testsuite").get("name") == "tdaeval"
