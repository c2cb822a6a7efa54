"""Plain-text report: one ranked table per metric, as ``tdaeval run`` prints it."""

from __future__ import annotations

import math

from tdaeval.suites.result import SuiteResult

__all__ = ["render_text"]


def _fmt(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}"


def render_text(result: SuiteResult) -> str:
    """A plain-text ranked table per metric: rank (interval), attributor, value, 95% CI, fit and attribute seconds.

    Reads the stored rankings of ``result`` (:attr:`~tdaeval.suites.SuiteResult.rankings`);
    attributors that could not run are listed under each metric with the reason.

    Parameters
    ----------
    result : SuiteResult
        The results to show.

    Returns
    -------
    str
        The table, lines joined by newlines (no trailing newline).
    """
    lines = []
    for metric in result.metrics:
        rows = result.ranking(metric)
        direction = "higher is better" if rows and result.get(rows[0].attributor, metric).higher_is_better else "lower is better"
        lines.append(f"{metric} ({direction})")
        lines.append(f"  {'rank':<6}{'attributor':<22}{'value':>9}  {'95% CI':<19}{'fit s':>8}{'attr. s':>9}")
        for r in rows:
            cost = next(e.cost for e in result.entries if e.attributor == r.attributor and e.metric == metric)
            ci = f"[{_fmt(r.ci[0])}, {_fmt(r.ci[1])}]"
            lines.append(
                f"  {r.rank_label:<6}{r.attributor:<22}{_fmt(r.value):>9}  {ci:<19}"
                f"{cost.get('fit_s', float('nan')):>8.2f}{cost.get('attribute_s', float('nan')):>9.2f}"
            )
        for e in result.failures():
            if e.metric == metric:
                lines.append(f"  {'-':<6}{e.attributor:<22}  could not run: {e.error}")
    return "\n".join(lines)
