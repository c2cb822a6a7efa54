"""Self-contained HTML report: tables, a rank heat map, a dot-and-whisker plot per metric and a Pareto plot.

Everything lives in one file: the style sheet is inline and the plots are PNG
images embedded as ``data:`` URIs, so the report can be attached to a CI run
or mailed as is. The report holds no script and no external reference.

Plots (each an ``<img class="plot">``):

* one rank heat map, when at least one attributor has a result;
* per metric, one dot-and-whisker plot, when at least one value is finite;
* one Pareto plot, when at least one attributor has a finite quality and cost.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from tdaeval.errors import ConfigError
from tdaeval.reports._notes import entry_warnings, metric_notes
from tdaeval.reports.markdown import _verdict
from tdaeval.suites.ranking import AggregateRow, ParetoPoint, RankRow, describe_test
from tdaeval.suites.result import Entry, SuiteResult

__all__ = ["render_html"]

_DPI = 100
_ACCENT = "#1f5fa8"
_MUTED = "#8a8a8a"
_MISSING = "#d9d9d9"
_CMAP = "viridis_r"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#222;
background:#fff;margin:0;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.2rem 1.5rem 3rem}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}
h2{font-size:1.25rem;margin:2rem 0 .5rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
p.meta,p.note{color:#555;font-size:.9rem}
nav{font-size:.9rem;margin:.6rem 0 0}
nav a{margin-right:.9rem;color:#1f5fa8}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}
tr.best td{font-weight:600}
tr.failed td{color:#8a3b12;font-style:italic}
tr.fail td{color:#8a1212;font-weight:600}
.warn{color:#8a5a00}
td code{word-break:break-all;font-size:.82rem}
img.plot{display:block;max-width:100%;height:auto;margin:.6rem 0}
"""


@dataclass
class _MetricView:
    """Everything one metric's section needs, computed once."""

    name: str
    anchor: str
    rows: list[RankRow]
    entries: dict[str, Entry]
    failures: list[Entry] = field(default_factory=list)
    higher_is_better: bool | None = None
    ranking_error: str | None = None


def _settings(result: SuiteResult) -> dict:
    settings = result.ranking_settings()
    return {"alpha": settings["alpha"], "n_resamples": settings["n_resamples"], "correction": settings["correction"]}


def render_html(result: SuiteResult, title: str | None = None) -> str:
    """Render ``result`` as one self-contained HTML document.

    Parameters
    ----------
    result : SuiteResult
        The results to report.
    title : str, optional
        Title of the page and of its heading (default ``"tdaeval report"``, with the suite's name when known).

    Returns
    -------
    str
        The HTML text; the same input gives the same text.
    """
    if not isinstance(result, SuiteResult):
        raise ConfigError(f"render_html expects a SuiteResult. Got {type(result).__name__}.")
    if title is None:
        suite = result.provenance.get("suite") if isinstance(result.provenance.get("suite"), dict) else {}
        title = f"tdaeval report: {suite['name']}" if suite.get("name") else "tdaeval report"
    if not isinstance(title, str):
        raise ConfigError(f"The 'title' parameter of render_html must be a str. Got {type(title).__name__}.")
    views = [_metric_view(result, metric, i) for i, metric in enumerate(result.metrics)]
    aggregate = result.aggregate_ranking()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
    ]
    parts += _header(result, title, views)
    parts += _checks_section(result)
    parts += _aggregate_section(result, views, aggregate)
    for view in views:
        parts += _metric_section(view)
    parts += _pareto_section(result, views)
    parts += _provenance_section(result)
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- data


def _metric_view(result: SuiteResult, metric: str, index: int) -> _MetricView:
    entries: dict[str, Entry] = {}
    failures = []
    for e in result.entries:
        if e.metric != metric:
            continue
        if e.result is None:
            failures.append(e)
        else:
            entries.setdefault(e.attributor, e)
    first = next(iter(entries.values()), None)
    view = _MetricView(
        name=metric,
        anchor=f"metric-{index}-{re.sub(r'[^A-Za-z0-9_-]+', '-', metric).strip('-') or 'unnamed'}",
        rows=[],
        entries=entries,
        failures=failures,
        higher_is_better=None if first is None else bool(first.result.higher_is_better),
    )
    try:
        view.rows = result.ranking(metric)
    except ConfigError as err:  # e.g. per-example values of different lengths: no paired test possible
        view.ranking_error = str(err)
    return view


