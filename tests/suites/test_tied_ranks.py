"""Tied attributors share one rank value (their midrank) wherever a rank is computed or displayed (#13 item 6).

Two kinds of tie: identical per-example values, and different observed means
whose paired differences are far from significant. In both, three tied
attributors ahead of a clearly worse fourth must all get rank 2.0 (the
midrank of places 1–3): in the per-metric ranking, the aggregate mean rank,
the JSON document, the plain-text, Markdown and HTML tables and the colour of
the HTML heat map.
"""

import re

import jsonschema
import numpy as np
import pytest
import scipy.stats
import torch

from tdaeval.functional import rank_intervals
from tdaeval.reports import render_html
from tdaeval.reports.markdown import render_markdown
from tdaeval.reports.schema import result_schema
from tests.suites.helpers import synthetic_result

TIED = ("a", "b", "c")


def _noise(seed, n=60):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _identical():
    base = 0.4 + 0.2 * _noise(1)
    return {"a": base, "b": base.clone(), "c": base.clone(), "d": -0.6 + 0.2 * _noise(2)}


def _different_means_not_significant():
    # paired differences: zero-mean noise of sd 0.5 shifted by 0.001 (p close to 1), so the
    # observed means are ordered c > b > a although the data do not separate them
    base = 0.4 + 0.2 * _noise(3)
    out = {"d": -0.6 + 0.2 * _noise(4)}
    for shift, name in enumerate(TIED):
        wobble = 0.5 * _noise(10 + shift)
        out[name] = base + wobble - wobble.mean() + 0.001 * shift
    return out


@pytest.fixture(params=["identical", "different_means"])
def suite(request):
    values = _identical() if request.param == "identical" else _different_means_not_significant()
    lower = {name: -v for name, v in values.items()}  # the same order on a lower-is-better metric
    return synthetic_result({"lds": (values, True), "loss": (lower, False)})


def test_the_per_metric_ranking_and_the_aggregate_give_tied_attributors_their_midrank(suite):
    for metric in suite.metrics:
        rows = {r.attributor: r for r in suite.ranking(metric)}
        assert all(set(rows[n].tied_with) == set(TIED) - {n} for n in TIED)
        assert [rows[n].rank for n in TIED] == [2.0, 2.0, 2.0] and rows["d"].rank == 4.0
        assert {rows[n].rank_label for n in TIED} == {"1–3"} and rows["d"].rank_label == "4"
    aggregate = {row.attributor: row.mean_rank for row in suite.aggregate_ranking()}
    assert aggregate == {"a": 2.0, "b": 2.0, "c": 2.0, "d": 4.0}


def test_the_json_document_holds_the_shared_rank_and_validates(suite):
    doc = suite.to_dict()
    jsonschema.validate(doc, result_schema(), cls=jsonschema.Draft202012Validator)
    for item in doc["results"]:
        expected = 4.0 if item["attributor"] == "d" else 2.0
        assert item["rank"]["rank"] == expected
    for row in doc["ranking"]["aggregate"]:
        expected = 4.0 if row["attributor"] == "d" else 2.0
        assert row["mean_rank"] == expected and set(row["ranks"].values()) == {expected}


def _table_rows(text, name):
    return [line for line in text.splitlines() if re.search(rf"(^|\|)\s*{name}\s*(\||\s)", line)]


def test_text_and_markdown_tables_show_one_rank_for_tied_attributors(suite):
    table = suite.table()
    for name in TIED:
        lines = [line.split() for line in table.splitlines() if line.split()[1:2] == [name]]
        assert [line[0] for line in lines] == ["1–3", "1–3"]  # one line per metric
    md = render_markdown(suite)
    for name in TIED:
        overall, *per_metric = _table_rows(md, name)
        assert overall.split("|")[2].strip() == "2.00"  # mean rank
        assert [cell.strip() for cell in overall.split("|")[3:5]] == ["1–3", "1–3"]
        assert [line.split("|")[1].strip() for line in per_metric] == ["1–3", "1–3"]


def test_html_tables_and_heat_map_colour_tied_attributors_alike(suite):
    from tdaeval.reports import html as html_report

    page = render_html(suite)
    aggregate = page.split('<section id="aggregate">', 1)[1].split("</section>", 1)[0]
    for name in TIED:
        row = re.search(rf"<tr><td>{name}</td>(.*?)</tr>", aggregate).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[:3] == ["2.000", "1–3", "1–3"]
    views = [html_report._metric_view(suite, metric, i) for i, metric in enumerate(suite.metrics)]
    names = [row.attributor for row in suite.aggregate_ranking()]
    figure = html_report._draw_heatmap(names, views)
    image = figure.axes[0].images[0]
    colours = image.to_rgba(image.get_array())  # [attributor, metric, RGBA] as painted
    tied_rows = [names.index(n) for n in TIED]
    for j in range(len(views)):
        painted = {tuple(np.round(colours[i, j], 6)) for i in tied_rows}
        assert len(painted) == 1, f"tied attributors painted in {len(painted)} colours on {views[j].name}"
        assert tuple(np.round(colours[names.index("d"), j], 6)) not in painted


def test_clean_tie_groups_get_scipy_average_ranks_and_ranks_always_sum_like_midranks():
    generator = torch.Generator().manual_seed(7)
    for _ in range(50):
        n = int(torch.randint(2, 9, (1,), generator=generator))
        group = torch.randint(0, 4, (n,), generator=generator)  # attributors in a group are tied with each other
        means = group.double() + 0.01 * torch.rand(n, generator=generator, dtype=torch.float64)  # noisy inside a group
        significant = group.unsqueeze(0) != group.unsqueeze(1)
        rank, low, high = rank_intervals(means, significant, higher_is_better=True)
        expected = scipy.stats.rankdata(-group.numpy(), method="average")
        np.testing.assert_allclose(rank.numpy(), expected)
        # any significance pattern: ranks lie in their intervals and sum to n(n + 1)/2
        random_significant = torch.rand(n, n, generator=generator) < 0.5
        random_significant = random_significant | random_significant.T
        rank, low, high = rank_intervals(means, random_significant, higher_is_better=False)
        assert float(rank.sum()) == pytest.approx(n * (n + 1) / 2)
        assert bool(((low <= rank) & (rank <= high)).all())
