import numpy as np
import pytest
import torch
from scipy import stats

from tdaeval.errors import ConfigError
from tdaeval.suites.checks import evaluate_checks
from tdaeval.suites.compare import bootstrap_difference, compare_results
from tdaeval.suites.config import ThresholdSpec
from tests.suites.helpers import metric_result, synthetic_result


def _values(seed, mean, n=50, scale=0.2):
    return mean + scale * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def base():
    return synthetic_result(
        {"lds": ({"good": _values(0, 0.6), "weak": _values(1, 0.1)}, True), "loss": ({"good": _values(2, 1.0), "weak": _values(3, 2.0)}, False)},
        failures=[("broken", "lds", "RuntimeError: boom")],
    )


def test_compare_with_itself_reports_no_change(base):
    for d in compare_results(base, base):
        if d.attributor == "broken":
            assert d.status == "could not run"
            continue
        assert d.change == 0 and d.ci == (0.0, 0.0) and d.p_value == 1.0 and d.paired and d.status == "no change"


def test_compare_sees_improvements_and_regressions_in_the_metric_direction(base):
    new = synthetic_result(
        {"lds": ({"good": _values(0, 0.3), "weak": _values(1, 0.1), "added": _values(5, 0.2)}, True),
         "loss": ({"good": _values(2, 0.5), "weak": _values(3, 2.0)}, False)},
    )
    status = {(d.attributor, d.metric): d.status for d in compare_results(base, new)}
    assert status[("good", "lds")] == "regressed" and status[("good", "loss")] == "improved"
    assert status[("weak", "lds")] == "no change" and status[("added", "lds")] == "added" and status[("broken", "lds")] == "removed"


def test_unpaired_difference_interval_matches_scipy():
    a, b = metric_result(_values(6, 0.5, n=40)), metric_result(_values(7, 0.3, n=60))
    change, (low, high), p = bootstrap_difference(a, b, paired=False, n_resamples=20000)
    ref = stats.bootstrap((b.per_example.numpy(), a.per_example.numpy()), lambda x, y, axis=-1: np.mean(x, axis) - np.mean(y, axis),
                          vectorized=True, n_resamples=20000, method="percentile", random_state=0)
    assert change == pytest.approx(b.value - a.value)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.01) and high == pytest.approx(ref.confidence_interval.high, abs=0.01)
    assert p < 0.05


def test_results_of_different_tasks_are_compared_unpaired(base):
    other = synthetic_result({"lds": ({"good": _values(0, 0.6)}, True)}, fingerprint="e" * 64)
    d = next(d for d in compare_results(base, other) if d.attributor == "good" and d.metric == "lds")
    assert not d.paired and d.status == "no change"


def test_floors_hold_and_fail_on_values_and_on_intervals(base):
    holds = evaluate_checks(base, ThresholdSpec(floors=[{"attributor": "good", "metric": "lds", "min": 0.5}]))
    assert [c.passed for c in holds] == [True] and holds[0].name == "good / lds >= 0.5"
    raised = evaluate_checks(base, ThresholdSpec(floors=[{"attributor": "good", "metric": "lds", "min": 0.62}]))
    assert not raised[0].passed
    # the CI still reaches 0.62, so with ci_must_clear the floor holds
    lenient = evaluate_checks(base, ThresholdSpec(floors=[{"attributor": "good", "metric": "lds", "min": 0.62}], ci_must_clear=True))
    assert lenient[0].passed and base.get("good", "lds").ci[1] >= 0.62
    ceiling = evaluate_checks(base, ThresholdSpec(floors=[{"attributor": "*", "metric": "loss", "max": 1.5}]))
    assert {(c.attributor, c.passed) for c in ceiling} == {("good", True), ("weak", False)}


def test_a_floor_on_an_attributor_that_could_not_run_fails(base):
    out = evaluate_checks(base, ThresholdSpec(floors=[{"attributor": "broken", "metric": "lds", "min": 0.0}]))
    assert not out[0].passed and "could not run: RuntimeError: boom" in out[0].message


def test_regression_threshold_against_a_baseline(base):
    new = synthetic_result({"lds": ({"good": _values(0, 0.55), "weak": _values(1, 0.1)}, True),
                            "loss": ({"good": _values(2, 1.0), "weak": _values(3, 2.0)}, False)})
    strict = {c.name: c.passed for c in evaluate_checks(new, ThresholdSpec(max_regression=0.01), baseline=base)}
    assert strict["good / lds regression <= 0.01"] is False and strict["weak / lds regression <= 0.01"] is True
    assert all(evaluate_checks(new, ThresholdSpec(max_regression=0.1), baseline=base)[i].passed for i in range(4))
    with pytest.raises(ConfigError, match="max_regression needs a baseline"):
        evaluate_checks(new, ThresholdSpec(max_regression=0.1))


def test_compare_adjusts_p_values_over_rows_unless_asked_not_to():
    metrics = {f"m{j}": ({"a": _values(10 + j, 0.5)}, True) for j in range(8)}
    shifted = {f"m{j}": ({"a": _values(10 + j, 0.5) + (0.08 if j == 0 else 0.0)}, True) for j in range(8)}
    base, new = synthetic_result(metrics), synthetic_result(shifted)
    raw = {d.metric: d.p_value for d in compare_results(base, new, correction="none")}
    holm = {d.metric: d.p_value for d in compare_results(base, new)}
    assert holm["m0"] == pytest.approx(min(1.0, 8 * raw["m0"]))  # the smallest p-value is scaled by the number of rows
    assert all(holm[m] >= raw[m] for m in raw)
    with pytest.raises(ConfigError, match="'correction' parameter of compare_results"):
        compare_results(base, new, correction="bonferroni")
