"""Set metrics against scikit-learn per query, the tie rule, the tuned threshold, the attributor's set and the null."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from tdaeval.errors import ConfigError
from tdaeval.functional.sets import rank_selection, set_f1, set_precision, set_recall, split_queries, tune_threshold
from tdaeval.groundtruth import EntailmentTruth
from tdaeval.metrics import get_metric


def _sklearn(selected: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """[n_test, 3] precision, recall, F1 per query; 0/0 is 1 when both sets are empty, else 0."""
    out = []
    for s, r in zip(selected, relevant):
        zero_division = 1.0 if not s.any() and not r.any() else 0.0
        p, rc, f, _ = precision_recall_fscore_support(r, s, average="binary", zero_division=zero_division)
        out.append([p, rc, f])
    return np.array(out)


def test_per_query_values_match_sklearn_including_empty_sets():
    g = np.random.default_rng(0)
    relevant = g.random((40, 15)) < 0.2
    selected = g.random((40, 15)) < 0.3
    relevant[:5] = False  # no positives (some with a set, some without)
    selected[3:8] = False  # empty sets (with and without positives)
    reference = _sklearn(selected, relevant)
    s, r = torch.tensor(selected), torch.tensor(relevant)
    for column, fn in enumerate((set_precision, set_recall, set_f1)):
        values = fn(s, r)
        assert not bool(values.isnan().any())
        np.testing.assert_allclose(values.numpy(), reference[:, column], atol=1e-12)
    assert set_precision(s, r)[3:5].tolist() == [1.0, 1.0] and set_precision(s, r)[5:8].tolist() == [0.0] * 3


def test_rank_selection_is_top_m_and_exact_over_ties():
    g = np.random.default_rng(1)
    scores = g.normal(size=(20, 12))
    relevant = g.random((20, 12)) < 0.25
    relevant[0] = False
    chosen = np.zeros_like(relevant)
    for q in range(20):  # tie-free: the literal top-|P_q|
        chosen[q, np.argsort(-scores[q], kind="stable")[: relevant[q].sum()]] = True
    selection = rank_selection(torch.tensor(scores), torch.tensor(relevant))
    assert torch.equal(selection.bool(), torch.tensor(chosen))
    np.testing.assert_allclose(set_f1(selection, torch.tensor(relevant)).numpy(), _sklearn(chosen, relevant)[:, 2], atol=1e-12)
    # ties: the exact expectation over every tie-break order (brute force on 6 items, 3 tied at the boundary)
    tied = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0, 0.0]])
    rel = torch.tensor([[False, True, False, True, True, False]])
    expected = []
    for order in itertools.permutations([1, 2, 3]):
        ranking = [0, *order, 4, 5]
        expected.append(np.mean([rel[0, j].item() for j in ranking[:3]]))
    assert set_precision(rank_selection(tied, rel), rel).item() == pytest.approx(float(np.mean(expected)))


def test_tuned_threshold_is_the_brute_force_best_and_evaluates_on_the_other_half():
    g = np.random.default_rng(2)
    relevant = g.random((30, 25)) < 0.15
    scores = np.round(g.normal(size=(30, 25)) + 1.5 * relevant, 1)  # informative, with ties
    tune, evaluate = split_queries(30, torch.Generator().manual_seed(4))
    assert len(tune) == 15 and set(tune.tolist()).isdisjoint(evaluate.tolist())
    best = max((float(np.mean(_sklearn(scores[tune] >= t, relevant[tune])[:, 2])), t) for t in [*np.unique(scores[tune]), math.inf])
    threshold, f1 = tune_threshold(torch.tensor(scores[tune]), torch.tensor(relevant[tune]))
    assert f1 == pytest.approx(best[0]) and threshold == pytest.approx(best[1])
    result = get_metric("set_f1", threshold="tuned", seed=4, n_bootstrap=100).compute(torch.tensor(scores), EntailmentTruth(torch.tensor(relevant)))
    assert result.provenance["tuned_threshold"] == pytest.approx(threshold)
    assert result.provenance["tuning_queries"] == tune.tolist() and result.n_nan == 15
    reference = _sklearn(scores >= threshold, relevant)[:, 2]
    np.testing.assert_allclose(result.per_example[evaluate].numpy(), reference[evaluate.numpy()], atol=1e-12)
    assert result.value == pytest.approx(float(reference[evaluate.numpy()].mean()))


def test_random_scores_give_the_base_rate_precision():
    g = torch.Generator().manual_seed(3)
    relevant = torch.rand(200, 300, generator=g) < 0.05
    scores = torch.rand(200, 300, generator=g)
    result = get_metric("set_precision", threshold="rank", n_bootstrap=100).compute(scores, EntailmentTruth(relevant))
    base_rate = result.provenance["random_precision"]
    assert base_rate == pytest.approx(0.05, abs=0.01)
    assert abs(result.value - base_rate) < 0.015


class _SetAttributor:
    accept = 0.5

    def selection(self, scores):
        return scores >= 0.5

    def candidates(self, scores):
        return scores >= 0


def test_the_attributors_set_is_used_and_works_from_cached_scores():
    relevant = torch.tensor([[True, True, False, False], [False, False, True, False]])
    scores = torch.tensor([[0.9, -1.0, 0.2, -1.0], [0.7, 0.1, 0.6, -1.0]])
    truth = EntailmentTruth(relevant)
    metric = get_metric("set_recall", n_bootstrap=100)
    result = metric.compute(scores.clone(), truth, attributor=_SetAttributor())  # a function of the scores alone
    assert result.per_example.tolist() == [0.5, 1.0]
    assert result.provenance["selection"] == "attributor's set" and result.provenance["candidate_recall"] == pytest.approx(2 / 3)
    ranked = metric.compute(scores, truth)  # no attributor: auto falls back to R-precision
    assert ranked.provenance["selection"].startswith("top-|proponents|")
    with pytest.raises(ConfigError, match="threshold='attributor'"):
        get_metric("set_f1", threshold="attributor", n_bootstrap=100).compute(scores, truth, attributor=object())
    fixed = get_metric("set_precision", threshold=0.65, n_bootstrap=100).compute(scores, truth)
    assert fixed.per_example.tolist() == [1.0, 0.0]  # {0} of {0, 1}; {0} of {2}


def test_cluster_verify_in_a_metric_from_its_scores():
    from tdaeval.attributors import get
    from tdaeval.tasks.language import LanguageModelTask

    task = LanguageModelTask(n_entities=40, n_relations=4, n_facts=30, n_test=8, conflicts=0.3)
    attributor = get("cluster_verify", n_clusters=4, n_candidate_clusters=2).fit(task, None, task.train_data)
    scores = attributor.attribute(task.test_data)
    metric = get_metric("set_f1", n_bootstrap=100)
    truth = metric.build_truth(task)
    result = metric.compute(scores, truth, attributor=attributor)
    judged = attributor.candidates(scores)
    inside = float((judged & task.entailment).sum() / task.entailment.sum())
    assert result.provenance["candidate_recall"] == pytest.approx(inside)
    assert result.provenance["contradiction_rate"] == 0.0  # the oracle never accepts a contradiction
    assert metric.compute(scores, truth, attributor=get("cluster_verify", n_clusters=4, n_candidate_clusters=2)).value == result.value
