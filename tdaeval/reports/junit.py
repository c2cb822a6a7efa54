"""JUnit XML: one test case per threshold, so CI systems show which one failed."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from tdaeval.suites.checks import CheckOutcome
from tdaeval.suites.result import SuiteResult

__all__ = ["render_junit"]


def render_junit(result: SuiteResult, checks: Sequence[CheckOutcome] | None = None, suite_name: str | None = None) -> str:
    """A JUnit XML document for ``checks`` (default: the checks stored in ``result``).

    Each threshold is a ``<testcase>`` (class ``tdaeval.<metric>``) that fails
    with the check's message. Without any threshold, each attributor × metric is
    a test case that fails only when the attributor could not run. Each note in
    ``provenance["check_notes"]`` (e.g. a ``max_regression`` left unchecked for want
    of a baseline) is a skipped test case, so CI lists it too.

    Parameters
    ----------
    result : SuiteResult
        The run (for its entries and suite name).
    checks : sequence of CheckOutcome, optional
        Outcomes of :func:`tdaeval.suites.checks.evaluate_checks`.
    suite_name : str, optional
        The ``<testsuite>`` name (default: the suite's name, else ``"tdaeval"``).
    """
    if checks is None:
        checks = [CheckOutcome.from_dict(c) for c in result.checks]
    suite = result.provenance.get("checked_suite") or result.provenance.get("suite") or {}
    name = suite_name or suite.get("name") or "tdaeval"
    cases = []
    if checks:
        for c in checks:
            cases.append((f"tdaeval.{c.metric}", c.name, None if c.passed else c.message, c.message))
    else:
        for e in result.entries:
            ok = e.result is not None
            detail = f"value {e.result.value:.4g}" if ok and math.isfinite(e.result.value) else ("value undefined" if ok else "")
            cases.append((f"tdaeval.{e.metric}", f"{e.attributor} / {e.metric} ran", None if ok else f"could not run: {e.error}", detail))
    notes = result.provenance.get("check_notes") or []
    notes = [str(n) for n in notes] if isinstance(notes, list) else [str(notes)]
    failures = sum(1 for case in cases if case[2] is not None)
    total = str(len(cases) + len(notes))
    suites = ET.Element("testsuites", name="tdaeval", tests=total, failures=str(failures), errors="0")
    suite = ET.SubElement(suites, "testsuite", name=str(name), tests=total, failures=str(failures), errors="0", skipped=str(len(notes)))
    for note in notes:  # what the thresholds left out, e.g. the regression check without a baseline file
        case = ET.SubElement(suite, "testcase", classname="tdaeval.checks", name=note, time="0")
        ET.SubElement(case, "skipped", message=note)
    for classname, case_name, failure, detail in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=case_name, time="0")
        if failure is not None:
            ET.SubElement(case, "failure", message=failure, type="threshold").text = failure
        elif detail:
            ET.SubElement(case, "system-out").text = detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