def _plot_rows(view: _MetricView) -> list[tuple[str, str, float, tuple[float, float]]]:
    """``(rank label, attributor, value, ci)`` best first; unranked results when the ranking failed."""
    if view.rows or view.ranking_error is None:
        return [(r.rank_label, r.attributor, _float(r.value), (_float(r.ci[0]), _float(r.ci[1]))) for r in view.rows]
    return [
        ("–", name, _float(e.result.value), (_float(e.result.ci[0]), _float(e.result.ci[1])))
        for name, e in view.entries.items()
    ]


def _direction(higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return "direction unknown"
    return "higher is better" if higher_is_better else "lower is better"


# --------------------------------------------------------------------------- sections


def _header(result: SuiteResult, title: str, views: list[_MetricView]) -> list[str]:
    out = ["<header>", f"<h1>{_e(title)}</h1>"]
    task = result.task or {}
    if task:
        bits = []
        if task.get("n_train") is not None or task.get("n_test") is not None:
            bits.append(f"{_e(task.get('n_train', '–'))} train / {_e(task.get('n_test', '–'))} test")
        if task.get("measurement") is not None:
            bits.append(f"measurement <code>{_e(task['measurement'])}</code>")
        if task.get("fingerprint"):
            bits.append(f"fingerprint <code>{_e(str(task['fingerprint'])[:12])}</code>")
        name = _e(task.get("name", "unnamed"))
        out.append(f'<p class="task">Task <strong>{name}</strong>' + (f": {', '.join(bits)}." if bits else ".") + "</p>")
    n_failed = len(result.failures())
    out.append(
        f'<p class="meta">{len(result.attributors)} attributors × {len(result.metrics)} metrics'
        + (f"; {n_failed} attributor × metric pairs could not run" if n_failed else "")
        + ".</p>"
    )
    prov = result.provenance or {}
    generated = []
    for key in ("tdaeval", "torch", "python", "seed", "device", "git"):
        if key in prov and not isinstance(prov[key], (dict, list)):
            text = _scalar(prov[key])
            generated.append(f"{key} {_e(text[:10] if key == 'git' else text)}")
    if generated:
        out.append(f'<p class="meta">Generated with {", ".join(generated)}.</p>')
    links = ['<a href="#checks">Checks</a>'] if result.checks or _check_notes(result) else []
    links += ['<a href="#aggregate">Aggregate ranking</a>']
    links += [f'<a href="#{v.anchor}">{_e(v.name)}</a>' for v in views]
    links += ['<a href="#pareto">Quality vs cost</a>', '<a href="#provenance">Provenance</a>']
    out += [f"<nav>{''.join(links)}</nav>", "</header>"]
    return out


def _check_notes(result: SuiteResult) -> list[str]:
    """``provenance["check_notes"]``: what the thresholds left out (e.g. no baseline), as a list of strings."""
    notes = (result.provenance or {}).get("check_notes") or []
    return [str(n) for n in notes] if isinstance(notes, list) else [str(notes)]


def _checks_section(result: SuiteResult) -> list[str]:
    """The threshold outcomes (``tdaeval run`` and ``check``), failed ones first in colour, and the notes."""
    notes = _check_notes(result)
    if not result.checks and not notes:
        return []
    failed = [c for c in result.checks if not c.get("passed")]
    out = ['<section id="checks">', f"<h2>Checks: {_e(_verdict(len(result.checks), len(failed), bool(notes)))}</h2>"]
    if result.checks:
        out += ["<table>", "<thead><tr><th>result</th><th>check</th><th>detail</th></tr></thead>", "<tbody>"]
        for c in result.checks:
            passed = bool(c.get("passed"))
            row = "<tr>" if passed else '<tr class="fail">'
            out.append(f'{row}<td>{"✅ pass" if passed else "❌ FAIL"}</td>'
                       f'<td>{_e(c.get("name", ""))}</td><td>{_e(c.get("message", ""))}</td></tr>')
        out += ["</tbody>", "</table>"]
    out += [f'<p class="note warn">⚠ Note: {_e(note)}</p>' for note in notes]
    out.append("</section>")
    return out


def _aggregate_section(result: SuiteResult, views: list[_MetricView], aggregate: list[AggregateRow]) -> list[str]:
    out = ['<section id="aggregate">', "<h2>Aggregate ranking</h2>"]
    out.append(
        '<p class="note">Mean rank over the metrics an attributor ran on. A label such as 1–2 is a rank interval: '
        "the ranks compatible with every significant pairwise difference (see the ranking test under Provenance).</p>"
    )
    head = "".join(f"<th>{_e(v.name)}</th>" for v in views)
    out += ["<table>", f"<thead><tr><th>attributor</th><th>mean rank</th>{head}<th>metrics ranked</th></tr></thead>", "<tbody>"]
    ranked = {row.attributor for row in aggregate}
    rows: list[tuple[str, float | None, int]] = [(r.attributor, r.mean_rank, r.n_metrics) for r in aggregate]
    rows += [(name, None, 0) for name in result.attributors if name not in ranked]
    for name, mean_rank, n_metrics in rows:
        cells = "".join(f"<td>{_rank_cell(view, name)}</td>" for view in views)
        out.append(f'<tr><td>{_e(name)}</td><td class="num">{_fmt(mean_rank)}</td>{cells}<td class="num">{n_metrics}</td></tr>')
    out += ["</tbody>", "</table>"]
    if any(view.entries for view in views):
        names = [name for name, _, _ in rows]
        png = _heatmap_png(names, views)
        alt = (f"Rank heat map: {len(names)} attributors (rows, best mean rank first) by {len(views)} metrics (columns); "
               "cell colour is the rank (1 = best) and the label is the rank interval; grey cells have no result.")
        out.append(_img(png, alt))
    else:
        out.append('<p class="note">No attributor produced a result, so there is no rank heat map.</p>')
    out.append("</section>")
    return out


def _rank_cell(view: _MetricView, name: str) -> str:
    for row in view.rows:
        if row.attributor == name:
            return _e(row.rank_label)
    failure = next((e for e in view.failures if e.attributor == name), None)
    if failure is not None:
        return f'<span title="{_e(failure.error or "")}">failed</span>'
    return "–"


def _metric_section(view: _MetricView) -> list[str]:
    direction = _direction(view.higher_is_better)
    out = [f'<section id="{_e(view.anchor)}">', f"<h2>{_e(view.name)} <small>({direction})</small></h2>"]
    first = next(iter(view.entries.values()), None)
    if first is not None:
        prov = first.result.provenance or {}
        keys = ("n_subsets", "alpha", "n_seeds", "subset_size", "seed")
        details = ", ".join(f"{k}={_e(_scalar(prov[k]))}" for k in keys if k in prov)
        if details:
            out.append(f'<p class="note">Ground truth: {details}.</p>')
    if view.ranking_error is not None:
        out.append(f'<p class="note">No ranking: {_e(view.ranking_error)}</p>')
    plot_rows = _plot_rows(view)
    if any(math.isfinite(value) for _, _, value, _ in plot_rows):
        best = plot_rows[0]
        alt = (f"Dot-and-whisker plot of {view.name} ({direction}) for {len(plot_rows)} attributors ordered by rank: "
               f"dot is the value, whisker the 95% CI; best: {best[1]} ({_fmt(best[2])}).")
        out.append(_img(_dot_whisker_png(view.name, direction, plot_rows), alt))
    elif plot_rows:
        out.append('<p class="note">No attributor has a finite value on this metric, so there is no plot.</p>')
    memory = any("peak_memory_bytes" in e.cost for e in [*view.entries.values(), *view.failures])
    columns = ["rank", "attributor", "value", "95% CI", "tied with", "fit s", "attribute s"] + (["peak memory"] if memory else [])
    out += ["<table>", "<thead><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr></thead>", "<tbody>"]
    tied = {r.attributor: r.tied_with for r in view.rows}
    low = {r.attributor: r.rank_low for r in view.rows}
    numeric = {0, 2, 5, 6, 7}  # right-aligned columns
    for label, name, value, ci in plot_rows:
        cost = view.entries[name].cost
        cells = [
            _e(label), _e(name), _fmt(value), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]",
            _e(", ".join(tied.get(name, ())) or "–"), _fmt(cost.get("fit_s")), _fmt(cost.get("attribute_s")),
        ]
        if memory:
            cells.append(_memory(cost.get("peak_memory_bytes")))
        if entry_warnings(view.entries[name]):
            cells[1] += _warning_mark(view.entries[name])
        classes = ' class="best"' if low.get(name) == 1 else ""
        tds = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells))
        out.append(f"<tr{classes}>{tds}</tr>")
    for e in view.failures:
        out.append(f'<tr class="failed"><td>–</td><td>{_e(e.attributor)}{_warning_mark(e) if entry_warnings(e) else ""}</td>'
                   f'<td colspan="{len(columns) - 2}">could not run: {_e(e.error or "unknown reason")}</td></tr>')
    out += ["</tbody>", "</table>"]
    out += _metric_notes(view)
    out.append("</section>")
    return out


