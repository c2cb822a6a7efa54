"""Rankings are computed once by the runner and stored; results documents read back unchanged (#15, point 3).

One real small run (failures, warnings, undefined values and tied attributors) is ranked exactly once per
metric across ``evaluate``, writing ``results.json``, every report and reading the file back; the document
read back renders the same reports without any bootstrap, and ``from_dict``/``to_dict`` are inverses.
"""

import json
import math
import warnings

import jsonschema
import pytest
import torch

import tdaeval
import tdaeval.suites.ranking as ranking_module
from tdaeval.errors import ConfigError, ConvergenceWarning
from tdaeval.reports import render_html, render_junit, render_markdown
from tdaeval.reports.schema import result_schema
from tdaeval.suites import SuiteResult
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask
from tests.suites.helpers import synthetic_result

METRICS = {"lds": {"n_subsets": 6}, "class_detection": {"label": "true"}}


def input_dot(model, train, test):
    return test.inputs @ train.inputs.T


def input_dot_again(model, train, test):  # the same scores under another name: tied with input_dot everywhere
    return test.inputs @ train.inputs.T


def warns(model, train, test):
    warnings.warn("solver stopped early", ConvergenceWarning, stacklevel=2)
    return -(test.inputs @ train.inputs.T)


def flat(model, train, test):  # constant scores: every LDS correlation is undefined (NaN value, CI and p-values)
    return torch.zeros(len(test), len(train))


def broken(model, train, test):
    raise RuntimeError("no scores today")


ATTRIBUTORS = {"input_dot": input_dot, "input_dot_again": input_dot_again, "warns": warns, "flat": flat, "broken": broken,
               "grad_dot": "grad_dot"}


def _task():
    return DigitsTask(model="logreg", n_train=200, n_test=20, recipe=TrainRecipe(epochs=3, batch_size=32))


class Bootstraps:
    """Counts the paired bootstraps of the ranking, with the shape ``[A, n]`` of each."""

    def __init__(self):
        self.shapes = []
        self.real = ranking_module.paired_bootstrap_differences

    def __call__(self, per_example, *args, **kwargs):
        self.shapes.append(tuple(per_example.shape))
        return self.real(per_example, *args, **kwargs)


