"""Markdown report: fits a pull-request comment or ``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

import math

from tdaeval.suites.ranking import describe_test
from tdaeval.suites.result import SuiteResult

__all__ = ["render_markdown"]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _memory(entry_cost: dict) -> str:
    value = entry_cost.get("peak_memory_bytes")
    return "–" if value is None else f"{value / 2**20:.1f}"


def render_markdown(result: SuiteResult) -> str:
    """A ranked table per metric (value ± 95% CI, direction arrow, rank interval, ties, cost),
    the aggregate rank, the quality-vs-cost Pareto set, CI checks when run, and provenance."""
    task = result.task
    suite = result.provenance.get("suite", {})
    lines = [f"# tdaeval report{': ' + _cell(suite['name']) if suite.get('name') else ''}", ""]
    if task:
        lines.append(
            f"Task **{_cell(task.get('name'))}** ({task.get('n_train')} train / {task.get('n_test')} test, "
            f"measurement `{task.get('measurement')}`, fingerprint `{str(task.get('fingerprint', ''))[:12]}`)."
        )
        lines.append("")
    if result.checks:
        failed = [c for c in result.checks if not c["passed"]]
        verdict = "all thresholds hold" if not failed else f"{len(failed)} of {len(result.checks)} thresholds failed"
        lines += [f"## Checks: {'✅' if not failed else '❌'} {verdict}", "", "| | check | detail |", "|---|---|---|"]
        for c in result.checks:
            lines.append(f"| {'✅' if c['passed'] else '❌'} | {_cell(c['name'])} | {_cell(c['message'])} |")
        lines.append("")
    aggregate = result.aggregate_ranking()
    if len(result.metrics) > 1 and aggregate:
        lines += ["## Overall", "", "| attributor | mean rank | " + " | ".join(_cell(m) for m in result.metrics) + " |",
                  "|---|---|" + "---|" * len(result.metrics)]
        for row in aggregate:
            ranks = " | ".join(row.ranks[m].rank_label if m in row.ranks else "–" for m in result.metrics)
            lines.append(f"| {_cell(row.attributor)} | {row.mean_rank:.2f} | {ranks} |")
        lines.append("")
    for metric in result.metrics:
        rows = result.ranking(metric)
        failures = [e for e in result.failures() if e.metric == metric]
        if not rows and not failures:
            continue
        first = result.get(rows[0].attributor, metric) if rows else None
        arrow = "↑ higher is better" if first is None or first.higher_is_better else "↓ lower is better"
        lines += [f"## {_cell(metric)} ({arrow})", ""]
        if first is not None:
            prov = first.provenance
            details = ", ".join(
                f"{k}={prov[k]}" for k in ("n_subsets", "alpha", "n_seeds", "subset_size", "n_removed", "k_grid", "seed") if k in prov
            )
            if details:
                lines += [f"Ground truth: {details}.", ""]
        lines.append("| rank | attributor | value | 95% CI | tied with | fit (s) | attribute (s) | peak memory (MiB) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in rows:
            entry = next(e for e in result.entries if e.attributor == r.attributor and e.metric == metric)
            tied = ", ".join(_cell(t) for t in r.tied_with) or "–"
            lines.append(
                f"| {r.rank_label} | {_cell(r.attributor)} | {_fmt(r.value)} | [{_fmt(r.ci[0])}, {_fmt(r.ci[1])}] | {tied} "
                f"| {_fmt(entry.cost.get('fit_s'), 2)} | {_fmt(entry.cost.get('attribute_s'), 2)} | {_memory(entry.cost)} |"
            )
        for e in failures:
            lines.append(f"| – | {_cell(e.attributor)} | could not run: {_cell(e.error)} | | | | | |")
        lines.append("")
    pareto = [p for p in result.pareto() if p.on_front]
    if pareto:
        lines += [
            f"**Quality vs cost** (Pareto set on {_cell(result.pareto_metric())} against fit + attribute seconds): "
            + ", ".join(f"{_cell(p.attributor)} ({_fmt(p.quality)}, {p.cost:.2f} s)" for p in sorted(pareto, key=lambda p: p.cost)),
            "",
        ]
    settings = result.ranking_settings()
    lines.append(
        "Ranks: 1 is best; a range such as 1–2 is the rank interval. "
        + describe_test(settings["alpha"], settings["n_resamples"], settings["correction"])
    )
    prov = result.provenance
    if prov:
        lines += ["", f"tdaeval {prov.get('tdaeval')}, torch {prov.get('torch')}, python {prov.get('python')}, "
                  f"seed {prov.get('seed')}, device {prov.get('device')}, git {str(prov.get('git') or '–')[:10]}."]
    return "\n".join(lines) + "\n"