def _warning_mark(entry: Entry) -> str:
    return f' <span class="warn" title="{_e("; ".join(entry_warnings(entry)))}">⚠</span>'


def _metric_notes(view: _MetricView) -> list[str]:
    """Under a metric's table: what its CI covers, its test and why a value is NaN (when the results record them), and the warnings."""
    entries = [*view.entries.values(), *view.failures]
    out = [f'<p class="note">{label}: {_e(" / ".join(values))}.</p>' for label, values in metric_notes(entries)]
    warned = [e for e in entries if entry_warnings(e)]
    if warned:
        out.append('<ul class="warn">')
        out += [f"<li>⚠ {_e(e.attributor)}: {_e('; '.join(entry_warnings(e)))}</li>" for e in warned]
        out.append("</ul>")
    return out


def _pareto_section(result: SuiteResult, views: list[_MetricView]) -> list[str]:
    out = ['<section id="pareto">', "<h2>Quality vs cost</h2>"]
    default = result.pareto_metric()
    candidates = [] if default is None else [default] + [v.name for v in views if v.name != default]
    metric, points = None, []
    for name in candidates:
        found = result.pareto(name)
        if any(_finite_point(p) for p in found):
            metric, points = name, found
            break
    if metric is None:
        out += ['<p class="note">No attributor has both a finite quality and a measured cost, so there is no Pareto plot.</p>', "</section>"]
        return out
    view = next(v for v in views if v.name == metric)
    direction = _direction(view.higher_is_better)
    note = "" if metric == default else f" ({_e(default)} has no plottable result)"
    out.append(
        f'<p class="note">Quality on <strong>{_e(metric)}</strong>{note} against fit + attribute seconds. '
        "Filled points joined by the line are the Pareto front: no other attributor is at least as good and at most as costly.</p>"
    )
    shown = [p for p in points if _finite_point(p)]
    front = [p.attributor for p in shown if p.on_front]
    alt = (f"Pareto plot of {metric} ({direction}) against cost in seconds for {len(shown)} attributors; "
           f"Pareto front: {', '.join(front) or 'none'}.")
    out.append(_img(_pareto_png(metric, direction, shown), alt))
    hidden = [p.attributor for p in points if not _finite_point(p)]
    if hidden:
        out.append(f'<p class="note">Not plotted (no finite quality or cost): {_e(", ".join(hidden))}.</p>')
    out.append("</section>")
    return out


