"""CI verdicts: absolute floors per attributor × metric and maximum regression against a baseline."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tdaeval.errors import ConfigError
from tdaeval.suites.compare import compare_results
from tdaeval.suites.result import SuiteResult
from tdaeval.suites.schema import ThresholdSpec

__all__ = ["CheckOutcome", "baseline_note", "evaluate_checks"]


@dataclass(frozen=True)
class CheckOutcome:
    """One threshold on one attributor × metric and whether it held.

    Attributes
    ----------
    name : str
        E.g. ``"grad_dot / lds >= 0.1"``.
    kind : str
        ``"floor"`` (an absolute ``min`` or ``max``) or ``"regression"`` (against the baseline).
    value : float
        The measured value (floors) or the improvement over the baseline (regressions; positive = better).
    threshold : float
        The bound it was held to.
    ci : tuple of float
        The 95% interval of ``value``.
    """

    name: str
    kind: str
    attributor: str
    metric: str
    passed: bool
    message: str
    value: float
    threshold: float
    ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None)."""
        out = asdict(self)
        out["value"] = _finite(self.value)
        out["ci"] = [_finite(v) for v in self.ci]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckOutcome":
        """Inverse of :meth:`to_dict`."""
        nan = math.nan
        return cls(
            data["name"], data["kind"], data["attributor"], data["metric"], bool(data["passed"]), data["message"],
            nan if data["value"] is None else data["value"], data["threshold"],
            tuple(nan if v is None else v for v in data["ci"]),
        )


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _floor_outcomes(result: SuiteResult, thresholds: ThresholdSpec) -> list[CheckOutcome]:
    out = []
    for floor in thresholds.floors:
        names = [a for a in result.attributors if any(e.attributor == a and e.metric == floor.metric for e in result.entries)] \
            if floor.attributor == "*" else [floor.attributor]
        for name in names:
            for op, bound in ((">=", floor.min), ("<=", floor.max)):
                if bound is None:
                    continue
                label = f"{name} / {floor.metric} {op} {bound:g}"
                entry = next((e for e in result.entries if e.attributor == name and e.metric == floor.metric), None)
                if entry is None or entry.result is None:
                    reason = entry.error if entry is not None else "no result in this run"
                    out.append(CheckOutcome(label, "floor", name, floor.metric, False, f"could not run: {reason}",
                                            math.nan, bound, (math.nan, math.nan)))
                    continue
                r = entry.result
                low, high = r.ci
                if not math.isfinite(r.value):
                    passed, how = False, "the value is undefined (NaN)"
                elif thresholds.ci_must_clear:
                    # fail only when the whole interval lies on the wrong side
                    passed = (high >= bound) if op == ">=" else (low <= bound)
                    side = "below" if op == ">=" else "above"
                    how = f"95% CI [{low:.4g}, {high:.4g}] {'is not entirely' if passed else 'lies entirely'} {side} {bound:g}"
                else:
                    passed = (r.value >= bound) if op == ">=" else (r.value <= bound)
                    how = f"value {r.value:.4g} {'satisfies' if passed else 'violates'} {op} {bound:g}"
                out.append(CheckOutcome(label, "floor", name, floor.metric, passed, how, r.value, bound, (low, high)))
    return out


