"""The self-contained HTML report, on suite results built from synthetic metric results (no training)."""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from tdaeval.errors import ConfigError
from tdaeval.metrics.base import MetricResult
from tdaeval.reports import render_html
from tdaeval.suites.ranking import describe_test
from tdaeval.suites.result import Entry, SuiteResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def metric_result(metric: str, mean: float, higher_is_better: bool = True, n: int = 50, seed: int = 0, all_nan: bool = False) -> MetricResult:
    """A result whose per-example values are ``mean`` plus N(0, 0.05) noise (or all NaN)."""
    if all_nan:
        nan = float("nan")
        return MetricResult(metric, nan, (nan, nan), torch.full((n,), nan, dtype=torch.float64), higher_is_better, n)
    per_example = mean + 0.05 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    half = 1.96 * float(per_example.std()) / math.sqrt(n)
    value = float(per_example.mean())
    return MetricResult(metric, value, (value - half, value + half), per_example, higher_is_better, 0, None, {"n_subsets": 20, "alpha": 0.5})


def build_suite() -> SuiteResult:
    """4 attributors × lds (higher is better) and error (lower is better), plus one attributor that failed."""
    costs = {"fast": (0.01, 0.02), "mid": (0.3, 0.2), "slow": (4.0, 1.0), "worst": (0.05, 0.05)}
    lds = {"fast": 0.2, "mid": 0.4, "slow": 0.6, "worst": 0.0}
    error = {"fast": 0.5, "mid": 0.3, "slow": 0.1, "worst": 0.9}
    entries = []
    for seed, name in enumerate(costs):
        cost = {"fit_s": costs[name][0], "attribute_s": costs[name][1]}
        entries.append(Entry(name, "lds", metric_result("lds", lds[name], seed=seed), cost))
        entries.append(Entry(name, "error", metric_result("error", error[name], higher_is_better=False, seed=10 + seed), cost))
    entries += [Entry("broken", m, None, error="AttributorError: out of memory") for m in ("lds", "error")]
    task = {"name": "toy", "n_train": 100, "n_test": 50, "measurement": "margin", "fingerprint": "abcdef0123456789abcdef"}
    provenance = {"tdaeval": "0.1.0", "seed": 0, "device": "cpu", "metrics": {"lds": {"n_subsets": 20}}}
    return SuiteResult(entries=entries, task=task, provenance=provenance)


