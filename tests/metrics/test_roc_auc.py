"""The fact-tracing metrics ``roc_auc`` (DDA's per-query AUC) and ``contradiction_rate_at_k`` (FASTTRACK's diagnostic), issue #17.

References: ``sklearn.metrics.roc_auc_score`` per query (ties included), a
literal loop over each query's top-k, the closed-form random baselines, the
functional definitions of the random null and the CI, and random attributors
(value near chance, p-value not small).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.functional.retrieval import quasi_wilson_ci, random_dispersion, random_null
from tdaeval.groundtruth import EntailmentTruth
from tdaeval.metrics import ContradictionRateAtK, RocAuc, get_metric, metric_class

CATEGORIES = ("other", "proponent", "same_subject", "same_object", "same_relation", "contradiction")
CONTRADICTION = CATEGORIES.index("contradiction")


def fake_task(n_test: int = 60, n_train: int = 300, n_proponents: int = 2, seed: int = 0) -> SimpleNamespace:
    """A language-model-like task: ``n_proponents`` proponents per query, categorised distractors, ~5% contradictions."""
    g = torch.Generator().manual_seed(seed)
    categories = torch.multinomial(torch.tensor([0.6, 0.0, 0.1, 0.15, 0.1, 0.05]), n_test * n_train, replacement=True,
                                   generator=g).reshape(n_test, n_train).to(torch.int8)
    entailment = torch.zeros(n_test, n_train, dtype=torch.bool)
    for q in range(n_test):
        entailment[q, torch.randperm(n_train, generator=g)[:n_proponents]] = True
    categories[entailment] = CATEGORIES.index("proponent")
    return SimpleNamespace(entailment=entailment, categories=categories, category_names=CATEGORIES)


def _truth(task: SimpleNamespace) -> EntailmentTruth:
    return RocAuc().build_truth(task)


def test_registered_with_their_directions():
    assert metric_class("roc_auc") is RocAuc and metric_class("contradiction_rate_at_k") is ContradictionRateAtK
    assert RocAuc.higher_is_better and not ContradictionRateAtK.higher_is_better
    assert RocAuc.bounds == ContradictionRateAtK.bounds == (0.0, 1.0)


# ----------------------------------------------------------------------------- roc_auc


def test_roc_auc_equals_sklearn_per_query_and_records_the_null():
    task = fake_task(n_proponents=3)
    truth = _truth(task)
    scores = torch.randint(0, 8, task.entailment.shape, generator=torch.Generator().manual_seed(1)).double()  # ties
    scores += 3.0 * task.entailment  # an informative attributor
    result = RocAuc(n_bootstrap=200, n_random_draws=2000).compute(scores, truth)
    expected = [roc_auc_score(task.entailment[q].numpy(), scores[q].numpy()) for q in range(60)]
    np.testing.assert_allclose(result.per_example.numpy(), expected, rtol=0, atol=1e-12)
    assert result.value == pytest.approx(float(np.mean(expected)), abs=1e-12) and result.higher_is_better
    provenance = result.provenance
    assert provenance["random_baseline"] == 0.5 and provenance["target"] == "proponents"
    assert provenance["n_queries_without_positive"] == 0 and provenance["n_queries_without_negative"] == 0
    sizes, m = torch.full((60,), 300), torch.full((60,), 3)
    (low, high), p = random_null(result.value, "roc_auc", sizes, m, None, 2000, generator=torch.Generator().manual_seed(0))
    assert provenance["random_interval"] == [low, high] and provenance["p_value_vs_random"] == p == 1 / 2001
    assert low < 0.5 < high
    floor = random_dispersion("roc_auc", sizes, m)
    assert floor == pytest.approx((300 + 1) / (3 * 3 * 297), rel=1e-9)  # Var(AUC)/(1/4) = (N + 1)/(3 P Q)
    assert provenance["ci_dispersion_random"] == pytest.approx(floor, abs=1e-15)
    assert result.ci == pytest.approx(quasi_wilson_ci(result.per_example, 1.0, floor), abs=1e-15)
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("protocol", ["full", "rerank"])
def test_roc_auc_of_random_attributors_is_near_a_half_with_large_p_values(protocol):
    """Ten random attributors: value near 0.5, p-value > 0.01 for at least nine, CI covering 0.5 for at least eight; the proponents: p at its floor.

    (Measured over 200 random attributors on this task: the CI covers 0.5 for 96.5% (full) and 95.5% (rerank), p > 0.01 for 99.5%.)
    """
    task = fake_task(n_test=60, n_train=400, seed=3)
    truth = _truth(task)
    above = covered = 0
    for seed in range(10):
        metric = RocAuc(protocol=protocol, n_target_distractors=40, n_random_distractors=60, n_bootstrap=100, seed=seed,
                        n_random_draws=2000)
        scores = torch.rand(task.entailment.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        result = metric.compute(scores, truth)
        assert abs(result.value - 0.5) < 0.1
        low, high = result.provenance["random_interval"]
        assert low < 0.5 < high
        above += result.provenance["p_value_vs_random"] > 0.01
        covered += result.ci[0] <= 0.5 <= result.ci[1]
    assert above >= 9 and covered >= 8, (above, covered)
    perfect = metric.compute(task.entailment.double(), truth)
    assert perfect.value == 1.0 and perfect.provenance["p_value_vs_random"] == 1 / 2001


def test_constant_scores_give_exactly_a_half():
    task = fake_task()
    assert RocAuc(n_bootstrap=100).compute(torch.zeros(task.entailment.shape), _truth(task)).value == 0.5


def test_queries_without_a_positive_or_a_negative_are_left_out_and_counted():
    task = fake_task(n_test=10, n_train=50)
    entailment = task.entailment.clone()
    entailment[0] = False  # no positive
    entailment[1] = True  # no negative
    truth = EntailmentTruth(entailment)
    scores = torch.randn(10, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    result = RocAuc(n_bootstrap=100, n_random_draws=500).compute(scores, truth)
    assert math.isnan(result.per_example[0]) and math.isnan(result.per_example[1]) and result.n_nan == 2
    assert result.value == pytest.approx(float(result.per_example[2:].mean()), abs=1e-12) and math.isfinite(result.value)
    provenance = result.provenance
    assert provenance["n_queries_without_positive"] == 1 and provenance["n_queries_without_negative"] == 1
    assert all(math.isfinite(v) for v in (*result.ci, provenance["p_value_vs_random"], *provenance["random_interval"]))
    json.dumps(result.to_dict(), allow_nan=False)
    with pytest.raises(ConfigError, match=r"^Metric 'roc_auc' needs a query with both a proponent and another item") as info:
        RocAuc(n_bootstrap=100).compute(scores, EntailmentTruth(torch.zeros(10, 50, dtype=torch.bool)))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- contradiction_rate_at_k


def test_contradiction_rate_equals_a_literal_loop_and_the_breakdown():
    task, k = fake_task(), 7
    truth = _truth(task)
    scores = torch.randn(task.entailment.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    result = ContradictionRateAtK(k=k, n_bootstrap=100, n_random_draws=2000).compute(scores, truth)
    literal = []
    for q in range(60):
        top = sorted(range(300), key=lambda i: -float(scores[q, i]))[:k]
        literal.append(sum(int(task.categories[q, i]) == CONTRADICTION for i in top) / k)
    np.testing.assert_allclose(result.per_example.numpy(), literal, rtol=0, atol=1e-15)
    provenance = result.provenance
    assert not result.higher_is_better and provenance["target"] == "contradictions"
    assert result.value == pytest.approx(provenance["contradiction_rate_at_k"], abs=1e-12)  # the breakdown's column
    c = (task.categories == CONTRADICTION).sum(dim=1)
    assert provenance["random_baseline"] == pytest.approx(float((c.double() / 300).mean()), abs=1e-12)  # k·(c/N)/k
    assert provenance["n_relevant_mean"] == pytest.approx(float(c.double().mean()))
    sizes = torch.full((60,), 300)
    (low, high), p = random_null(result.value, "contradiction_rate_at_k", sizes, c, k, 2000, generator=torch.Generator().manual_seed(0),
                                 higher_is_better=False)
    assert provenance["random_interval"] == [low, high] and provenance["p_value_vs_random"] == p
    upper = float((torch.minimum(c, torch.tensor(k)) / k).max())
    assert provenance["ci_upper"] == pytest.approx(upper)
    floor = random_dispersion("contradiction_rate_at_k", sizes, c, k, upper)
    assert result.ci == pytest.approx(quasi_wilson_ci(result.per_example, upper, floor), abs=1e-15)
    json.dumps(result.to_dict(), allow_nan=False)


def test_constant_scores_score_the_closed_form_baseline():
    task = fake_task()
    result = ContradictionRateAtK(k=10, n_bootstrap=100).compute(torch.zeros(task.entailment.shape), _truth(task))
    assert result.value == pytest.approx(result.provenance["random_baseline"], abs=1e-12)


def test_the_p_value_rewards_avoiding_contradictions():
    """Lower is better: ranking contradictions last gives p at its floor, ranking them first p = 1, random scores a large p."""
    task = fake_task(n_test=60, n_train=300, seed=5)
    truth = _truth(task)
    contradicting = (task.categories == CONTRADICTION).double()
    noise = torch.rand(task.entailment.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    metric = ContradictionRateAtK(k=10, n_bootstrap=100, n_random_draws=2000)
    avoiding = metric.compute(noise - 2 * contradicting, truth)
    assert avoiding.value == 0.0 and avoiding.provenance["p_value_vs_random"] == 1 / 2001
    seeking = metric.compute(noise + 2 * contradicting, truth)
    assert seeking.value > 0.5 and seeking.provenance["p_value_vs_random"] == 1.0
    above = 0
    for seed in range(10):
        scores = torch.rand(task.entailment.shape, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        result = ContradictionRateAtK(k=10, n_bootstrap=100, seed=seed, n_random_draws=1000).compute(scores, truth)
        assert abs(result.value - result.provenance["random_baseline"]) < 0.04
        above += result.provenance["p_value_vs_random"] > 0.01
    assert above >= 9, above


def test_rerank_protocol_ranks_ftrace_pools():
    task, k = fake_task(), 5
    truth = _truth(task)
    scores = torch.randn(task.entailment.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    metric = ContradictionRateAtK(k=k, protocol="rerank", n_target_distractors=20, n_random_distractors=30, n_bootstrap=100)
    pool = F.rerank_candidates(task.entailment, task.categories == 3, 20, 30, generator=torch.Generator().manual_seed(0))
    expected = F.category_breakdown(scores, task.categories, k, len(CATEGORIES), pool)[:, CONTRADICTION]
    torch.testing.assert_close(metric.compute(scores, truth).per_example, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("categories,names", [(None, ()), (torch.zeros(2, 3, dtype=torch.int8), ("other",))])
def test_a_truth_without_a_contradiction_category_is_a_clear_error(categories, names):
    truth = EntailmentTruth(torch.eye(2, 3, dtype=torch.bool), categories, names)
    with pytest.raises(ConfigError, match=r"^Metric 'contradiction_rate_at_k' needs the truth's categories with a 'contradiction'") as info:
        get_metric("contradiction_rate_at_k", n_bootstrap=100).compute(torch.zeros(2, 3), truth)
    assert "\n" not in str(info.value)
