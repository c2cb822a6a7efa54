"""Fact-tracing retrieval math (:mod:`tdaeval.functional.retrieval`) against independent references.

References: hand-computed cases; a brute force over every tie-breaking order
(the tie rule); ``torchmetrics.retrieval`` and re-implementations of
FTRACE's ``reciprocal_rank`` / ``precision_recall`` and Quanda's
``MRRMetric`` / ``RecallAtKMetric`` on tie-free inputs; exact enumeration
and a Monte-Carlo of random scores for the closed-form random baselines.
"""

from __future__ import annotations

import importlib
import itertools
import math
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

import tdaeval.functional as F
from tdaeval.errors import ConfigError

# ----------------------------------------------------------------------------- references


def ftrace_reciprocal_rank(nearest_ids: list[int], correct_ids: list[int]) -> float:
    """FTRACE ``src/metric_utils.py::reciprocal_rank``: 1/(position + 1) of the first correct id, else 0."""
    for i, idx in enumerate(nearest_ids):
        if idx in correct_ids:
            return 1 / (i + 1)
    return 0


def ftrace_precision_recall(nearest_ids: list[int], correct_ids: list[int], k: int) -> tuple[float, float]:
    """FTRACE ``precision_recall`` for one k: hits in the first k / k, and correct ids found / number of correct ids."""
    nn_k = nearest_ids[:k]
    return len([1 for i in nn_k if i in correct_ids]) / k, len([1 for i in correct_ids if i in nn_k]) / len(correct_ids)


def quanda_mrr(explanations: torch.Tensor, entailment: torch.Tensor) -> torch.Tensor:
    """Quanda ``MRRMetric.update`` (notes A.1): sort descending, 1/rank of the first entailing item, 0 if none."""
    order = torch.sort(explanations, dim=1, descending=True).indices
    out = torch.zeros(explanations.shape[0], dtype=torch.float64)
    for i in range(explanations.shape[0]):
        hits = torch.nonzero(entailment[i][order[i]]).flatten()
        if hits.numel():
            out[i] = 1.0 / (int(hits[0]) + 1)
    return out


def quanda_recall_at_k(explanations: torch.Tensor, entailment: torch.Tensor, k: int) -> torch.Tensor:
    """Quanda ``RecallAtKMetric.update``: 1 if any entailing item is in the top k, else 0 (hit@k)."""
    order = torch.sort(explanations, dim=1, descending=True).indices
    return torch.tensor([float(entailment[i][order[i][:k]].any()) for i in range(explanations.shape[0])], dtype=torch.float64)


def orders(scores: list[float], candidates: list[int]) -> list[tuple[int, ...]]:
    """Every ranking of ``candidates`` consistent with the scores (descending); random tie-breaking picks one uniformly."""
    return [p for p in itertools.permutations(candidates) if all(scores[a] >= scores[b] for a, b in zip(p, p[1:]))]


def brute_force(scores: torch.Tensor, relevant: torch.Tensor, candidates: torch.Tensor, k: int, categories: torch.Tensor,
                n_categories: int) -> dict[str, np.ndarray]:
    """Average of the deterministic metrics over all tie-breaking orders, per row."""
    out: dict[str, list] = {"rr": [], "hit": [], "recall": [], "precision": [], "shares": []}
    for q in range(scores.shape[0]):
        row, pool = scores[q].tolist(), torch.nonzero(candidates[q]).flatten().tolist()
        correct = [i for i in pool if bool(relevant[q, i])]
        values: dict[str, list] = {key: [] for key in out}
        for order in orders(row, pool):
            nearest = list(order)
            values["rr"].append(ftrace_reciprocal_rank(nearest, correct))
            hits = len([i for i in nearest[:k] if i in correct])
            values["hit"].append(float(hits > 0))
            values["recall"].append(hits / len(correct) if correct else math.nan)
            values["precision"].append(hits / k)
            top = nearest[:k]
            values["shares"].append(np.bincount([int(categories[q, i]) for i in top], minlength=n_categories) / len(top))
        for key in out:
            out[key].append(np.mean(values[key], axis=0))
    return {key: np.array(value) for key, value in out.items()}


def _import_torchmetrics_retrieval():
    """``torchmetrics.functional.retrieval``, importable even where torchvision is installed but broken.

    torchmetrics imports torchvision whenever its metadata says it is
    installed; a torchvision built for another torch (the CPU torch 2.13 dev
    venv) raises on import. Then torchvision is hidden for the import only.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # a broken torchvision build: hide it from torchmetrics
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.") or n.startswith("torchmetrics")]:
            del sys.modules[name]
        imports = importlib.import_module("lightning_utilities.core.imports")
        original = imports._version

        def version(name: str) -> str:
            if name == "torchvision":
                raise importlib.metadata.PackageNotFoundError(name)
            return original(name)

        imports._version, sys.modules["torchvision"] = version, None
        try:
            return importlib.import_module("torchmetrics.functional.retrieval")
        finally:
            imports._version = original
            del sys.modules["torchvision"]
    return importlib.import_module("torchmetrics.functional.retrieval")


def _tie_free(generator: torch.Generator, n_test: int = 30, n_train: int = 40, p: float = 0.1):
    """Positive tie-free scores (torchmetrics 1.9's retrieval functions treat items scored <= 0 as not relevant)."""
    scores = torch.rand(n_test, n_train, generator=generator, dtype=torch.float64) + 0.5
    relevant = torch.rand(n_test, n_train, generator=generator) < p
    relevant[0] = False  # one query without relevant items
    relevant[1, int(scores[1].argmax())] = True  # one with its best item relevant
    return scores, relevant


# ----------------------------------------------------------------------------- hand-computed cases


def test_hand_computed_tie_free():
    scores = torch.tensor([[0.9, 0.7, 0.5, 0.3, 0.1]])
    relevant = torch.tensor([[False, True, False, True, False]])  # ranks 2 and 4
    assert F.reciprocal_rank(scores, relevant).tolist() == [0.5]
    assert F.hit_at_k(scores, relevant, 1).tolist() == [0.0]
    assert F.hit_at_k(scores, relevant, 2).tolist() == [1.0]
    assert F.recall_at_k(scores, relevant, 3).tolist() == [0.5]
    assert F.precision_at_k(scores, relevant, 4).tolist() == [0.5]
    assert F.precision_at_k(scores, relevant, 10).tolist() == [0.2]  # hits / k even past the pool (FTRACE)
    assert F.recall_at_k(scores, relevant, 10).tolist() == [1.0]


def test_hand_computed_ties():
    # 0.9 alone, then a tie group {1, 2, 3} with one relevant item (3), then 4 (relevant)
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.1]])
    relevant = torch.tensor([[False, False, False, True, True]])
    # first relevant: b = 1, g = 3, m = 1: ranks 2, 3, 4 with probability 1/3 each
    assert F.reciprocal_rank(scores, relevant).item() == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3, abs=1e-15)
    # top-2: one of the three tied enters: P(3 in) = 1/3
    assert F.hit_at_k(scores, relevant, 2).item() == pytest.approx(1 / 3, abs=1e-14)
    assert F.recall_at_k(scores, relevant, 2).item() == pytest.approx(1 / 6, abs=1e-15)
    assert F.precision_at_k(scores, relevant, 2).item() == pytest.approx(1 / 6, abs=1e-15)
    # top-3: two of the three tied enter
    assert F.hit_at_k(scores, relevant, 3).item() == pytest.approx(2 / 3, abs=1e-14)
    # top-4: the whole group is in
    assert F.hit_at_k(scores, relevant, 4).item() == 1.0
    # two relevant among four tied, k = 1: P(hit) = 1/2; C(2,1)/C(4,1) = 1/2 misses
    two = torch.tensor([[0.2, 0.2, 0.2, 0.2]]), torch.tensor([[True, True, False, False]])
    assert F.hit_at_k(*two, 1).item() == pytest.approx(0.5, abs=1e-14)
    assert F.hit_at_k(*two, 2).item() == pytest.approx(1 - 1 / 6, abs=1e-14)  # 1 − C(2,2)/C(4,2)
    assert F.hit_at_k(*two, 3).item() == pytest.approx(1.0, abs=1e-14)  # only 2 non-relevant: a third pick must hit
    # E[RR] for m = 2 among g = 4: P(first at 1) = 1/2, at 2 = 1/3, at 3 = 1/6
    assert F.reciprocal_rank(*two).item() == pytest.approx(1 / 2 + 1 / 6 + 1 / 18, abs=1e-14)


