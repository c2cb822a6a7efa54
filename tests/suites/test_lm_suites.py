"""The built-in language-model suites (issue #16): ``lm-smoke`` and ``lm-standard`` validate, build as documented, and lm-smoke runs."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from tdaeval.cli import app
from tdaeval.suites import build_suite, run_suite
from tdaeval.suites.schema import builtin_suites, load_suite
from tdaeval.tasks.language import LanguageModelTask

LM_SUITES = ("lm-smoke", "lm-standard")
SMOKE_ATTRIBUTORS = ["random", "bm25", "entailment", "similarity", "grad_dot", "grad_cos"]
SMOKE_METRICS = ["mrr", "hit_at_k", "recall_at_k", "tail_patch", "lds"]
STANDARD_ATTRIBUTORS = ["random", "bm25", "bm25-prompt", "entailment", "similarity", "grad_dot", "grad_cos", "tracin", "trak",
                        "influence-ekfac"]
STANDARD_METRICS = ["mrr", "hit_at_k", "recall_at_k", "precision_at_k", "tail_patch", "lds"]


@pytest.mark.parametrize("name", LM_SUITES)
def test_lm_suites_are_builtin_and_validate_from_the_command_line(name):
    assert name in builtin_suites()
    config, folder = load_suite(name)
    assert config.name == name and folder is None and config.description
    res = CliRunner().invoke(app, ["validate", name])
    assert res.exit_code == 0, res.output
    assert f"valid suite {name!r}: task language_model" in res.stdout


def test_lm_smoke_builds_the_small_corpus_and_its_settings():
    built = build_suite("lm-smoke")
    task = built.task
    assert isinstance(task, LanguageModelTask)
    assert task.corpus.params["n_facts"] == 120 and task.corpus.params["n_entities"] == 100
    assert (len(task.train_data), len(task.test_data)) == (330, 30)  # 120 facts x 3 templates, 30 held out
    assert task.recipe.epochs == 60 and task.recipe.lr == 0.5  # only the epochs differ from the task's default recipe
    assert list(built.attributors) == SMOKE_ATTRIBUTORS
    assert [m.name for m in built.metrics] == SMOKE_METRICS
    lds = built.metrics[-1]
    assert (lds.n_subsets, lds.alpha, lds.n_seeds) == (10, 0.5, 1)


def test_lm_standard_builds_the_default_corpus_and_every_family():
    built = build_suite("lm-standard")
    task = built.task
    assert isinstance(task, LanguageModelTask)
    assert task.config() == LanguageModelTask().config()  # the default corpus and model
    assert (len(task.train_data), len(task.test_data)) == (660, 60)
    assert list(built.attributors) == STANDARD_ATTRIBUTORS
    attributors = built.attributors
    assert attributors["bm25"].query == "full" and attributors["bm25-prompt"].query == "prompt"
    assert attributors["influence-ekfac"].solver == "ekfac" and attributors["influence-ekfac"].params == "linear"
    assert [m.name for m in built.metrics] == STANDARD_METRICS
    lds = built.metrics[-1]
    assert (lds.n_subsets, lds.alpha, lds.n_seeds) == (50, 0.5, 1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lm_smoke_runs_end_to_end_with_the_expected_orderings(tmp_path):
    result = run_suite("lm-smoke", cache_dir=tmp_path / "store", progress=False)
    assert result.failures() == []
    assert {(e.attributor, e.metric) for e in result.entries} == {(a, m) for a in SMOKE_ATTRIBUTORS for m in SMOKE_METRICS}
    for entry in result.entries:
        value_, (low, high) = entry.result.value, entry.result.ci
        assert math.isfinite(value_) and low <= value_ <= high, (entry.attributor, entry.metric)

    def value(attributor, metric):
        return result.get(attributor, metric).value

    # retrieval: the indicator is perfect by construction; random's CI covers its closed form
    assert value("entailment", "mrr") == 1.0 and value("entailment", "hit_at_k") == 1.0
    for metric in ("mrr", "hit_at_k", "recall_at_k"):
        entry = result.get("random", metric)
        low, high = entry.ci
        assert low <= entry.provenance["random_baseline"] <= high, metric
    assert value("bm25", "mrr") > max(value("grad_dot", "mrr"), value("grad_cos", "mrr"))
    # tail-patch: the gradient methods lead, near the ceiling (first-order optimal at small eta)
    tail = {a: value(a, "tail_patch") for a in SMOKE_ATTRIBUTORS}
    assert max(tail, key=tail.get) in ("grad_dot", "grad_cos")
    assert tail["grad_dot"] > 0.8 * result.get("grad_dot", "tail_patch").provenance["ceiling"]
    # the retraining gold standard sides with the known proponents
    assert value("entailment", "lds") > value("random", "lds") + 0.3
    assert value("entailment", "lds") > max(value("grad_dot", "lds"), value("grad_cos", "lds"))