def _finite_point(point: ParetoPoint) -> bool:
    return math.isfinite(point.quality) and math.isfinite(point.cost)


def _provenance_section(result: SuiteResult) -> list[str]:
    out = ['<section id="provenance">', "<h2>Provenance</h2>", f"<p>{_e(describe_test(**_settings(result)))}</p>"]
    for caption, data in (("Run", result.provenance or {}), ("Task", result.task or {})):
        if not data:
            continue
        out += [f"<h3>{caption}</h3>", "<table>", "<tbody>"]
        for key, value in data.items():
            out.append(f"<tr><th>{_e(key)}</th><td><code>{_e(_scalar(value))}</code></td></tr>")
        out += ["</tbody>", "</table>"]
    if not result.provenance:
        out.append('<p class="note">The result carries no provenance.</p>')
    out.append("</section>")
    return out


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    """A constrained-layout figure with its own Agg canvas (pyplot and its figure registry stay untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(draw: Any, *args: Any) -> bytes:
    """PNG bytes of the figure ``draw(*args)`` builds, under matplotlib's default style (restored afterwards)."""
    import matplotlib
    import matplotlib.style

    with matplotlib.rc_context():
        matplotlib.style.use("default")
        matplotlib.rcParams.update({"text.parse_math": False, "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9})
        fig = draw(*args)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _heatmap_png(names: list[str], views: list[_MetricView]) -> bytes:
    return _png(_draw_heatmap, names, views)


def _draw_heatmap(names: list[str], views: list[_MetricView]) -> Any:
    import matplotlib
    import numpy as np
    from matplotlib.colors import Normalize

    ranks = np.full((len(names), len(views)), np.nan)
    labels = [["–"] * len(views) for _ in names]
    for j, view in enumerate(views):
        failed = {e.attributor for e in view.failures}
        by_name = {r.attributor: r for r in view.rows}
        for i, name in enumerate(names):
            if name in by_name:
                ranks[i, j] = by_name[name].rank
                labels[i][j] = by_name[name].rank_label
            elif name in failed:
                labels[i][j] = "failed"
    vmax = max([2] + [len(v.rows) for v in views])
    cmap = matplotlib.colormaps[_CMAP].with_extremes(bad=_MISSING)
    norm = Normalize(vmin=1, vmax=vmax)
    width = min(11.0, 3.2 + 1.15 * len(views))
    fig = _figure(width, 1.1 + 0.36 * len(names))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(ranks), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    for i in range(len(names)):
        for j in range(len(views)):
            if math.isfinite(ranks[i, j]):
                r, g, b, _ = cmap(norm(ranks[i, j]))
                colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            else:
                colour = "#444444"
            ax.text(j, i, labels[i][j], ha="center", va="center", color=colour, fontsize=9)
    crowded = len(views) > 4
    ax.set_xticks(range(len(views)), [v.name for v in views], rotation=30 if crowded else 0,
                  ha="left" if crowded else "center", rotation_mode="anchor")
    ax.set_yticks(range(len(names)), names)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.02)
    bar.set_label("rank (1 = best)")
    bar.set_ticks(sorted({1, vmax} | set(range(1, vmax + 1, max(1, vmax // 5)))))
    bar.ax.invert_yaxis()
    return fig


def _dot_whisker_png(metric: str, direction: str, rows: list[tuple[str, str, float, tuple[float, float]]]) -> bytes:
    return _png(_draw_dot_whisker, metric, direction, rows)


def _draw_dot_whisker(metric: str, direction: str, rows: list[tuple[str, str, float, tuple[float, float]]]) -> Any:
    n = len(rows)
    fig = _figure(7.5, 1.0 + 0.32 * n)
    ax = fig.add_subplot()
    ys = [n - 1 - i for i in range(n)]
    for y, (_, _, value, (low, high)) in zip(ys, rows):
        if math.isfinite(low) and math.isfinite(high):
            ax.hlines(y, low, high, color=_ACCENT, linewidth=1.6)
        if math.isfinite(value):
            ax.plot([value], [y], "o", color=_ACCENT, markersize=5.5, zorder=3)
    ax.set_yticks(ys, [name if math.isfinite(value) else f"{name} (no value)" for _, name, value, _ in rows])
    ax.set_ylim(-0.7, n - 0.3)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(f"{metric} ({direction})", loc="left")
    ax.set_xlabel("value (dot) and 95% CI (whisker)")
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(ys, [label for label, _, _, _ in rows])
    right.set_ylabel("rank")
    for axis in (ax, right):
        axis.tick_params(axis="y", length=0)
        for side in ("top", "right", "left"):
            axis.spines[side].set_visible(False)
    return fig


def _pareto_png(metric: str, direction: str, points: list[ParetoPoint]) -> bytes:
    return _png(_draw_pareto, metric, direction, points)


def _draw_pareto(metric: str, direction: str, points: list[ParetoPoint]) -> Any:
    fig = _figure(7.5, 4.6)
    ax = fig.add_subplot()
    costs = [p.cost for p in points]
    log = min(costs) > 0 and max(costs) / min(costs) > 10
    dominated = [p for p in points if not p.on_front]
    front = sorted((p for p in points if p.on_front), key=lambda p: (p.cost, p.attributor))
    if dominated:
        ax.plot([p.cost for p in dominated], [p.quality for p in dominated], "o", color=_MUTED, markersize=6,
                markerfacecolor="white", label="dominated")
    if front:
        ax.plot([p.cost for p in front], [p.quality for p in front], "-o", color=_ACCENT, markersize=7, linewidth=1.4,
                label="Pareto front", zorder=3)
    for p in points:
        ax.annotate(p.attributor, (p.cost, p.quality), xytext=(5, 4), textcoords="offset points", fontsize=8,
                    color=_ACCENT if p.on_front else "#444444")
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        # plain labels (0.1, 0.2, 0.5, 1 …): the default ones are mathtext, which names must not go through
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.12, y=0.12)
    ax.set_xlabel("cost: fit + attribute seconds" + (" (log scale)" if log else ""))
    ax.set_ylabel(f"{metric} ({direction})")
    ax.set_title(f"Quality on {metric} vs cost", loc="left")
    ax.grid(color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="best", fontsize=8, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


# --------------------------------------------------------------------------- formatting


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    width, height = _png_size(png)
    return f'<img class="plot" src="data:image/png;base64,{data}" alt="{_e(alt)}" width="{width}" height="{height}">'


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value: Any, digits: int = 3) -> str:
    value = _float(value)
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def _memory(value: Any) -> str:
    value = _float(value)
    return "–" if not math.isfinite(value) else f"{value / 2**20:.3f} MiB"


def _scalar(value: Any) -> str:
    """A provenance value as text: nested containers as compact JSON, NaN and None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else "–"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(", ", ": "), default=str, ensure_ascii=False)
    return str(value)
