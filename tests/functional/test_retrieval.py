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