def _regression_outcomes(result: SuiteResult, baseline: SuiteResult, thresholds: ThresholdSpec, alpha: float) -> list[CheckOutcome]:
    allowed = float(thresholds.max_regression)
    out = []
    for d in compare_results(baseline, result, alpha=alpha):
        label = f"{d.attributor} / {d.metric} regression <= {allowed:g}"
        if d.status == "added":
            continue  # nothing to regress from
        if d.status in ("removed", "could not run"):
            if math.isfinite(d.base_value) and not math.isfinite(d.new_value):
                out.append(CheckOutcome(label, "regression", d.attributor, d.metric, False,
                                        "measured in the baseline, but no result in this run", math.nan, -allowed, (math.nan, math.nan)))
            continue
        low, high = d.ci if d.higher_is_better else (-d.ci[1], -d.ci[0])  # interval of the improvement
        if not math.isfinite(d.improvement):
            passed, how = False, "the change is undefined (NaN)"
        elif thresholds.ci_must_clear:
            passed = not (high < -allowed)
            how = (f"{d.base_value:.4g} -> {d.new_value:.4g}; improvement 95% CI [{low:.4g}, {high:.4g}] "
                   f"{'is not entirely' if passed else 'lies entirely'} below -{allowed:g}")
        else:
            passed = d.improvement >= -allowed
            how = f"{d.base_value:.4g} -> {d.new_value:.4g} (improvement {d.improvement:+.4g}, allowed regression {allowed:g})"
        out.append(CheckOutcome(label, "regression", d.attributor, d.metric, passed, how, d.improvement, -allowed, (low, high)))
    return out


def evaluate_checks(
    result: SuiteResult, thresholds: ThresholdSpec, baseline: SuiteResult | None = None, alpha: float = 0.05
) -> list[CheckOutcome]:
    """Every floor and regression threshold on ``result``.

    Parameters
    ----------
    result : SuiteResult
        The run under test.
    thresholds : ThresholdSpec
        Floors (``min``/``max`` per attributor × metric, ``"*"`` for all),
        ``max_regression`` (worsening allowed against the baseline, in metric
        units) and ``ci_must_clear`` (fail only when the 95% interval lies
        entirely on the wrong side of the bound).
    baseline : SuiteResult, optional
        Needed when ``max_regression`` is set.
    alpha : float
        Level of the comparison test that labels changes (reported, not enforced).

    Returns
    -------
    list of CheckOutcome
    """
    if not isinstance(thresholds, ThresholdSpec):
        raise ConfigError(f"The 'thresholds' parameter of evaluate_checks must be a ThresholdSpec. Got {type(thresholds).__name__}.")
    out = _floor_outcomes(result, thresholds)
    if thresholds.max_regression is not None:
        if baseline is None:
            raise ConfigError("thresholds.max_regression needs a baseline results file (the suite's 'baseline' key or --baseline).")
        out += _regression_outcomes(result, baseline, thresholds, alpha)
    return out


def baseline_note(thresholds: ThresholdSpec, baseline: str | Path | None) -> str | None:
    """One line saying what a missing baseline leaves unchecked; None when nothing is missing.

    ``tdaeval run`` prints it as a warning and keeps it in the reports
    (``provenance["check_notes"]``), ``tdaeval validate`` as a note, and
    ``tdaeval check`` refuses to run without the baseline that
    ``max_regression`` needs (exit code 2).

    Parameters
    ----------
    thresholds : ThresholdSpec
        The suite's thresholds.
    baseline : str or Path or None
        The baseline results file the suite (or ``--baseline``) names, resolved
        against the suite's folder; None when none is named.

    Returns
    -------
    str or None
        ``"thresholds.max_regression (0.02) is not checked: ..."`` when
        ``max_regression`` is set and the file is not named or does not exist;
        ``"the baseline file ... does not exist ..."`` when a baseline is named,
        missing and unused; otherwise None.
    """
    if not isinstance(thresholds, ThresholdSpec):
        raise ConfigError(f"The 'thresholds' parameter of baseline_note must be a ThresholdSpec. Got {type(thresholds).__name__}.")
    if baseline is not None and Path(baseline).exists():
        return None
    if thresholds.max_regression is None:
        if baseline is None:
            return None
        return f"the baseline file {str(baseline)!r} does not exist (no threshold uses it: thresholds.max_regression is not set)."
    what = f"thresholds.max_regression ({thresholds.max_regression:g}) is not checked"
    if baseline is None:
        return f"{what}: no baseline results file is set ('baseline' in the suite, or --baseline)."
    return (f"{what}: the baseline file {str(baseline)!r} does not exist "
            "(record one by copying the results.json of a run there).")
