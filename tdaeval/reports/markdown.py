"""Markdown report: fits a pull-request comment or ``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

import math

from tdaeval.suites.result import SuiteResult

__all__ = ["render_markdown"]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def render_markdown(result: SuiteResult) -> str:
    """A ranked table per metric with 95% CIs, rank intervals, ties, cost and provenance."""
    task = result.task
    lines = ["# tdaeval report", ""]
    if task:
        lines.append(
            f"Task **{task.get('name')}** ({task.get('n_train')} train / {task.get('n_test')} test, "
            f"measurement `{task.get('measurement')}`, fingerprint `{str(task.get('fingerprint', ''))[:12]}`)."
        )
        lines.append("")
    for metric in result.metrics:
        rows = result.ranking(metric)
        if not rows and not result.failures():
            continue
        first = result.get(rows[0].attributor, metric) if rows else None
        direction = "higher is better" if first is None or first.higher_is_better else "lower is better"
        lines += [f"## {metric} ({direction})", ""]
        if first is not None:
            prov = first.provenance
            details = ", ".join(
                f"{k}={prov[k]}" for k in ("n_subsets", "alpha", "n_seeds", "subset_size", "seed") if k in prov
            )
            if details:
                lines += [f"Ground truth: {details}; every subset model trained from scratch.", ""]
        lines.append("| rank | attributor | value | 95% CI | tied with | fit (s) | attribute (s) |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            entry = next(e for e in result.entries if e.attributor == r.attributor and e.metric == metric)
            tied = ", ".join(r.tied_with) or "–"
            lines.append(
                f"| {r.rank_label} | {r.attributor} | {_fmt(r.value)} | [{_fmt(r.ci[0])}, {_fmt(r.ci[1])}] | {tied} "
                f"| {_fmt(entry.cost.get('fit_s'), 2)} | {_fmt(entry.cost.get('attribute_s'), 2)} |"
            )
        for e in result.failures():
            if e.metric == metric:
                lines.append(f"| – | {e.attributor} | could not run: {e.error} | | | | |")
        lines.append("")
    lines.append(
        "Ranks come from a paired bootstrap over test points; a range such as 1–2 is the 95% rank "
        "interval, and attributors whose intervals overlap are listed as tied."
    )
    prov = result.provenance
    if prov:
        lines += ["", f"tdaeval {prov.get('tdaeval')}, torch {prov.get('torch')}, python {prov.get('python')}, "
                  f"seed {prov.get('seed')}, device {prov.get('device')}, git {str(prov.get('git') or '–')[:10]}."]
    return "\n".join(lines) + "\n"
