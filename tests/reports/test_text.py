"""The plain-text table (``tdaeval run`` prints it): a renderer in reports/, SuiteResult.table() delegates to it."""

import torch

from tdaeval.reports import render_text
from tests.suites.helpers import synthetic_result


def _noise(seed, n=40):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _result():
    base = 0.4 + 0.1 * _noise(1)
    return synthetic_result(
        {"lds": ({"a": base, "a_copy": base.clone(), "best": 0.9 + 0.01 * _noise(2), "undefined": torch.full((40,), float("nan"))}, True),
         "loss": ({"a": 1 + 0.1 * _noise(3), "best": 0.1 * _noise(4)}, False)},
        costs={"a": 1.5, "a_copy": 2.0, "best": 3.25, "undefined": 0.5},
        failures=[("broken", "lds", "RuntimeError: no scores")],
    )


def test_one_ranked_table_per_metric_with_ties_undefined_values_and_failures():
    lines = render_text(_result()).splitlines()
    assert lines[0] == "lds (higher is better)"
    assert lines[1].split() == ["rank", "attributor", "value", "95%", "CI", "fit", "s", "attr.", "s"]
    rows = {line.split()[1]: line.split() for line in lines[2:6]}
    assert [line.split()[1] for line in lines[2:6]] == ["best", "a", "a_copy", "undefined"]
    # tied attributors share a rank interval; an undefined value is tied with everyone (no test possible)
    assert rows["best"][0] == "1–2" and rows["a"][0] == rows["a_copy"][0] == "2–4" and rows["undefined"][0] == "1–4"
    assert rows["undefined"][2:5] == ["nan", "[nan,", "nan]"] and rows["best"][-2:] == ["3.25", "0.00"]
    assert lines[6] == "  -     broken                  could not run: RuntimeError: no scores"
    assert lines[7] == "loss (lower is better)" and lines[9].split()[:2] == ["1", "best"]


def test_table_and_str_delegate_to_the_renderer():
    result = _result()
    assert result.table() == str(result) == render_text(result)