def _evaluate(cache, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tdaeval.evaluate(_task(), attributors=ATTRIBUTORS, metrics=METRICS, cache_dir=cache, on_error="record",
                                progress=False, **kwargs)


def _reports(result):
    return {"md": render_markdown(result), "html": render_html(result), "junit": render_junit(result), "table": result.table(),
            "str": str(result)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``(result, bootstraps during evaluate, reports, results.json path, bootstraps while writing and reporting)``."""
    folder = tmp_path_factory.mktemp("run")
    counter = Bootstraps()
    patch = pytest.MonkeyPatch()
    patch.setattr(ranking_module, "paired_bootstrap_differences", counter)
    try:
        result = _evaluate(folder / "cache")
        during_run = list(counter.shapes)
        path = folder / "results.json"
        result.to_json(path)
        reports = _reports(result)
        result.aggregate_ranking(), result.pareto()
        after = counter.shapes[len(during_run):]
    finally:
        patch.undo()
    return result, during_run, reports, path, after


def test_the_run_has_what_the_document_must_carry(run):
    """Failures, warnings, an undefined value and tied attributors: what the round trip below must keep."""
    result = run[0]
    assert {e.attributor for e in result.failures()} == {"broken"}
    assert all(e.warnings == ["ConvergenceWarning: solver stopped early"] for e in result.entries if e.attributor == "warns")
    assert math.isnan(result.get("flat", "lds").value)
    rows = {r.attributor: r for r in result.ranking("lds")}
    assert "input_dot_again" in rows["input_dot"].tied_with and rows["input_dot"].rank == rows["input_dot_again"].rank
    assert all(math.isnan(p) for p in rows["flat"].p_values.values())


def test_each_metric_is_ranked_exactly_once_across_run_reports_and_reading_back(run, monkeypatch):
    result, during_run, _, path, after = run
    counter = Bootstraps()
    monkeypatch.setattr(ranking_module, "paired_bootstrap_differences", counter)
    again = SuiteResult.from_json(path)
    _reports(again)
    again.aggregate_ranking(), again.pareto(), again.to_json()
    ranked = [len({e.attributor for e in result.entries if e.metric == m and e.result is not None}) for m in METRICS]
    assert during_run + after + counter.shapes == [(n, 20) for n in ranked]  # one bootstrap per metric: [A, n_test]
    assert during_run == [(n, 20) for n in ranked]  # ... done by the runner


def test_a_document_read_back_renders_the_same_reports_without_any_bootstrap(run, monkeypatch):
    _, _, reports, path, _ = run
    counter = Bootstraps()
    monkeypatch.setattr(ranking_module, "paired_bootstrap_differences", counter)
    again = SuiteResult.from_json(path)
    assert _reports(again) == reports
    assert counter.shapes == []


def test_to_dict_and_from_dict_are_inverses(run):
    result = run[0]
    doc = result.to_dict()
    again = SuiteResult.from_dict(doc)
    assert again.to_dict() == doc
    text = result.to_json()
    assert SuiteResult.from_dict(json.loads(text)).to_json() == text
    # and the data itself: entries with their warnings and failures, rankings (repr: NaN where undefined, p-values included)
    def key(e):
        return e.attributor, e.metric, e.error, e.traceback, e.warnings, e.cost, e.attributor_params

    assert sorted(map(key, again.entries), key=repr) == sorted(map(key, result.entries), key=repr)
    assert again.metrics == result.metrics
    for metric in result.metrics:
        assert repr(again.ranking(metric)) == repr(result.ranking(metric))
    assert repr(again.aggregate_ranking()) == repr(result.aggregate_ranking())
    assert repr(again.pareto()) == repr(result.pareto())
    assert again.rankings.settings == result.rankings.settings == {"alpha": 0.05, "n_resamples": 2000, "correction": "holm", "seed": 0}


def test_the_document_stores_the_rankings_and_validates(run):
    result, _, _, path, _ = run
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, result_schema(), cls=jsonschema.Draft202012Validator)
    block = doc["ranking"]
    assert block["order"]["lds"] == [r.attributor for r in result.ranking("lds")] and block["errors"] == {} and block["seed"] == 0
    assert block["pareto"]["metric"] == "lds"
    assert {p["attributor"] for p in block["pareto"]["points"]} == {"input_dot", "input_dot_again", "warns", "flat", "grad_dot"}
    flat = next(p for p in block["pareto"]["points"] if p["attributor"] == "flat")
    assert flat["quality"] is None and flat["on_front"] is False
    ranked = {item["attributor"]: item["rank"] for item in doc["results"] if item["metric"] == "lds" and "rank" in item}
    assert ranked["flat"]["p_values"]["input_dot"] is None
    assert ranked["input_dot"]["p_values"]["input_dot_again"] == 1.0


def test_a_document_without_stored_rankings_is_ranked_once_when_read(run, monkeypatch):
    """Documents written before the rankings were stored: computed when first needed, with the same numbers."""
    _, _, reports, path, _ = run
    doc = json.loads(path.read_text())
    for key in ("order", "errors", "pareto", "seed"):
        del doc["ranking"][key]
    for item in doc["results"]:
        item.get("rank", {}).pop("p_values", None)
    counter = Bootstraps()
    monkeypatch.setattr(ranking_module, "paired_bootstrap_differences", counter)
    old = SuiteResult.from_dict(doc)
    assert old.rankings is None
    assert render_markdown(old) == reports["md"] and render_html(old) == reports["html"] and old.table() == reports["table"]
    assert len(counter.shapes) == len(METRICS)


def test_other_settings_rank_again_without_replacing_the_stored_rows(run, monkeypatch):
    result = run[0]
    stored = result.ranking("lds")
    counter = Bootstraps()
    monkeypatch.setattr(ranking_module, "paired_bootstrap_differences", counter)
    assert result.ranking("lds", alpha=0.05, n_resamples=2000, seed=0, correction="holm") == stored  # the stored question
    assert counter.shapes == []
    other = result.ranking("lds", n_resamples=200, seed=3)
    assert len(counter.shapes) == 1 and [r.attributor for r in other]
    assert result.ranking("lds") == stored and result.rankings.settings["n_resamples"] == 2000
    with pytest.raises(ConfigError, match="'alpha' parameter of the ranking"):
        result.ranking("lds", alpha=2.0)


def test_evaluate_takes_the_ranking_settings_and_checks_them_before_running(tmp_path):
    with pytest.raises(ConfigError, match=r"'ranking' parameter of evaluate has unknown key\(s\) \['level'\]"):
        tdaeval.evaluate(_task(), attributors={"a": input_dot}, cache_dir=tmp_path, ranking={"level": 0.1})
    with pytest.raises(ConfigError, match="'n_resamples' parameter of the ranking must be an integer >= 1"):
        tdaeval.evaluate(_task(), attributors={"a": input_dot}, cache_dir=tmp_path, ranking={"n_resamples": 0})
    assert not any(tmp_path.iterdir())  # nothing was trained
    result = tdaeval.evaluate(_task(), attributors={"a": input_dot, "b": input_dot_again, "g": "grad_dot"},
                              metrics={"lds": {"n_subsets": 4}}, cache_dir=tmp_path, progress=False,
                              ranking={"alpha": 0.2, "n_resamples": 300, "correction": "none"})
    assert result.rankings.settings == {"alpha": 0.2, "n_resamples": 300, "correction": "none", "seed": 0}
    assert result.provenance["ranking"] == {"alpha": 0.2, "n_resamples": 300, "correction": "none"}
    assert result.ranking("lds") == result.ranking("lds", alpha=0.2, n_resamples=300, correction="none", seed=0)
    assert result.to_dict()["ranking"]["n_resamples"] == 300


def _unequal_lengths():
    result = synthetic_result({"lds": ({"a": torch.linspace(0, 1, 40), "b": torch.linspace(0, 2, 40)}, True),
                               "loss": ({"a": torch.ones(40), "b": torch.ones(30)}, False)})
    return result


def test_a_metric_that_cannot_be_ranked_is_recorded_written_and_read_back():
    result = _unequal_lengths()
    rankings = result.rank()
    assert set(rankings.errors) == {"loss"} and "different lengths" in rankings.errors["loss"]
    assert [r.attributor for r in rankings.per_metric["lds"]] == ["b", "a"]
    with pytest.raises(ConfigError, match="different lengths"):
        result.ranking("loss")
    doc = result.to_dict()
    assert doc["ranking"]["errors"] == rankings.errors and doc["ranking"]["order"]["loss"] == []
    again = SuiteResult.from_dict(doc)
    assert again.to_dict() == doc
    with pytest.raises(ConfigError, match="different lengths"):
        again.ranking("loss")
    assert "No ranking: " in render_html(again)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d["ranking"]["order"]["lds"].append("ghost"), r"ranking\.order\.lds: 'ghost' has no ranked result on 'lds'"),
        (lambda d: d["ranking"].pop("pareto"), r"ranking: 'pareto' is a dependency of 'order'"),
        (lambda d: d["ranking"]["pareto"]["points"][0].update(on_front="yes"), r"ranking\.pareto\.points\.0\.on_front: 'yes' is not of type"),
        (lambda d: d["ranking"]["aggregate"][0]["ranks"].update(loss=1.0),
         r"ranking\.aggregate: '\w+' has a rank on 'loss' but no row in ranking\.order"),
    ],
)
def test_malformed_stored_rankings_are_named(edit, match):
    doc = synthetic_result({"lds": ({"a": torch.linspace(0, 1, 40), "b": torch.linspace(0, 2, 40)}, True)}).to_dict()
    edit(doc)
    with pytest.raises(ConfigError, match=match):
        SuiteResult.from_dict(doc, source="r.json")