def test_no_relevant_item_gives_zero_rr_and_hit_and_nan_recall():
    scores, relevant = torch.tensor([[0.3, 0.2, 0.1]]), torch.zeros(1, 3, dtype=torch.bool)
    assert F.reciprocal_rank(scores, relevant).tolist() == [0.0]
    assert F.hit_at_k(scores, relevant, 2).tolist() == [0.0]
    assert F.precision_at_k(scores, relevant, 2).tolist() == [0.0]
    assert math.isnan(F.recall_at_k(scores, relevant, 2).item())


def test_candidates_exclude_items_from_the_ranking():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    relevant = torch.tensor([[False, False, False, True]])
    candidates = torch.tensor([[True, False, False, True]])  # the pool is {0, 3}: the relevant item is second
    assert F.reciprocal_rank(scores, relevant, candidates).tolist() == [0.5]
    assert F.hit_at_k(scores, relevant, 2, candidates).tolist() == [1.0]
    assert F.hit_at_k(scores, relevant, 2).tolist() == [0.0]
    assert F.topk_inclusion(scores, 1, candidates).tolist() == [[1.0, 0.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------- the tie rule vs brute force


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_tie_rule_equals_the_average_over_all_tie_breaking_orders(seed, k):
    g = torch.Generator().manual_seed(seed)
    n_test, n_train, n_categories = 12, 6, 3
    scores = torch.randint(0, 3, (n_test, n_train), generator=g).double()  # many ties
    relevant = torch.rand(n_test, n_train, generator=g) < 0.35
    candidates = torch.rand(n_test, n_train, generator=g) < 0.8
    candidates[:, 0] = True
    candidates[-1] = True
    scores[-1] = 1.0  # one row entirely tied
    categories = torch.randint(0, n_categories, (n_test, n_train), generator=g, dtype=torch.int8)
    expected = brute_force(scores, relevant, candidates, k, categories, n_categories)
    np.testing.assert_allclose(F.reciprocal_rank(scores, relevant, candidates).numpy(), expected["rr"], atol=1e-12)
    np.testing.assert_allclose(F.hit_at_k(scores, relevant, k, candidates).numpy(), expected["hit"], atol=1e-12)
    np.testing.assert_allclose(F.recall_at_k(scores, relevant, k, candidates).numpy(), expected["recall"], atol=1e-12)
    np.testing.assert_allclose(F.precision_at_k(scores, relevant, k, candidates).numpy(), expected["precision"], atol=1e-12)
    shares = F.category_breakdown(scores, categories, k, n_categories, candidates).numpy()
    np.testing.assert_allclose(shares, expected["shares"], atol=1e-12)


def test_results_do_not_depend_on_the_order_of_the_training_items():
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (20, 30), generator=g).double()
    relevant = torch.rand(20, 30, generator=g) < 0.1
    perm = torch.randperm(30, generator=g)
    for fn in (F.reciprocal_rank, lambda s, r: F.hit_at_k(s, r, 5), lambda s, r: F.precision_at_k(s, r, 5)):
        torch.testing.assert_close(fn(scores, relevant), fn(scores[:, perm], relevant[:, perm]), rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- tie-free: torchmetrics, FTRACE, Quanda


@pytest.mark.parametrize("k", [1, 5, 10])
def test_tie_free_equals_torchmetrics(k):
    tm = _import_torchmetrics_retrieval()
    scores, relevant = _tie_free(torch.Generator().manual_seed(k))
    rr, hit = F.reciprocal_rank(scores, relevant), F.hit_at_k(scores, relevant, k)
    recall, precision = F.recall_at_k(scores, relevant, k), F.precision_at_k(scores, relevant, k)
    for q in range(scores.shape[0]):
        preds, target = scores[q], relevant[q]
        assert rr[q].item() == pytest.approx(tm.retrieval_reciprocal_rank(preds, target).item(), abs=1e-7)
        assert hit[q].item() == pytest.approx(tm.retrieval_hit_rate(preds, target, top_k=k).item(), abs=1e-7)
        assert precision[q].item() == pytest.approx(tm.retrieval_precision(preds, target, top_k=k).item(), abs=1e-7)
        if target.any():  # torchmetrics scores 0 recall without positives; ours is NaN (0/0)
            assert recall[q].item() == pytest.approx(tm.retrieval_recall(preds, target, top_k=k).item(), abs=1e-7)
    assert hit[0].item() == 0.0 and rr[1].item() == 1.0


def test_tie_free_with_candidates_equals_torchmetrics_on_the_pool():
    tm = _import_torchmetrics_retrieval()
    g = torch.Generator().manual_seed(11)
    scores, relevant = _tie_free(g)
    candidates = (torch.rand(scores.shape, generator=g) < 0.5) | relevant
    rr, hit = F.reciprocal_rank(scores, relevant, candidates), F.hit_at_k(scores, relevant, 3, candidates)
    for q in range(scores.shape[0]):
        pool = candidates[q]
        assert rr[q].item() == pytest.approx(tm.retrieval_reciprocal_rank(scores[q, pool], relevant[q, pool]).item(), abs=1e-7)
        assert hit[q].item() == pytest.approx(tm.retrieval_hit_rate(scores[q, pool], relevant[q, pool], top_k=3).item(), abs=1e-7)


@pytest.mark.parametrize("k", [1, 3, 5, 10, 25])  # FTRACE's K_EVALS
def test_tie_free_equals_ftrace_and_quanda_semantics(k):
    scores, relevant = _tie_free(torch.Generator().manual_seed(100 + k), n_test=25, n_train=60)
    nearest = torch.argsort(scores, dim=1, descending=True)
    rr, hit = F.reciprocal_rank(scores, relevant), F.hit_at_k(scores, relevant, k)
    recall, precision = F.recall_at_k(scores, relevant, k), F.precision_at_k(scores, relevant, k)
    for q in range(scores.shape[0]):
        ids, correct = nearest[q].tolist(), torch.nonzero(relevant[q]).flatten().tolist()
        assert rr[q].item() == pytest.approx(ftrace_reciprocal_rank(ids, correct), abs=1e-15)
        if correct:
            p, r = ftrace_precision_recall(ids, correct, k)
            assert precision[q].item() == pytest.approx(p, abs=1e-15) and recall[q].item() == pytest.approx(r, abs=1e-15)
    torch.testing.assert_close(rr, quanda_mrr(scores, relevant), rtol=0, atol=1e-15)
    torch.testing.assert_close(hit, quanda_recall_at_k(scores, relevant, k), rtol=0, atol=1e-15)


def test_entailment_as_scores_gives_perfect_rr_and_hit_at_1():
    g = torch.Generator().manual_seed(3)
    relevant = torch.rand(20, 50, generator=g) < 0.05
    relevant[:, 0] = True  # every query has a proponent
    scores = relevant.double()  # ties everywhere, but every relevant item is above every other
    assert F.reciprocal_rank(scores, relevant).tolist() == [1.0] * 20
    assert F.hit_at_k(scores, relevant, 1).tolist() == [1.0] * 20
    m = relevant.sum(dim=1).double()
    torch.testing.assert_close(F.recall_at_k(scores, relevant, 50), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(F.precision_at_k(scores, relevant, 1), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(F.recall_at_k(scores, relevant, 1), 1.0 / m)


# ----------------------------------------------------------------------------- random baselines


def test_random_baselines_at_the_notes_values():
    assert F.random_reciprocal_rank(660, 2).item() == pytest.approx(0.0184, abs=5e-5)
    assert F.random_hit_at_k(660, 2, 10).item() == pytest.approx(0.0301, abs=5e-5)
    assert F.random_recall_at_k(660, 2, 10).item() == pytest.approx(10 / 660, abs=1e-15)
    assert F.random_precision_at_k(660, 2, 10).item() == pytest.approx(2 / 660, abs=1e-15)


@pytest.mark.parametrize("n,m,k", [(1, 1, 1), (5, 1, 2), (6, 2, 3), (7, 3, 2), (7, 7, 3), (8, 2, 8), (4, 2, 10), (6, 0, 2)])
def test_random_baselines_equal_exact_enumeration(n, m, k):
    """Over all C(n, m) placements of the relevant items in a random order (exact fractions)."""
    rr = hit = hits = Fraction(0)
    placements = list(itertools.combinations(range(1, n + 1), m))
    for ranks in placements:
        rr += Fraction(1, min(ranks)) if ranks else 0
        inside = sum(1 for r in ranks if r <= k)
        hit += inside > 0
        hits += inside
    count = len(placements)
    assert F.random_reciprocal_rank(n, m).item() == pytest.approx(float(rr / count), abs=1e-13)
    assert F.random_hit_at_k(n, m, k).item() == pytest.approx(float(hit / count), abs=1e-13)
    assert F.random_precision_at_k(n, m, k).item() == pytest.approx(float(hits / count / k), abs=1e-13)
    if m:
        assert F.random_recall_at_k(n, m, k).item() == pytest.approx(float(hits / count / m), abs=1e-13)
    else:
        assert math.isnan(F.random_recall_at_k(n, m, k).item())


def test_random_baselines_are_stable_for_large_pools():
    n = 100_000
    harmonic = math.fsum(1 / r for r in range(1, n + 1))
    assert F.random_reciprocal_rank(n, 1).item() == pytest.approx(harmonic / n, rel=1e-12)
    # m = 3 by the ratio recurrence P(r+1) = P(r)·(N − r − m + 1)/(N − r), P(1) = m/N
    m, p, total = 3, 3 / n, 0.0
    for r in range(1, n - m + 2):
        total += p / r
        p *= (n - r - m + 1) / (n - r)
    assert F.random_reciprocal_rank(n, m).item() == pytest.approx(total, rel=1e-12)
    assert F.random_hit_at_k(n, 5, 100).item() == pytest.approx(1 - math.prod((n - 5 - i) / (n - i) for i in range(100)), rel=1e-12)
    assert F.random_hit_at_k(n, 1, 1000).item() == pytest.approx(1000 / n, rel=1e-12)
    values = F.random_reciprocal_rank(torch.tensor([n, n, 10]), torch.tensor([1, 50_000, 0]))
    assert values.shape == (3,) and bool(torch.isfinite(values).all()) and values[2].item() == 0.0


@pytest.mark.parametrize("draws", [3000, pytest.param(40_000, marks=pytest.mark.slow)])
def test_monte_carlo_of_random_scores_matches_the_closed_forms(draws):
    """N = 660, m = 2 (the notes' corpus): random score rows, in chunks of 1000."""
    g = torch.Generator().manual_seed(draws)
    n, m, k, chunk = 660, 2, 10, 1000
    relevant = torch.zeros(chunk, n, dtype=torch.bool)
    relevant[:, :m] = True
    rr, hit = [], []
    for _ in range(draws // chunk):
        scores = torch.rand(chunk, n, generator=g, dtype=torch.float64)
        rr.append(F.reciprocal_rank(scores, relevant))
        hit.append(F.hit_at_k(scores, relevant, k))
    rr, hit = torch.cat(rr), torch.cat(hit)
    for sample, closed in ((rr, F.random_reciprocal_rank(n, m).item()), (hit, F.random_hit_at_k(n, m, k).item())):
        standard_error = sample.std().item() / math.sqrt(draws)
        assert abs(sample.mean().item() - closed) < 4 * standard_error, (sample.mean().item(), closed, standard_error)


def test_constant_scores_equal_the_random_closed_forms():
    g = torch.Generator().manual_seed(9)
    relevant = torch.rand(15, 80, generator=g) < 0.08
    relevant[:, 3] = True
    candidates = (torch.rand(15, 80, generator=g) < 0.6) | relevant
    for pool in (None, candidates):
        scores = torch.full((15, 80), 0.25, dtype=torch.float64)
        size = torch.full((15,), 80) if pool is None else pool.sum(dim=1)
        m = relevant.sum(dim=1) if pool is None else (relevant & pool).sum(dim=1)
        torch.testing.assert_close(F.reciprocal_rank(scores, relevant, pool), F.random_reciprocal_rank(size, m), rtol=0, atol=1e-12)
        for k in (1, 10, 100):
            torch.testing.assert_close(F.hit_at_k(scores, relevant, k, pool), F.random_hit_at_k(size, m, k), rtol=0, atol=1e-12)
            torch.testing.assert_close(F.recall_at_k(scores, relevant, k, pool), F.random_recall_at_k(size, m, k), rtol=0, atol=1e-12)
            torch.testing.assert_close(F.precision_at_k(scores, relevant, k, pool), F.random_precision_at_k(size, m, k), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- the null distribution of a random attributor

NULL_METRICS = ("reciprocal_rank", "hit_at_k", "recall_at_k", "precision_at_k")


def _per_query(metric: str, scores: torch.Tensor, relevant: torch.Tensor, k: int, candidates: torch.Tensor | None = None) -> torch.Tensor:
    if metric == "reciprocal_rank":
        return F.reciprocal_rank(scores, relevant, candidates)
    return getattr(F, metric)(scores, relevant, k, candidates)


@pytest.mark.parametrize("n,m,k", [(1, 1, 1), (5, 1, 2), (6, 2, 3), (7, 3, 2), (7, 7, 3), (8, 2, 8), (4, 2, 10), (6, 0, 2), (9, 4, 5)])
def test_random_value_pmf_equals_exact_enumeration(n, m, k):
    """Over all C(n, m) equally likely placements of the proponents in a random order (exact fractions)."""
    placements = list(itertools.combinations(range(1, n + 1), m))
    for metric in NULL_METRICS:
        counts: dict[float, Fraction] = {}
        for ranks in placements:
            inside = sum(1 for r in ranks if r <= k)
            value = {"reciprocal_rank": 1 / min(ranks) if ranks else 0.0, "hit_at_k": float(inside > 0),
                     "recall_at_k": inside / m if m else math.nan, "precision_at_k": inside / k}[metric]
            key = round(value, 12) if not math.isnan(value) else math.nan
            counts[key] = counts.get(key, Fraction(0)) + Fraction(1, len(placements))
        values, probabilities = F.retrieval.random_value_pmf(metric, n, m, k)
        assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-14)
        assert bool((values[1:] > values[:-1]).all()) and bool((probabilities >= 0).all())
        got = {(round(v, 12) if not math.isnan(v) else math.nan): p for v, p in zip(values.tolist(), probabilities.tolist()) if p > 0}
        if m == 0 and metric == "recall_at_k":
            assert len(got) == 1 and math.isnan(next(iter(got))) and next(iter(counts.values())) == 1
            continue
        assert set(got) == set(counts), (metric, got, counts)
        for value, p in counts.items():
            assert got[value] == pytest.approx(float(p), abs=1e-13), (metric, value)


def test_random_value_pmf_means_equal_the_closed_form_baselines():
    for n, m, k in ((660, 2, 10), (100_000, 3, 50), (242, 5, 25), (30, 0, 5)):
        for metric, closed in (("reciprocal_rank", F.random_reciprocal_rank(n, m)), ("hit_at_k", F.random_hit_at_k(n, m, k)),
                               ("recall_at_k", F.random_recall_at_k(n, m, k)), ("precision_at_k", F.random_precision_at_k(n, m, k))):
            values, probabilities = F.retrieval.random_value_pmf(metric, n, m, 1 if metric == "reciprocal_rank" else k)
            mean = float((values * probabilities).sum())
            if math.isnan(closed.item()):
                assert math.isnan(mean)
            else:
                assert mean == pytest.approx(closed.item(), rel=1e-10, abs=1e-15), (metric, n, m, k)


@pytest.mark.parametrize("metric", NULL_METRICS)
def test_random_value_pmf_matches_random_score_matrices(metric):
    """Brute force: per-query values of 20,000 random score rows (N = 12, m = 3, k = 4) against the exact pmf, within 4.5 SE."""
    n, m, k, draws = 12, 3, 4, 20_000
    relevant = torch.zeros(draws, n, dtype=torch.bool)
    relevant[:, :m] = True
    scores = torch.rand(draws, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    observed = _per_query(metric, scores, relevant, k)
    values, probabilities = F.retrieval.random_value_pmf(metric, n, m, k)
    for value, p in zip(values.tolist(), probabilities.tolist()):
        frequency = (observed - value).abs().lt(1e-12).double().mean().item()
        assert abs(frequency - p) < 4.5 * math.sqrt(p * (1 - p) / draws) + 1e-12, (metric, value, frequency, p)


def _null_fixture():
    """Ten queries with heterogeneous pools (candidate masks over 20 items, 0 to 3 proponents each)."""
    g = torch.Generator().manual_seed(1)
    n_test, n_train = 10, 20
    relevant = torch.zeros(n_test, n_train, dtype=torch.bool)
    for q in range(n_test):
        relevant[q, torch.randperm(n_train, generator=g)[: q % 4]] = True
    candidates = (torch.rand(n_test, n_train, generator=g) < 0.6) | relevant
    return relevant, candidates


@pytest.mark.parametrize("metric", NULL_METRICS)
def test_sampled_values_match_random_score_matrices(metric):
    """The value (mean over queries) drawn from the exact per-query nulls vs the value of 3000 random score matrices: two-sample KS and moments."""
    scipy_stats = pytest.importorskip("scipy.stats")
    relevant, candidates = _null_fixture()
    k, draws = 3, 3000
    g = torch.Generator().manual_seed(2)
    scores = torch.rand(draws * relevant.shape[0], relevant.shape[1], generator=g, dtype=torch.float64)  # draws stacked: rows are queries
    tiled = (relevant.repeat(draws, 1), candidates.repeat(draws, 1))
    brute = _per_query(metric, scores, tiled[0], k, tiled[1]).reshape(draws, -1).nanmean(dim=1)
    sampled = F.retrieval.sample_random_values(metric, candidates.sum(dim=1), (relevant & candidates).sum(dim=1), k, draws,
                                               generator=torch.Generator().manual_seed(3))
    assert sampled.shape == (draws,) and sampled.dtype == torch.float64
    assert scipy_stats.ks_2samp(brute.numpy(), sampled.numpy()).pvalue > 1e-3
    standard_error = brute.std().item() * math.sqrt(2 / draws)
    assert abs(brute.mean().item() - sampled.mean().item()) < 4 * standard_error
    assert sampled.std().item() == pytest.approx(brute.std().item(), rel=0.1)
    for q in (0.1, 0.5, 0.9):  # matching quantiles, up to one step of the (discrete) value grid
        assert abs(torch.quantile(brute, q).item() - torch.quantile(sampled, q).item()) <= 0.11, (metric, q)


def test_sampled_values_are_seeded_and_skip_nan_queries():
    sizes, relevant = torch.tensor([660, 660, 500]), torch.tensor([2, 0, 1])
    first = F.retrieval.sample_random_values("recall_at_k", sizes, relevant, 10, 500, generator=torch.Generator().manual_seed(4))
    again = F.retrieval.sample_random_values("recall_at_k", sizes, relevant, 10, 500, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and bool(torch.isfinite(first).all())
    assert set(torch.unique(first * 2).tolist()) <= {0.0, 0.5, 1.0, 1.5, 2.0}  # the query without proponents is left out: mean of two
    nan = F.retrieval.sample_random_values("recall_at_k", 10, 0, 3, 5, generator=torch.Generator())
    assert bool(torch.isnan(nan).all())
    constant = F.retrieval.sample_random_values("reciprocal_rank", torch.tensor([4, 4]), torch.tensor([4, 0]), n_draws=3,
                                                generator=torch.Generator())
    assert constant.tolist() == [0.5, 0.5, 0.5]  # a pool of proponents only: RR 1; a query without any: 0


def test_random_null_interval_and_p_value_follow_their_definitions():
    sizes, relevant = torch.full((60,), 660), torch.full((60,), 2)
    draws = F.retrieval.sample_random_values("reciprocal_rank", sizes, relevant, None, 2000, generator=torch.Generator().manual_seed(5))
    for observed in (0.0, 0.01, 0.0184, 0.03, 1.0):
        (low, high), p = F.retrieval.random_null(observed, "reciprocal_rank", sizes, relevant, n_draws=2000,
                                                 generator=torch.Generator().manual_seed(5))
        assert (low, high) == pytest.approx((float(np.quantile(draws.numpy(), 0.025)), float(np.quantile(draws.numpy(), 0.975))), abs=1e-15)
        assert p == (1 + int((draws.numpy() >= observed).sum())) / 2001
    assert F.retrieval.random_null(1.0, "hit_at_k", sizes, relevant, 10, 999, generator=torch.Generator())[1] == 1 / 1000
    assert F.retrieval.random_null(0.0, "hit_at_k", sizes, relevant, 10, 999, generator=torch.Generator())[1] == 1.0
    # a discrete value equal to a draw counts as reached, also after round-off: 2 hits of 60 summed in another order
    observed = sum([1 / 60] * 2)
    (_, _), p = F.retrieval.random_null(observed, "hit_at_k", sizes, relevant, 10, 4000, generator=torch.Generator().manual_seed(6))
    reached = F.retrieval.sample_random_values("hit_at_k", sizes, relevant, 10, 4000, generator=torch.Generator().manual_seed(6))
    assert p == (1 + int((reached * 60 >= 2 - 1e-9).sum())) / 4001
    (low, high), p = F.retrieval.random_null(0.5, "recall_at_k", 10, 0, 3, 50, generator=torch.Generator())  # no finite value
    assert math.isnan(low) and math.isnan(high) and math.isnan(p)


def test_random_dispersion_equals_the_pmf_moments():
    values, probabilities = F.retrieval.random_value_pmf("reciprocal_rank", 660, 2)
    mean = float((values * probabilities).sum())
    variance = float((values**2 * probabilities).sum()) - mean**2
    assert F.retrieval.random_dispersion("reciprocal_rank", 660, 2) == pytest.approx(variance / (mean * (1 - mean)), rel=1e-12)
    assert F.retrieval.random_dispersion("hit_at_k", 660, 2, 10) == pytest.approx(1.0, abs=1e-12)  # 0/1 values: Bernoulli
    p1, p2 = F.random_hit_at_k(660, 2, 10).item(), F.random_hit_at_k(300, 1, 10).item()  # unequal pools: below 1
    expected = (p1 * (1 - p1) + p2 * (1 - p2)) / 2 / ((p1 + p2) / 2 * (1 - (p1 + p2) / 2))
    assert F.retrieval.random_dispersion("hit_at_k", torch.tensor([660, 300]), torch.tensor([2, 1]), 10) == pytest.approx(expected, rel=1e-12)
    # precision in units of its largest value 2/10 is recall (m = 2): the same dispersion
    assert F.retrieval.random_dispersion("precision_at_k", 660, 2, 10, upper=0.2) == pytest.approx(
        F.retrieval.random_dispersion("recall_at_k", 660, 2, 10), rel=1e-12)
    # two pools: within-query variances averaged, around the pooled mean
    pmfs = [F.retrieval.random_value_pmf("recall_at_k", n, m, 5) for n, m in ((40, 2), (80, 3))]
    means = [float((v * p).sum()) for v, p in pmfs]
    variances = [float(((v - a) ** 2 * p).sum()) for (v, p), a in zip(pmfs, means)]
    mu = (2 * means[0] + means[1]) / 3
    expected = (2 * variances[0] + variances[1]) / 3 / (mu * (1 - mu))
    assert F.retrieval.random_dispersion("recall_at_k", torch.tensor([40, 80, 40]), torch.tensor([2, 3, 2]), 5) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(F.retrieval.random_dispersion("recall_at_k", 10, 0, 3))


def test_quasi_wilson_ci_is_wilsons_interval_for_proportions():
    scipy_stats = pytest.importorskip("scipy.stats")
    for successes, n in ((0, 60), (2, 60), (30, 60), (59, 60), (60, 60), (1, 1)):
        values = torch.zeros(n, dtype=torch.float64)
        values[:successes] = 1.0
        expected = scipy_stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = F.retrieval.quasi_wilson_ci(values, min_dispersion=1.0)
        assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12), (successes, n)
        # 0/1 values: the sample dispersion n/(n − 1) is capped at 1, so no floor is needed
        if 0 < successes < n:
            assert F.retrieval.quasi_wilson_ci(values) == pytest.approx((low, high), abs=1e-15)
        # values in [0, 0.2] scaled by upper = 0.2: the same interval, times 0.2
        assert F.retrieval.quasi_wilson_ci(values * 0.2, upper=0.2, min_dispersion=1.0) == pytest.approx((0.2 * low, 0.2 * high), abs=1e-14)


def test_quasi_wilson_ci_solves_the_score_equation_with_its_dispersion():
    """Endpoints μ satisfy (p̂ − μ)² = z² φ μ (1 − μ) / n with φ = max(sample dispersion, floor), clipped to 1."""
    z = 1.959963984540054
    values = torch.rand(60, generator=torch.Generator().manual_seed(7), dtype=torch.float64) ** 3
    p, n = values.mean().item(), 60
    phi_hat = values.var().item() / (p * (1 - p))
    for floor in (0.0, phi_hat / 2, 0.9):
        phi = max(phi_hat, floor)
        low, high = F.retrieval.quasi_wilson_ci(values, min_dispersion=floor)
        assert low < p < high
        for mu in (low, high):
            assert (p - mu) ** 2 == pytest.approx(z * z * phi * mu * (1 - mu) / n, rel=1e-9)
    assert F.retrieval.quasi_wilson_ci(torch.full((5,), 0.3)) == pytest.approx((0.3, 0.3))  # no spread, no floor: the point
    assert F.retrieval.quasi_wilson_ci(torch.tensor([math.nan, 0.5, 0.5]), min_dispersion=0.5)[0] < 0.5  # NaN left out
    assert all(math.isnan(v) for v in F.retrieval.quasi_wilson_ci(torch.tensor([math.nan])))


@pytest.mark.slow
def test_ci_coverage_for_random_scores():
    """Coverage of the random expectation by the 95% CIs, N = 660, m = 2, k = 10, 60 queries, 300 repetitions.

    The percentile bootstrap (base metric CI) under-covers badly for MRR (≈ 70%) and hit@k/recall@k/precision@k
    (≈ 81–85%); the quasi-binomial Wilson interval with the random dispersion floor covers ≥ 93% for all four.
    Per-query values are drawn from the exact null (equivalent to random score rows; see the tests above).
    """
    n, m, k, queries, reps = 660, 2, 10, 60, 300
    g = torch.Generator().manual_seed(11)
    for metric in NULL_METRICS:
        values, probabilities = F.retrieval.random_value_pmf(metric, n, m, k)
        truth = float((values * probabilities).sum())
        upper = 0.2 if metric == "precision_at_k" else 1.0
        floor = F.retrieval.random_dispersion(metric, n, m, k, upper)
        cdf = probabilities.cumsum(0)
        percentile = wilson = 0
        for rep in range(reps):
            u = torch.rand(queries, generator=g, dtype=torch.float64) * cdf[-1]
            sample = values[torch.searchsorted(cdf, u, right=True).clamp(max=len(values) - 1)]
            low, high = F.bootstrap_ci(sample, 1000, seed=rep)
            percentile += low - 1e-12 <= truth <= high + 1e-12
            low, high = F.retrieval.quasi_wilson_ci(sample, upper, floor)
            wilson += low - 1e-12 <= truth <= high + 1e-12
        assert wilson / reps >= 0.93, (metric, wilson / reps)
        assert percentile / reps <= (0.80 if metric == "reciprocal_rank" else 0.90), (metric, percentile / reps)


# ----------------------------------------------------------------------------- category breakdown, rerank pools


def test_category_breakdown_rows_sum_to_one_and_name_the_contradiction_rate():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]])
    categories = torch.tensor([[5, 1, 5, 0], [5, 1, 5, 0]], dtype=torch.int8)  # code 5: "contradiction"
    shares = F.category_breakdown(scores, categories, 2, 6)
    assert shares[:, 5].tolist() == [0.5, 0.5] and shares[0, 1].item() == 0.5 and shares[1, 0].item() == 0.5
    torch.testing.assert_close(shares.sum(dim=1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"'categories' argument must hold codes in \[0, 3\)"):
        F.category_breakdown(scores, categories, 2, 3)


def test_rerank_candidates_follow_ftrace_protocol():
    g = torch.Generator().manual_seed(0)
    n_test, n_train = 40, 300
    relevant = torch.rand(n_test, n_train, generator=g) < 0.01
    shares = (torch.rand(n_test, n_train, generator=g) < 0.2) | relevant
    pool = F.rerank_candidates(relevant, shares, 10, 25, generator=torch.Generator().manual_seed(1))
    again = F.rerank_candidates(relevant, shares, 10, 25, generator=torch.Generator().manual_seed(1))
    other = F.rerank_candidates(relevant, shares, 10, 25, generator=torch.Generator().manual_seed(2))
    assert torch.equal(pool, again) and not torch.equal(pool, other)
    assert bool((pool | ~relevant).all())  # every proponent is a candidate
    sharing = (pool & shares & ~relevant).sum(dim=1)
    assert bool((sharing >= torch.clamp((shares & ~relevant).sum(dim=1), max=10)).all())  # at least the target draws
    assert pool.sum(dim=1).tolist() == (relevant.sum(dim=1) + 10 + 25).tolist()  # three disjoint sets
    small = F.rerank_candidates(relevant, shares, 1000, 0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(small, relevant | shares)  # fewer sharing items than n_target: all of them, no random ones


def test_rerank_draws_are_uniform():
    relevant = torch.zeros(4000, 10, dtype=torch.bool)
    relevant[:, 0] = True
    shares = torch.zeros(4000, 10, dtype=torch.bool)
    shares[:, 1:5] = True
    pool = F.rerank_candidates(relevant, shares, 2, 3, generator=torch.Generator().manual_seed(0))
    frequency = pool.double().mean(dim=0)
    assert frequency[0].item() == 1.0
    # the target stage draws 2 of the 4 sharing items; the random stage 3 of the 7 others (2 unchosen sharing + 5 unrelated)
    assert (pool & shares).sum(dim=1).min().item() >= 2 and (pool & ~relevant).sum(dim=1).tolist() == [5] * 4000
    torch.testing.assert_close(frequency[1:5], torch.full((4,), 1 / 2 + 1 / 2 * 3 / 7, dtype=torch.float64), rtol=0, atol=0.03)
    torch.testing.assert_close(frequency[5:], torch.full((5,), 3 / 7, dtype=torch.float64), rtol=0, atol=0.03)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: F.reciprocal_rank(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool)),
         r"'relevant' argument must be a bool Tensor of shape \(2, 3\)"),
        (lambda: F.reciprocal_rank(torch.zeros(2, 3), torch.zeros(2, 3)), r"'relevant' argument must be a bool Tensor"),
        (lambda: F.hit_at_k(torch.tensor([[math.nan, 0.0]]), torch.ones(1, 2, dtype=torch.bool), 1), r"'scores' argument has non-finite"),
        (lambda: F.hit_at_k(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 0), r"'k' argument must be an integer >= 1"),
        (lambda: F.recall_at_k(torch.zeros(3), torch.ones(3, dtype=torch.bool), 1), r"'scores' argument must be a real Tensor \[n_test, n_train\]"),
        (lambda: F.precision_at_k(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 1, torch.zeros(1, 2, dtype=torch.bool)),
         r"'candidates' argument must leave every query at least one candidate"),
        (lambda: F.random_hit_at_k(5, 6, 1), r"0 <= n_relevant <= pool_sizes"),
        (lambda: F.rerank_candidates(torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool), -1,
                                     generator=torch.Generator()), r"'n_target' argument must be an integer >= 0"),
        (lambda: F.rerank_candidates(torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool), generator=0),
         r"'generator' argument must be a seeded torch.Generator"),
    ],
)
def test_bad_input_is_a_one_line_config_error(call, match):
    with pytest.raises(ConfigError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- ROC-AUC and the contradiction rate@k (issue #17)

R = F.retrieval


def _sklearn_auc(scores: torch.Tensor, relevant: torch.Tensor, candidates: torch.Tensor) -> np.ndarray:
    """``sklearn.metrics.roc_auc_score`` of each row's candidates (NaN without a positive or a negative)."""
    from sklearn.metrics import roc_auc_score

    out = []
    for q in range(scores.shape[0]):
        pool = candidates[q]
        y, x = relevant[q][pool].numpy(), scores[q][pool].numpy()
        out.append(roc_auc_score(y, x) if 0 < y.sum() < y.size else math.nan)
    return np.array(out)


@pytest.mark.parametrize("seed", range(3))
def test_roc_auc_equals_sklearn_per_query_with_ties_and_candidates(seed):
    g = torch.Generator().manual_seed(seed)
    n_test, n_train = 40, 25
    scores = torch.randint(0, 4, (n_test, n_train), generator=g).double()  # many ties
    relevant = torch.rand(n_test, n_train, generator=g) < 0.25
    candidates = torch.rand(n_test, n_train, generator=g) < 0.7
    candidates[:, 0] = True
    relevant[0], relevant[1] = False, candidates[1]  # a query without positives, one without negatives
    got = R.roc_auc(scores, relevant, candidates)
    expected = _sklearn_auc(scores, relevant, candidates)
    assert got.dtype == torch.float64 and got.shape == (n_test,)
    assert math.isnan(got[0]) and math.isnan(got[1])
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    full = R.roc_auc(scores, relevant)  # no candidates: every item ranked
    np.testing.assert_allclose(full.numpy(), _sklearn_auc(scores, relevant, torch.ones_like(relevant)), rtol=0, atol=1e-12)


def test_roc_auc_ties_are_the_average_over_all_tie_breaking_orders():
    """Counting a tied (positive, negative) pair 1/2 is the family's rule: the mean AUC over every order of each tie group."""
    g = torch.Generator().manual_seed(7)
    scores = torch.randint(0, 3, (8, 6), generator=g).double()
    relevant = torch.rand(8, 6, generator=g) < 0.4
    relevant[:, 0], relevant[:, 1] = True, False
    got = R.roc_auc(scores, relevant)
    for q in range(8):
        values = []
        for order in itertools.permutations(range(6)):  # a strict order consistent with the scores: tie-broken by the permutation
            rank = {i: (float(scores[q, i]), -order.index(i)) for i in range(6)}
            pos = [i for i in range(6) if relevant[q, i]]
            neg = [i for i in range(6) if not relevant[q, i]]
            values.append(sum(rank[i] > rank[j] for i in pos for j in neg) / (len(pos) * len(neg)))
        assert float(got[q]) == pytest.approx(float(np.mean(values)), abs=1e-12)


@pytest.mark.parametrize("n,m", [(2, 1), (4, 2), (5, 2), (6, 3), (7, 2), (8, 4), (9, 3), (5, 0), (5, 5)])
def test_roc_auc_null_equals_enumeration_of_every_order(n, m):
    """The exact Mann–Whitney pmf against every one of the C(n, m) placements of the positives (exact fractions)."""
    values, probabilities = R.random_value_pmf("roc_auc", n, m)
    if m in (0, n):
        assert values.numel() == 1 and math.isnan(values[0]) and probabilities.tolist() == [1.0]
        return
    counts: dict[float, Fraction] = {}
    placements = list(itertools.combinations(range(n), m))  # positions (0 = lowest score) of the positives
    for positions in placements:
        u = sum(p - i for i, p in enumerate(positions))  # negatives below each positive
        key = round(u / (m * (n - m)), 12)
        counts[key] = counts.get(key, Fraction(0)) + Fraction(1, len(placements))
    got = {round(v, 12): p for v, p in zip(values.tolist(), probabilities.tolist()) if p > 0}
    assert set(got) == set(counts)
    for value, p in counts.items():
        assert got[value] == pytest.approx(float(p), abs=1e-14)
    assert bool((values[1:] > values[:-1]).all()) and probabilities.sum().item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("m,q", [(2, 658), (3, 2000), (15, 400), (1, 5000), (40, 3000)])
def test_roc_auc_null_has_the_mann_whitney_moments(m, q):
    """Mean 1/2 and variance (N + 1)/(12 m q) (exact DP, the uniform case m = 1, and the normal approximation for m q > the limit)."""
    values, probabilities = R.random_value_pmf("roc_auc", m + q, m)
    mean = float((values * probabilities).sum())
    variance = float(((values - mean) ** 2 * probabilities).sum())
    assert mean == pytest.approx(0.5, abs=1e-12)
    assert variance == pytest.approx((m + q + 1) / (12 * m * q), rel=1e-9 if m * q <= R.MANN_WHITNEY_EXACT_LIMIT else 1e-3)
    assert bool((probabilities >= 0).all()) and probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)
    symmetric = torch.flip(probabilities, [0])
    torch.testing.assert_close(probabilities, symmetric, rtol=0, atol=1e-14)


def test_roc_auc_null_matches_random_score_matrices():
    """Per-query AUCs of 20,000 random score rows (N = 9, m = 3) against the exact pmf, within 4.5 SE."""
    n, m, draws = 9, 3, 20_000
    relevant = torch.zeros(draws, n, dtype=torch.bool)
    relevant[:, :m] = True
    scores = torch.rand(draws, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    observed = R.roc_auc(scores, relevant)
    values, probabilities = R.random_value_pmf("roc_auc", n, m)
    for value, p in zip(values.tolist(), probabilities.tolist()):
        frequency = (observed - value).abs().lt(1e-12).double().mean().item()
        assert abs(frequency - p) < 4.5 * math.sqrt(p * (1 - p) / draws) + 1e-12, (value, frequency, p)


@pytest.mark.parametrize("metric", ["roc_auc", "contradiction_rate_at_k"])
def test_new_nulls_sampled_values_match_random_score_matrices(metric):
    """The value (mean over queries) drawn from the exact per-query nulls vs 3000 random score matrices: two-sample KS and moments."""
    scipy_stats = pytest.importorskip("scipy.stats")
    relevant, candidates = _null_fixture()
    k, draws = 3, 3000
    scores = torch.rand(draws * relevant.shape[0], relevant.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tiled = (relevant.repeat(draws, 1), candidates.repeat(draws, 1))
    if metric == "roc_auc":
        per_query = R.roc_auc(scores, *tiled)
    else:
        per_query = R.contradiction_rate_at_k(scores, tiled[0], k, tiled[1])
    brute = per_query.reshape(draws, -1).nanmean(dim=1)
    sampled = R.sample_random_values(metric, candidates.sum(dim=1), (relevant & candidates).sum(dim=1), k, draws,
                                     generator=torch.Generator().manual_seed(3))
    assert scipy_stats.ks_2samp(brute.numpy(), sampled.numpy()).pvalue > 1e-3
    assert abs(brute.mean().item() - sampled.mean().item()) < 4 * brute.std().item() * math.sqrt(2 / draws)
    assert sampled.std().item() == pytest.approx(brute.std().item(), rel=0.1)


def test_contradiction_rate_equals_a_literal_loop_and_the_breakdown_column():
    g = torch.Generator().manual_seed(8)
    n_test, n_train, k = 30, 40, 7
    scores = torch.randn(n_test, n_train, generator=g, dtype=torch.float64)  # tie-free
    categories = torch.randint(0, 4, (n_test, n_train), generator=g, dtype=torch.int8)
    contradicting = categories == 3
    got = R.contradiction_rate_at_k(scores, contradicting, k)
    literal = []
    for q in range(n_test):
        top = sorted(range(n_train), key=lambda i: -float(scores[q, i]))[:k]
        literal.append(sum(bool(contradicting[q, i]) for i in top) / k)
    np.testing.assert_allclose(got.numpy(), literal, rtol=0, atol=1e-15)
    torch.testing.assert_close(got, F.category_breakdown(scores, categories, k, 4)[:, 3], rtol=0, atol=1e-15)
    # with ties and candidates: the breakdown column again (its tie rule is checked against every tie-breaking order above)
    tied = torch.randint(0, 3, (n_test, n_train), generator=g).double()
    pool = torch.rand(n_test, n_train, generator=g) < 0.3  # some pools smaller than k: the share of min(k, N)
    pool[:, 0] = True
    torch.testing.assert_close(R.contradiction_rate_at_k(tied, contradicting, k, pool),
                               F.category_breakdown(tied, categories, k, 4, pool)[:, 3], rtol=0, atol=1e-14)


@pytest.mark.parametrize("n,c,k", [(10, 3, 4), (6, 0, 2), (5, 5, 3), (4, 2, 10), (660, 33, 10)])
def test_contradiction_rate_null_is_the_closed_form_and_hypergeometric(n, c, k):
    """Constant scores score c/N exactly (expected count k·c/N over k); the pmf is hypergeometric / min(k, N) (enumeration when small)."""
    assert float(R.random_contradiction_rate_at_k(n, c, k)) == pytest.approx(c / n, abs=1e-15)
    contradicting = torch.zeros(1, n, dtype=torch.bool)
    contradicting[0, :c] = True
    assert float(R.contradiction_rate_at_k(torch.zeros(1, n), contradicting, k)) == pytest.approx(c / n, abs=1e-14)
    values, probabilities = R.random_value_pmf("contradiction_rate_at_k", n, c, k)
    assert float((values * probabilities).sum()) == pytest.approx(c / n, abs=1e-12)
    if n > 12:
        return
    top = min(k, n)
    counts: dict[float, Fraction] = {}
    placements = list(itertools.combinations(range(n), c))
    for ranks in placements:
        key = round(sum(1 for r in ranks if r < top) / top, 12)
        counts[key] = counts.get(key, Fraction(0)) + Fraction(1, len(placements))
    got = {round(v, 12): p for v, p in zip(values.tolist(), probabilities.tolist()) if p > 0}
    assert set(got) == set(counts)
    for value, p in counts.items():
        assert got[value] == pytest.approx(float(p), abs=1e-13)


def test_random_null_counts_the_lower_tail_when_lower_is_better():
    sizes, contradicting = torch.full((50,), 200), torch.full((50,), 20)
    draws = R.sample_random_values("contradiction_rate_at_k", sizes, contradicting, 10, 2000, generator=torch.Generator().manual_seed(9))
    for observed in (0.0, 0.05, 0.1, 0.2, 1.0):
        (_, _), p = R.random_null(observed, "contradiction_rate_at_k", sizes, contradicting, 10, 2000,
                                  generator=torch.Generator().manual_seed(9), higher_is_better=False)
        assert p == (1 + int((draws.numpy() <= observed + 1e-12).sum())) / 2001
    assert R.random_null(0.0, "contradiction_rate_at_k", sizes, contradicting, 10, 999, generator=torch.Generator(),
                         higher_is_better=False)[1] == 1 / 1000  # no random attributor avoids every contradiction on 50 queries


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: R.roc_auc(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool)), r"'relevant' argument must be a bool Tensor of shape \(2, 3\)"),
        (lambda: R.contradiction_rate_at_k(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 0), r"'k' argument must be an integer >= 1"),
        (lambda: R.random_value_pmf("auc", 5, 2), r"'metric' argument must be one of .*'roc_auc'"),
        (lambda: R.random_null(0.5, "roc_auc", 5, 2, generator=torch.Generator(), higher_is_better=1), r"'higher_is_better' argument must be a bool"),
    ],
)
def test_new_functions_bad_input_is_a_one_line_config_error(call, match):
    with pytest.raises(ConfigError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
