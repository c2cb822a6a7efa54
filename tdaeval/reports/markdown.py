"""Markdown report: fits a pull-request comment or ``$GITHUB_STEP_SUMMARY``.

Every label that comes from a user (suite, task, attributor and metric names,
messages, provenance values) is escaped, so that it shows as written: HTML
cannot get in (``<script>`` stays text) and Markdown punctuation (``|``,
``*``, ``[``, backticks, ...) neither breaks a table nor formats anything.
"""

from __future__ import annotations

import math
import re

from tdaeval.reports._notes import entry_warnings, metric_notes
from tdaeval.suites.ranking import describe_test
from tdaeval.suites.result import SuiteResult

__all__ = ["render_markdown"]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# Markdown punctuation a label must not use as markup: backslash escapes work for every ASCII punctuation
# character (CommonMark), "<" and "&" included, so no HTML tag or entity survives either. (">" is left
# alone: it is markup only at the start of a line, where no label is put.)
_PUNCTUATION = re.compile(r"([\\`*\[\]<|~&])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # grad_dot stays as it is: no emphasis inside a word
WARNING = "⚠"


def _cell(text: object) -> str:
    """A user-provided label as Markdown text that shows exactly ``text``, on one line, safe inside a table cell."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", str(text))
    return _EDGE_UNDERSCORE.sub(r"\\_", _PUNCTUATION.sub(r"\\\1", text))


def _code(text: object) -> str:
    """``text`` as an inline code span (shown literally; a fence longer than any run of backticks inside)."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", str(text))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _metric_notes(entries: list) -> list[str]:
    """The note lines under a metric's table (:func:`tdaeval.reports._notes.metric_notes`), escaped for Markdown."""
    return [f"{label}: {' / '.join(_cell(v) for v in values)}." for label, values in metric_notes(entries)]


def _verdict(n_checks: int, n_failed: int, noted: bool) -> str:
    """The Checks heading: ✅/❌/⚠ and a phrase; "all checked thresholds hold" when a note says some were left out."""
    if n_failed:
        return f"❌ {n_failed} of {n_checks} thresholds failed"
    if not n_checks:
        return f"{WARNING} no threshold checked"
    return f"{WARNING} all checked thresholds hold" if noted else "✅ all thresholds hold"


def _memory(entry_cost: dict) -> str:
    value = entry_cost.get("peak_memory_bytes")
    return "–" if value is None else f"{value / 2**20:.1f}"


def render_markdown(result: SuiteResult) -> str:
    """A ranked table per metric (value ± 95% CI, direction arrow, rank interval, ties, cost),
    the aggregate rank, the quality-vs-cost Pareto set, CI checks when run, and provenance."""
    task = result.task
    suite = result.provenance.get("suite", {})
    suite = suite if isinstance(suite, dict) else {}
    lines = [f"# tdaeval report{': ' + _cell(suite['name']) if suite.get('name') else ''}", ""]
    if task:
        lines.append(
            f"Task **{_cell(task.get('name'))}** ({_cell(task.get('n_train'))} train / {_cell(task.get('n_test'))} test, "
            f"measurement {_code(task.get('measurement'))}, fingerprint {_code(str(task.get('fingerprint', ''))[:12])})."
        )
        lines.append("")
    notes = result.provenance.get("check_notes") or []
    notes = [str(n) for n in notes] if isinstance(notes, list) else [str(notes)]
    if result.checks or notes:
        failed = [c for c in result.checks if not c["passed"]]
        lines += [f"## Checks: {_verdict(len(result.checks), len(failed), bool(notes))}", ""]
        if result.checks:
            lines += ["| | check | detail |", "|---|---|---|"]
            for c in result.checks:
                lines.append(f"| {'✅' if c['passed'] else '❌'} | {_cell(c['name'])} | {_cell(c['message'])} |")
            lines.append("")
        for note in notes:  # e.g. a regression threshold left out for want of a baseline
            lines += [f"{WARNING} **Note:** {_cell(note)}", ""]
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
                f"{k}={_cell(prov[k])}" for k in ("n_subsets", "alpha", "n_seeds", "subset_size", "n_removed", "k_grid", "seed") if k in prov
            )
            if details:
                lines += [f"Ground truth: {details}.", ""]
        lines.append("| rank | attributor | value | 95% CI | tied with | fit (s) | attribute (s) | peak memory (MiB) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        warned = []
        for r in rows:
            entry = next(e for e in result.entries if e.attributor == r.attributor and e.metric == metric)
            tied = ", ".join(_cell(t) for t in r.tied_with) or "–"
            mark = f" {WARNING}" if entry_warnings(entry) else ""
            warned += [entry] if mark else []
            lines.append(
                f"| {r.rank_label} | {_cell(r.attributor)}{mark} | {_fmt(r.value)} | [{_fmt(r.ci[0])}, {_fmt(r.ci[1])}] | {tied} "
                f"| {_fmt(entry.cost.get('fit_s'), 2)} | {_fmt(entry.cost.get('attribute_s'), 2)} | {_memory(entry.cost)} |"
            )
        for e in failures:
            mark = f" {WARNING}" if entry_warnings(e) else ""
            warned += [e] if mark else []
            lines.append(f"| – | {_cell(e.attributor)}{mark} | could not run: {_cell(e.error)} | | | | | |")
        lines.append("")
        notes = _metric_notes([e for e in result.entries if e.metric == metric])
        if notes:
            lines += [" ".join(notes), ""]
        for e in warned:
            lines += [f"{WARNING} {_cell(e.attributor)}: {'; '.join(_cell(w) for w in entry_warnings(e))}", ""]
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
        lines += ["", f"tdaeval {_cell(prov.get('tdaeval'))}, torch {_cell(prov.get('torch'))}, python {_cell(prov.get('python'))}, "
                  f"seed {_cell(prov.get('seed'))}, device {_cell(prov.get('device'))}, git {_cell(str(prov.get('git') or '–')[:10])}."]
    return "\n".join(lines) + "\n"
