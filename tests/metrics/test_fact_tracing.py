"""The fact-tracing metrics ``mrr``, ``hit_at_k``, ``recall_at_k``, ``precision_at_k`` (:mod:`tdaeval.metrics.fact_tracing`).

The task is a stand-in carrying ``entailment``, ``categories`` and
``category_names`` as the language-model task does (``/tmp``-independent:
no corpus, no model). References: the functional layer (itself checked
against torchmetrics, FTRACE, Quanda and brute force in
``tests/functional/test_retrieval.py``), a literal loop over argsorted rows,
the closed-form random baselines, and Quanda's own classes where installed.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.functional.retrieval import quasi_wilson_ci, random_dispersion, random_null
from tdaeval.groundtruth import EntailmentTruth, LabelTruth
from tdaeval.metrics import MRR, HitAtK, PrecisionAtK, RecallAtK, RecallAtKMetric, get_metric, metric_class
from tdaeval.metrics.fact_tracing import CI_METHOD, TIE_RULE

CATEGORIES = ("other", "proponent", "same_subject", "same_object", "same_relation", "contradiction")
NAMES = ("mrr", "hit_at_k", "recall_at_k", "precision_at_k")
FUNCTIONS = {
    "mrr": lambda s, r, k, c: F.reciprocal_rank(s, r, c),
    "hit_at_k": F.hit_at_k,
    "recall_at_k": F.recall_at_k,
    "precision_at_k": F.precision_at_k,
}
BASELINES = {
    "mrr": lambda n, m, k: F.random_reciprocal_rank(n, m),
    "hit_at_k": F.random_hit_at_k,
    "recall_at_k": F.random_recall_at_k,
    "precision_at_k": F.random_precision_at_k,
}


def fake_task(n_test: int = 60, n_train: int = 300, n_proponents: int = 2, seed: int = 0) -> SimpleNamespace:
    """A language-model-like task: each query has ``n_proponents`` proponents and categorised distractors."""
    g = torch.Generator().manual_seed(seed)
    categories = torch.multinomial(torch.tensor([0.6, 0.0, 0.1, 0.15, 0.1, 0.05]), n_test * n_train, replacement=True,
                                   generator=g).reshape(n_test, n_train).to(torch.int8)
    entailment = torch.zeros(n_test, n_train, dtype=torch.bool)
    for q in range(n_test):
        entailment[q, torch.randperm(n_train, generator=g)[:n_proponents]] = True
    categories[entailment] = CATEGORIES.index("proponent")
    return SimpleNamespace(entailment=entailment, categories=categories, category_names=CATEGORIES)


@pytest.fixture
def task() -> SimpleNamespace:
    return fake_task()


def _truth(task: SimpleNamespace) -> EntailmentTruth:
    return MRR().build_truth(task)


# ----------------------------------------------------------------------------- truth


def test_build_truth_reads_the_task(task):
    truth = _truth(task)
    assert isinstance(truth, EntailmentTruth) and truth.category_names == CATEGORIES
    assert torch.equal(truth.entailment, task.entailment) and torch.equal(truth.categories, task.categories)
    assert torch.equal(truth.category("same_object"), task.categories == 3)
    only = MRR().build_truth(SimpleNamespace(entailment=task.entailment))
    assert only.categories is None and only.category_names == ()


@pytest.mark.parametrize("name", NAMES)
def test_a_task_without_proponents_is_a_one_line_error_naming_the_metric(name, small_logreg):
    with pytest.raises(ConfigError, match=rf"^Metric '{name}' needs a task with known proponents .*e\.g\. language_model") as info:
        get_metric(name).build_truth(small_logreg)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"entailment": torch.zeros(2, 3)}, r"'entailment' field of EntailmentTruth must be a bool Tensor \[n_test, n_train\]"),
        ({"entailment": torch.zeros(3, dtype=torch.bool)}, r"'entailment' field"),
        ({"entailment": torch.zeros(2, 3, dtype=torch.bool), "categories": torch.zeros(2, 4, dtype=torch.int8), "category_names": ("a",)},
         r"'categories' field of EntailmentTruth must be an integer Tensor of shape \(2, 3\)"),
        ({"entailment": torch.zeros(2, 3, dtype=torch.bool), "categories": torch.full((2, 3), 2), "category_names": ("a", "b")},
         r"'categories' field of EntailmentTruth must hold codes in \[0, 2\)"),
        ({"entailment": torch.zeros(2, 3, dtype=torch.bool), "category_names": ("a", "a")}, r"'category_names' field .* distinct strings"),
    ],
)
def test_entailment_truth_checks_its_fields(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EntailmentTruth(**kwargs)


# ----------------------------------------------------------------------------- values and provenance


@pytest.mark.parametrize("name", NAMES)
def test_per_query_values_baseline_and_breakdown(name, task):
    truth, k = _truth(task), 7
    scores = torch.randn(task.entailment.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = get_metric(name, k=k, n_bootstrap=200).compute(scores, truth)
    expected = FUNCTIONS[name](scores, task.entailment, k, None)
    torch.testing.assert_close(result.per_example, expected, rtol=0, atol=0)
    assert result.value == pytest.approx(float(expected.mean()), abs=1e-12)
    n, m = torch.full((60,), 300), task.entailment.sum(dim=1)
    provenance = result.provenance
    assert provenance["random_baseline"] == pytest.approx(float(BASELINES[name](n, m, k).mean()), abs=1e-12)
    assert provenance["tie_rule"] == TIE_RULE and provenance["protocol"] == "full" and provenance["k"] == k
    assert provenance["pool_size_mean"] == 300 and provenance["n_relevant_mean"] == 2
    # breakdown: a literal loop over each row's k highest scores (tie-free)
    top = torch.argsort(scores, dim=1, descending=True)[:, :k]
    literal = np.bincount(task.categories.gather(1, top).flatten().long().numpy(), minlength=6) / top.numel()
    assert list(provenance["category_breakdown"]) == list(CATEGORIES)
    np.testing.assert_allclose(list(provenance["category_breakdown"].values()), literal, atol=1e-12)
    assert provenance["contradiction_rate_at_k"] == provenance["category_breakdown"]["contradiction"]
    json.dumps(result.to_dict(), allow_nan=False)  # the provenance is JSON-ready


def test_mrr_equals_a_literal_loop_and_reports_hit_at_1(task):
    scores = torch.randn(task.entailment.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    order = torch.argsort(scores, dim=1, descending=True)
    literal = [1.0 / (int(torch.nonzero(task.entailment[q, order[q]])[0]) + 1) for q in range(60)]
    result = MRR(n_bootstrap=100).compute(scores, _truth(task))
    np.testing.assert_allclose(result.per_example.numpy(), literal, atol=1e-15)
    assert result.provenance["hit_at_1"] == pytest.approx(float(np.mean([v == 1.0 for v in literal])))


def test_entailment_as_scores_is_perfect(task):
    truth, scores = _truth(task), task.entailment.double()
    assert MRR(n_bootstrap=100).compute(scores, truth).value == 1.0
    assert MRR(n_bootstrap=100).compute(scores, truth).provenance["hit_at_1"] == 1.0
    assert HitAtK(k=1, n_bootstrap=100).compute(scores, truth).value == 1.0
    assert RecallAtK(k=2, n_bootstrap=100).compute(scores, truth).value == 1.0
    result = PrecisionAtK(k=10, n_bootstrap=100).compute(scores, truth)
    assert result.value == pytest.approx(0.2) and result.provenance["category_breakdown"]["proponent"] == pytest.approx(0.2)


@pytest.mark.parametrize("protocol", ["full", "rerank"])
@pytest.mark.parametrize("name", NAMES)
def test_constant_scores_score_the_random_baseline(name, protocol, task):
    metric = get_metric(name, protocol=protocol, n_target_distractors=20, n_random_distractors=30, n_bootstrap=100)
    result = metric.compute(torch.zeros(task.entailment.shape), _truth(task))
    assert result.value == pytest.approx(result.provenance["random_baseline"], abs=1e-12)


@pytest.mark.parametrize("protocol", ["full", "rerank"])
@pytest.mark.parametrize("name", NAMES)
def test_random_scores_look_random(name, protocol):
    """A random attributor: the value's CI covers the closed-form random baseline."""
    task = fake_task(n_test=300, n_train=200, seed=4)
    metric = get_metric(name, protocol=protocol, n_target_distractors=20, n_random_distractors=30, n_bootstrap=500, seed=1)
    scores = torch.rand(task.entailment.shape, generator=torch.Generator().manual_seed(5))
    result = metric.compute(scores, _truth(task))
    low, high = result.ci
    assert low <= result.provenance["random_baseline"] <= high, (result.value, result.ci, result.provenance["random_baseline"])


