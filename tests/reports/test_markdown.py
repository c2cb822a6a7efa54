"""The Markdown report's exact structure: headings, table rows, escaping, checks and provenance."""

from __future__ import annotations

import math
import re

import torch

from tdaeval.metrics.base import MetricResult
from tdaeval.reports.markdown import render_markdown
from tdaeval.suites.checks import CheckOutcome
from tdaeval.suites.result import Entry, SuiteResult

TASK = {"name": "digits", "n_train": 200, "n_test": 40, "measurement": "margin", "fingerprint": "abcdef1234567890"}
PROVENANCE = {"tdaeval": "0.1", "torch": "2.13", "python": "3.11", "seed": 0, "device": "cpu", "git": None, "suite": {"name": "my_suite"}}
HEADER = "| rank | attributor | value | 95% CI | tied with | fit (s) | attribute (s) | peak memory (MiB) |"
SEPARATOR = "|---|---|---|---|---|---|---|---|"


def _result(metric: str, values, higher_is_better: bool = True, provenance: dict | None = None) -> MetricResult:
    """A MetricResult whose value is the mean of the finite ``values`` and whose CI is value ± 0.05 (NaN when none is finite)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    finite = values[torch.isfinite(values)]
    mean = float(finite.mean()) if finite.numel() else math.nan
    return MetricResult(metric, mean, (mean - 0.05, mean + 0.05), values, higher_is_better, int((~torch.isfinite(values)).sum()), None,
                        provenance or {"seed": 0})


def _values(center: float, seed: int) -> torch.Tensor:
    """40 per-test values with mean ``center`` and spread 0.01 (so that distinct centres rank apart)."""
    noise = 0.01 * torch.randn(40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return center + noise - noise.mean()


def _suite(entries: list[Entry], checks: list[dict] | None = None, **provenance) -> SuiteResult:
    return SuiteResult(entries, dict(TASK), {**PROVENANCE, **provenance}, checks or [])


def _lds_entries() -> list[Entry]:
    return [
        Entry("grad_dot", "lds", _result("lds", _values(0.8, 0), provenance={"n_subsets": 20, "alpha": 0.5}),
              {"fit_s": 1.5, "attribute_s": 0.25, "peak_memory_bytes": 3 * 2**20}),
        Entry("a|b *c*", "lds", _result("lds", _values(0.3, 1)), {"fit_s": 0.5, "attribute_s": 0.0}),
        Entry("broken_", "lds", None, error="shape [3, 4] | bad\nsecond line"),
    ]


def _table(text: str, heading: str) -> list[str]:
    """The lines of the first table under the line ``heading``."""
    lines = text.splitlines()
    start = next(i for i in range(lines.index(heading), len(lines)) if lines[i].startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def _cells(row: str) -> list[str]:
    """The cells of a table row, split on the pipes that are not escaped."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_title_task_line_and_provenance_line():
    text = render_markdown(_suite(_lds_entries()))
    lines = text.splitlines()
    assert lines[0] == "# tdaeval report: my_suite"  # "_" inside a word is no emphasis: left as written
    assert lines[2] == "Task **digits** (200 train / 40 test, measurement `margin`, fingerprint `abcdef123456`)."
    assert lines[-1] == "tdaeval 0.1, torch 2.13, python 3.11, seed 0, device cpu, git –."
    assert text.endswith(".\n") and "## Checks" not in text and "## Overall" not in text  # no checks run, one metric


def test_table_rows_are_ranked_escaped_and_costed():
    text = render_markdown(_suite(_lds_entries()))
    assert "## lds (↑ higher is better)" in text
    assert "Ground truth: n_subsets=20, alpha=0.5." in text  # from the first-ranked result's provenance
    assert _table(text, "## lds (↑ higher is better)") == [
        HEADER,
        SEPARATOR,
        "| 1 | grad_dot | 0.800 | [0.750, 0.850] | – | 1.50 | 0.25 | 3.0 |",
        "| 2 | a\\|b \\*c\\* | 0.300 | [0.250, 0.350] | – | 0.50 | 0.00 | – |",
        "| – | broken\\_ | could not run: shape \\[3, 4\\] \\| bad second line | | | | | |",
    ]
    # every row keeps the header's eight cells: no label or message breaks the table
    assert all(len(_cells(row)) == 8 for row in _table(text, "## lds (↑ higher is better)"))


def test_a_nan_value_and_its_interval_show_as_dashes_under_a_lower_is_better_metric():
    entries = [
        Entry("grad_dot", "loss", _result("loss", _values(1.0, 2), higher_is_better=False), {"fit_s": 1.0, "attribute_s": 0.0}),
        Entry("undefined", "loss", _result("loss", [math.nan] * 40, higher_is_better=False), {"fit_s": 1.0, "attribute_s": 0.0}),
    ]
    text = render_markdown(_suite(entries))
    rows = {_cells(row)[1]: _cells(row) for row in _table(text, "## loss (↓ lower is better)")[2:]}
    assert set(rows) == {"grad_dot", "undefined"}
    assert rows["undefined"][2:4] == ["–", "[–, –]"]
    assert rows["grad_dot"][2] == "1.000"


def test_two_metrics_add_an_overall_table_and_a_pareto_line():
    entries = _lds_entries()[:2] + [
        Entry("grad_dot", "loss", _result("loss", _values(1.0, 2), higher_is_better=False), {"fit_s": 1.5, "attribute_s": 0.25}),
        Entry("a|b *c*", "loss", _result("loss", _values(2.0, 3), higher_is_better=False), {"fit_s": 0.5, "attribute_s": 0.0}),
    ]
    text = render_markdown(_suite(entries))
    assert _table(text, "## Overall") == [
        "| attributor | mean rank | lds | loss |",
        "|---|---|---|---|",
        "| grad_dot | 1.00 | 1 | 1 |",
        "| a\\|b \\*c\\* | 2.00 | 2 | 2 |",
    ]
    pareto = next(line for line in text.splitlines() if line.startswith("**Quality vs cost**"))
    assert pareto.endswith("a\\|b \\*c\\* (0.300, 0.50 s), grad_dot (0.800, 1.75 s)")  # cheapest first


def _check(name: str, passed: bool, message: str) -> dict:
    return CheckOutcome(name, "floor", "grad_dot", "lds", passed, message, 0.8, 0.1, (0.75, 0.85)).to_dict()


def test_checks_table_and_verdicts():
    checks = [_check("grad_dot / lds >= 0.1", True, "value 0.8 satisfies >= 0.1"), _check("a|b / lds >= 0.9", False, "value 0.3 < 0.9")]
    assert _table(render_markdown(_suite(_lds_entries(), checks)), "## Checks: ❌ 1 of 2 thresholds failed") == [
        "| | check | detail |",
        "|---|---|---|",
        "| ✅ | grad_dot / lds >= 0.1 | value 0.8 satisfies >= 0.1 |",
        "| ❌ | a\\|b / lds >= 0.9 | value 0.3 \\< 0.9 |",
    ]
    passing = render_markdown(_suite(_lds_entries(), checks[:1])).splitlines()
    assert "## Checks: ✅ all thresholds hold" in passing
    noted = render_markdown(_suite(_lds_entries(), checks[:1], check_notes=["no baseline *yet*"])).splitlines()
    assert "## Checks: ⚠ all checked thresholds hold" in noted and "⚠ **Note:** no baseline \\*yet\\*" in noted
    only_note = render_markdown(_suite(_lds_entries(), check_notes="max_regression not checked")).splitlines()
    assert "## Checks: ⚠ no threshold checked" in only_note and "⚠ **Note:** max_regression not checked" in only_note