class _Collector(HTMLParser):
    """Start tags with their attributes; fails on an end tag that does not close the open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> _Collector:
    collector = _Collector()
    collector.feed(text)
    collector.close()
    assert collector.stack == [], f"unclosed elements: {collector.stack}"
    return collector


def plots(text: str) -> list[dict[str, str | None]]:
    return [attrs for tag, attrs in parse(text).tags if tag == "img" and attrs.get("class") == "plot"]


@pytest.fixture(scope="module")
def suite() -> SuiteResult:
    return build_suite()


@pytest.fixture(scope="module")
def report(suite) -> str:
    return render_html(suite)


def test_report_is_one_well_formed_file_with_a_png_per_plot(report):
    images = plots(report)
    assert len(images) == 4  # heat map, one dot-and-whisker plot per metric, Pareto plot
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)
        assert attrs["alt"] and len(attrs["alt"]) > 30
    tags = {tag for tag, _ in parse(report).tags}
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    for reference in ('src="http', "src='http", 'href="http', "href='http", "url(", "@import", "@font-face"):
        assert reference not in report
    assert report.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in report


def test_every_name_direction_number_and_the_ranking_test_appear(suite, report):
    text = "".join(parse(report).text)
    for name in suite.attributors + suite.metrics:
        assert name in text
    assert "could not run: AttributorError: out of memory" in text
    assert "higher is better" in text and "lower is better" in text
    assert describe_test() in text
    assert f"{suite.get('slow', 'lds').value:.3f}" in text
    assert "abcdef012345" in text and "abcdef0123456789abcdef" in text  # summary prefix; full value under provenance
    alts = " ".join(attrs["alt"] for attrs in plots(report))
    front = [p.attributor for p in suite.pareto() if p.on_front]
    assert f"Pareto front: {', '.join(front)}" in alts


def test_lower_is_better_metric_ranks_the_lowest_value_first(report):
    section = report.split('id="metric-1-error"', 1)[1].split("<section", 1)[0]
    order = re.findall(r"<tr(?: class=\"best\")?><td class=\"num\">(\d+)</td><td>(\w+)</td>", section)
    assert order == [("1", "slow"), ("2", "mid"), ("3", "fast"), ("4", "worst")]


def test_user_strings_are_escaped():
    evil = "<script>alert(1)</script>"
    entries = [
        Entry(evil, 'm"<b>', metric_result('m"<b>', 0.3), {"fit_s": 0.1, "attribute_s": 0.1}),
        Entry("ok", 'm"<b>', metric_result('m"<b>', 0.1, seed=1), {"fit_s": 0.2, "attribute_s": 0.1}),
        Entry("bad", 'm"<b>', None, error="<img src=x onerror=alert(1)>"),
    ]
    text = render_html(SuiteResult(entries, task={"name": "<i>t</i>"}, provenance={"note": "</table>"}), title="<b>T</b>")
    assert "<script" not in text and "<img src=x" not in text and "<i>t</i>" not in text and "<b>T</b>" not in text
    assert html.escape(evil) in text and "&lt;img src=x onerror=alert(1)&gt;" in text and "m&quot;&lt;b&gt;" in text
    assert len(plots(text)) == 3


def _single() -> SuiteResult:
    return SuiteResult([Entry("only", "lds", metric_result("lds", 0.3), {"fit_s": 0.1, "attribute_s": 0.2})])


def _only_failures() -> SuiteResult:
    return SuiteResult([Entry(a, m, None, error="boom") for a in ("a", "b") for m in ("lds", "error")])


def _all_nan_lds() -> SuiteResult:
    entries = []
    for seed, name in enumerate(("a", "b", "c")):
        cost = {"fit_s": 0.1 * (seed + 1), "attribute_s": 0.1}
        entries.append(Entry(name, "lds", metric_result("lds", 0.0, all_nan=True), cost))
        entries.append(Entry(name, "error", metric_result("error", 0.2 * seed, higher_is_better=False, seed=seed), cost))
    return SuiteResult(entries)


def _unpaired() -> SuiteResult:
    return SuiteResult([
        Entry("a", "lds", metric_result("lds", 0.3, n=20), {"fit_s": 0.1}),
        Entry("b", "lds", metric_result("lds", 0.2, n=30), {"fit_s": 0.2}),
    ])


@pytest.mark.parametrize(
    ("make", "n_plots", "expected"),
    [
        (_single, 3, "only"),
        (_only_failures, 0, "No attributor produced a result"),
        (_all_nan_lds, 3, "No attributor has a finite value on this metric"),
        (_unpaired, 3, "No ranking: Cannot rank"),
        (lambda: SuiteResult([]), 0, "No attributor produced a result"),
    ],
    ids=["single-attributor", "only-failures", "all-nan-metric", "unpaired-test-points", "empty"],
)
def test_edge_cases_render(make, n_plots, expected):
    text = render_html(make())
    assert len(plots(text)) == n_plots
    assert expected in text


def test_pareto_falls_back_to_a_metric_with_results():
    text = render_html(_all_nan_lds())
    assert "Quality on <strong>error</strong> (lds has no plottable result)" in text
    assert "–" in text  # the NaN values


def test_same_input_gives_the_same_html(report):
    assert render_html(build_suite()) == report


def test_rendering_leaves_matplotlib_state_alone(suite):
    import matplotlib

    with matplotlib.rc_context({"font.size": 17, "axes.facecolor": "black"}):
        before = dict(matplotlib.rcParams)
        render_html(suite)
        assert dict(matplotlib.rcParams) == before


def test_import_stays_light_and_output_is_the_same_in_a_fresh_process(report):
    code = (
        "import sys, hashlib, tdaeval, tdaeval.reports\n"
        "assert 'matplotlib' not in sys.modules, 'importing tdaeval imported matplotlib'\n"
        "from tests.reports.test_html import build_suite\n"
        "text = tdaeval.reports.render_html(build_suite())\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'rendering imported pyplot'\n"
        "print(hashlib.sha256(text.encode()).hexdigest())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == hashlib.sha256(report.encode()).hexdigest()


def test_rejects_what_is_not_a_suite_result(suite):
    with pytest.raises(ConfigError, match="SuiteResult"):
        render_html({"entries": []})
    with pytest.raises(ConfigError, match="title"):
        render_html(suite, title=3)


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], tmp_path: Path) -> str:
    """Run headless Chromium; skip (never fail) when it cannot start here."""
    command = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"headless chromium could not run: {err}")
    if done.returncode != 0:
        pytest.skip(f"headless chromium failed to start (exit {done.returncode}): {done.stderr[-600:]}")
    return done.stdout


@pytest.mark.skipif(_browser() is None, reason="the headless-browser check needs chromium or chromium-browser on the PATH")
def test_headless_chromium_loads_the_report_and_paints_its_plots(report, tmp_path):
    import matplotlib
    import matplotlib.image
    import numpy as np

    page = tmp_path / "report.html"
    page.write_text(report, encoding="utf-8")
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    if "<html" not in dom:
        pytest.skip(f"headless chromium printed no DOM: {dom[-300:]!r}")
    assert len(plots(dom)) == 4
    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()], tmp_path)
    if not shot.exists():
        pytest.skip("headless chromium wrote no screenshot")
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200) and pixels.std() > 0
    # Rank-1 cells of the heat map are painted in the colour map's first colour, which no CSS on the page uses:
    # finding it shows the embedded PNG was decoded and drawn.
    rank_one = np.array(matplotlib.colormaps["viridis_r"](0.0)[:3])
    assert int((np.abs(pixels - rank_one).max(-1) < 0.04).sum()) > 500