NULL_NAMES = {"mrr": "reciprocal_rank", "hit_at_k": "hit_at_k", "recall_at_k": "recall_at_k", "precision_at_k": "precision_at_k"}


@pytest.mark.parametrize("protocol", ["full", "rerank"])
@pytest.mark.parametrize("name", NAMES)
def test_random_null_and_ci_equal_their_functional_definitions(name, protocol, task):
    """``random_interval``/``p_value_vs_random`` are :func:`random_null` on the metric's pools; the CI is the quasi-Wilson interval."""
    truth, k = _truth(task), 5
    metric = get_metric(name, k=k, protocol=protocol, n_target_distractors=20, n_random_distractors=30, n_bootstrap=200, seed=2,
                        n_random_draws=3000)
    scores = torch.randn(task.entailment.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    result = metric.compute(scores, truth)
    pool = (torch.ones(task.entailment.shape, dtype=torch.bool) if protocol == "full"
            else F.rerank_candidates(task.entailment, task.categories == 3, 20, 30, generator=torch.Generator().manual_seed(2)))
    sizes, m = pool.sum(dim=1), (task.entailment & pool).sum(dim=1)
    (low, high), p = random_null(result.value, NULL_NAMES[name], sizes, m, k, 3000, generator=torch.Generator().manual_seed(2))
    provenance = result.provenance
    assert provenance["random_interval"] == [low, high] and provenance["p_value_vs_random"] == p
    assert provenance["random_null"]["n_draws"] == 3000 and provenance["random_null"]["seed"] == 2
    assert low <= provenance["random_baseline"] <= high
    upper = 2 / k if name == "precision_at_k" else 1.0
    floor = random_dispersion(NULL_NAMES[name], sizes, m, k, upper)
    assert provenance["ci_method"] == CI_METHOD and provenance["ci_upper"] == upper
    assert provenance["ci_dispersion_random"] == pytest.approx(floor, abs=1e-15)
    assert result.ci == pytest.approx(quasi_wilson_ci(result.per_example, upper, floor), abs=1e-15)
    _, percentile, _ = F.nanmean_ci(result.per_example, n_resamples=200, seed=2)
    assert provenance["ci_percentile_bootstrap"] == list(percentile)
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("name", NAMES)
def test_a_random_attributor_looks_random_on_a_realistic_pool(name):
    """N = 660, m = 2, 60 queries (lm-standard's shape), ten seeds of random scores and the entailment as scores.

    Random scores: the value lies inside ``random_interval`` (a 95% range, so a miss now and then is expected: at most
    two of ten), ``p_value_vs_random`` is above 0.01 for at least nine of ten, and the CI covers the random
    expectation for at least nine of ten (the percentile bootstrap kept in the provenance misses it more often
    for MRR: it covers ≈ 70%). The proponents themselves: p at its floor 1/(n_draws + 1) < 0.001.
    """
    seeds = range(10)
    inside = above = covered = 0
    for seed in seeds:
        task = fake_task(n_test=60, n_train=660, seed=100 + seed)
        truth = _truth(task)
        metric = get_metric(name, k=10, n_bootstrap=200, seed=seed)
        scores = torch.rand(task.entailment.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        provenance = (result := metric.compute(scores, truth)).provenance
        low, high = provenance["random_interval"]
        inside += low <= result.value <= high
        above += provenance["p_value_vs_random"] > 0.01
        covered += result.ci[0] <= provenance["random_baseline"] <= result.ci[1]
    assert inside >= 8 and above >= 9 and covered >= 9, (inside, above, covered)
    proponents = metric.compute(task.entailment.double(), truth).provenance
    assert proponents["p_value_vs_random"] == 1 / 10_001 < 0.001
    assert proponents["random_interval"][1] < metric.compute(task.entailment.double(), truth).value


def test_mrr_percentile_bootstrap_misses_random_where_the_ci_does_not():
    """The finding behind the CI: on a pool with no early proponent the percentile bootstrap lies wholly below random's 0.0184."""
    task = fake_task(n_test=60, n_train=660, seed=3)
    truth = _truth(task)
    misses = 0
    for seed in range(20):
        scores = torch.rand(task.entailment.shape, generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float64)
        result = MRR(n_bootstrap=500, n_random_draws=1000).compute(scores, truth)
        baseline = result.provenance["random_baseline"]
        low, high = result.provenance["ci_percentile_bootstrap"]
        if high < baseline:
            misses += 1
            assert result.ci[0] <= baseline <= result.ci[1]  # the reported CI still covers it
            assert result.provenance["p_value_vs_random"] > 0.05  # below random's mean is not evidence of anything
    assert misses >= 2, misses


def test_recall_of_a_query_without_proponents_is_nan_and_skipped(task):
    entailment = task.entailment.clone()
    entailment[0] = False
    truth = EntailmentTruth(entailment)
    scores = torch.randn(entailment.shape, generator=torch.Generator().manual_seed(3))
    recall = RecallAtK(n_bootstrap=100).compute(scores, truth)
    assert recall.n_nan == 1 and math.isnan(recall.per_example[0].item()) and math.isfinite(recall.value)
    mrr = MRR(n_bootstrap=100).compute(scores, truth)
    assert mrr.per_example[0].item() == 0.0 and mrr.n_nan == 0 and mrr.provenance["n_queries_without_relevant"] == 1
    assert "category_breakdown" not in mrr.provenance  # no categories in this truth


# ----------------------------------------------------------------------------- rerank protocol


@pytest.mark.parametrize("name", NAMES)
def test_rerank_ranks_ftrace_pools(name, task):
    truth, k = _truth(task), 5
    scores = torch.randn(task.entailment.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    metric = get_metric(name, k=k, protocol="rerank", n_target_distractors=15, n_random_distractors=25, seed=3, n_bootstrap=100)
    result = metric.compute(scores, truth)
    pool = F.rerank_candidates(task.entailment, task.categories == 3, 15, 25, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(result.per_example, FUNCTIONS[name](scores, task.entailment, k, pool), rtol=0, atol=0)
    assert result.provenance["pool_size_mean"] == pytest.approx(float(pool.sum(dim=1).double().mean()))
    assert result.provenance["pool_size_mean"] == 2 + 15 + 25 and result.provenance["answer_sharing_category"] == "same_object"
    baseline = BASELINES[name](pool.sum(dim=1), torch.full((60,), 2), k)
    assert result.provenance["random_baseline"] == pytest.approx(float(baseline.mean()), abs=1e-12)
    other = get_metric(name, k=k, protocol="rerank", n_target_distractors=15, n_random_distractors=25, seed=4, n_bootstrap=100)
    assert not torch.equal(other.compute(scores, truth).per_example, result.per_example)
    assert torch.equal(metric.compute(scores, truth).per_example, result.per_example)


def test_rerank_without_categories_is_a_clear_error(task):
    with pytest.raises(ConfigError, match=r"^Metric 'mrr' with protocol='rerank' needs the truth's categories with a 'same_object'"):
        MRR(protocol="rerank").compute(torch.zeros(task.entailment.shape), EntailmentTruth(task.entailment))


# ----------------------------------------------------------------------------- names, parameters, bad input


def test_quanda_naming():
    assert RecallAtKMetric is HitAtK and metric_class("hit_at_k") is HitAtK
    assert "RecallAtKMetric" in HitAtK.__doc__ and "NOT Quanda's RecallAtK" in RecallAtK.__doc__
    truth = EntailmentTruth(torch.eye(3, dtype=torch.bool))
    assert HitAtK(n_bootstrap=100).compute(torch.eye(3), truth).provenance["quanda_name"] == "RecallAtKMetric"


@pytest.mark.parametrize(
    "params,match",
    [
        ({"k": 0}, r"^The 'k' parameter of MRR must be an integer >= 1\. Got 0 instead\.$"),
        ({"protocol": "ftrace"}, r"^The 'protocol' parameter of MRR must be one of 'full', 'rerank'\. Got 'ftrace' instead\.$"),
        ({"n_target_distractors": -1}, r"'n_target_distractors' parameter of MRR must be an integer >= 0"),
        ({"n_random_distractors": 1.5}, r"'n_random_distractors' parameter of MRR must be an integer >= 0"),
        ({"n_random_draws": 10}, r"'n_random_draws' parameter of MRR must be an integer >= 100"),
    ],
)
def test_parameters_are_validated(params, match):
    with pytest.raises(ConfigError, match=match):
        MRR(**params)


def test_bad_scores_and_truths_are_clear_errors(task):
    truth = _truth(task)
    with pytest.raises(ConfigError, match=r"Metric 'hit_at_k' expects scores of shape \[n_test=60, n_train=300\]"):
        HitAtK().compute(torch.zeros(60, 299), truth)
    bad = torch.zeros(60, 300)
    bad[3, 4] = math.nan
    with pytest.raises(ConfigError, match=r"^Metric 'hit_at_k': the scores have non-finite values"):
        HitAtK().compute(bad, truth)
    with pytest.raises(ConfigError, match=r"Metric 'mrr' expects its truth as a EntailmentTruth"):
        MRR().compute(torch.zeros(2, 2), LabelTruth(torch.tensor([0, 1]), torch.tensor([0, 1])))


# ----------------------------------------------------------------------------- Quanda's own classes (make test-quanda)


def test_equals_quandas_mrr_and_recall_at_k_on_tie_free_scores():
    downstream = pytest.importorskip("quanda.metrics.downstream_eval", reason="quanda is installed only in the `make test-quanda` venv")
    if not (hasattr(downstream, "MRRMetric") and hasattr(downstream, "RecallAtKMetric")):
        pytest.skip("this quanda has no MRRMetric/RecallAtKMetric in quanda.metrics.downstream_eval")
    task = fake_task(n_test=20, n_train=50, seed=7)
    scores = torch.randn(task.entailment.shape, generator=torch.Generator().manual_seed(8))
    model, train = torch.nn.Linear(4, 2), torch.utils.data.TensorDataset(torch.zeros(50, 4), torch.zeros(50, dtype=torch.long))
    theirs_mrr = downstream.MRRMetric(model, train)
    theirs_mrr.update(scores, task.entailment)
    assert MRR(n_bootstrap=100).compute(scores, _truth(task)).value == pytest.approx(theirs_mrr.compute()["score"], abs=1e-6)
    for k in (1, 3, 10):
        theirs = downstream.RecallAtKMetric(model, train, k=k)
        theirs.update(scores, task.entailment)
        assert HitAtK(k=k, n_bootstrap=100).compute(scores, _truth(task)).value == pytest.approx(theirs.compute()["score"], abs=1e-6)
