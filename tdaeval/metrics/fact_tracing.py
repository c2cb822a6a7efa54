"""Fact-tracing retrieval metrics: MRR, hit@k, recall@k and precision@k of the known proponents (issue #16; FTRACE, Quanda).

The truth is the task's entailment matrix (which training sentences state
each query's fact), built by construction, with no retraining. Math (tie
rule, random baselines, FTRACE's reranking pools) in
:mod:`tdaeval.functional.retrieval`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.truths import NO_TRUTH, EntailmentTruth, GroundTruth
from tdaeval.metrics.base import Metric, MetricResult, register_metric
from tdaeval.params import Interval, Options

__all__ = ["MRR", "HitAtK", "RecallAtK", "PrecisionAtK", "RecallAtKMetric", "PROTOCOLS", "TIE_RULE"]

#: ``"full"``: rank the whole training set; ``"rerank"``: FTRACE's per-query candidate pools.
PROTOCOLS = ("full", "rerank")
#: How tied scores are ranked (recorded in every result's provenance).
TIE_RULE = "exact expectation under uniformly random tie-breaking (hypergeometric over the tie group at the boundary)"
#: The category whose items share the query's answer: FTRACE's target-sharing distractors under protocol="rerank".
ANSWER_SHARING = "same_object"
#: The category whose share of the top-k is the contradiction rate@k.
CONTRADICTION = "contradiction"


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _FactTracing(Metric):
    """Shared parameters, truth and provenance of the fact-tracing retrieval metrics."""

    higher_is_better = True
    bounds = (0.0, 1.0)
    truth_type = EntailmentTruth
    _parameter_constraints = {
        **Metric._parameter_constraints,
        "k": [Interval(int, 1, None)],
        "protocol": [Options(PROTOCOLS)],
        "n_target_distractors": [Interval(int, 0, None)],
        "n_random_distractors": [Interval(int, 0, None)],
    }
    #: What one query's value is (provenance).
    definition: str = ""

    def __init__(self, k: int = 10, protocol: str = "full", n_target_distractors: int = 100, n_random_distractors: int = 100,
                 n_bootstrap: int = 2000, seed: int = 0) -> None:
        super().__init__(n_bootstrap, seed)
        self.k, self.protocol = k, protocol
        self.n_target_distractors, self.n_random_distractors = n_target_distractors, n_random_distractors

    def build_truth(self, task: Any, store: Any = None, *, model: Any = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> EntailmentTruth:
        """The task's ``entailment`` (and ``categories``/``category_names`` when it has them); no retraining."""
        entailment = getattr(task, "entailment", None)
        if entailment is None:
            raise ConfigError(f"Metric {self.name!r} needs a task with known proponents (an 'entailment' matrix), "
                              f"e.g. language_model. Got {type(task).__name__}.")
        categories = getattr(task, "categories", None)
        names = tuple(getattr(task, "category_names", ())) if categories is not None else ()
        return EntailmentTruth(torch.as_tensor(entailment), categories, names)

    # ------------------------------------------------------------------ per metric

    @abstractmethod
    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        """``[n_test]`` float64 values of each query."""

    @abstractmethod
    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        """``[n_test]`` closed-form expectation of the per-query value under random scores."""

    def _extra(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> dict[str, Any]:
        """More provenance (MRR adds hit@1)."""
        return {}

    # ------------------------------------------------------------------ shared

    def _candidates(self, truth: EntailmentTruth) -> Tensor:
        """``[n_test, n_train]`` bool pool of each query under ``self.protocol``."""
        if self.protocol == "full":
            return torch.ones(truth.entailment.shape, dtype=torch.bool)
        if truth.categories is None or ANSWER_SHARING not in truth.category_names:
            raise ConfigError(f"Metric {self.name!r} with protocol='rerank' needs the truth's categories with a {ANSWER_SHARING!r} "
                              f"category (the answer-sharing distractors). Got categories {list(truth.category_names)}.")
        generator = torch.Generator().manual_seed(self.seed)
        return F.rerank_candidates(truth.entailment, truth.category(ANSWER_SHARING), self.n_target_distractors,
                                   self.n_random_distractors, generator=generator)

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        """Per query: the metric of its ranking of its candidates (tie rule :data:`TIE_RULE`); value = mean over queries."""
        truth = self._truth(truth)
        scores = self._scores(scores, n_test=truth.n_test, n_train=truth.n_train).detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(scores).all()):
            raise ConfigError(f"Metric {self.name!r}: the scores have non-finite values (a ranking needs finite scores).")
        relevant = truth.entailment.cpu()
        candidates = self._candidates(truth)
        per_query = self._per_query(scores, relevant, candidates)
        pool, n_relevant = candidates.sum(dim=1), (relevant & candidates).sum(dim=1)
        baseline = self._random(pool, n_relevant)
        provenance: dict[str, Any] = {
            "kind": "fact_tracing",
            "definition": self.definition,
            "tie_rule": TIE_RULE,
            "protocol": self.protocol,
            "k": self.k,
            "random_baseline": _nan_to_none(float(baseline.nanmean())),
            "pool_size_mean": float(pool.double().mean()),
            "n_relevant_mean": float(n_relevant.double().mean()),
            "n_queries_without_relevant": int((n_relevant == 0).sum()),
            "ci_covers": "queries resampled; scores, proponents and candidate pools fixed",
        }
        if self.protocol == "rerank":
            provenance.update({"n_target_distractors": self.n_target_distractors, "n_random_distractors": self.n_random_distractors,
                               "answer_sharing_category": ANSWER_SHARING, "candidates_seed": self.seed})
        if truth.categories is not None:
            shares = F.category_breakdown(scores, truth.categories, self.k, len(truth.category_names), candidates).mean(dim=0)
            provenance["category_breakdown"] = {name: float(share) for name, share in zip(truth.category_names, shares.tolist())}
            provenance["contradiction_rate_at_k"] = provenance["category_breakdown"].get(CONTRADICTION)
        provenance.update(self._extra(scores, relevant, candidates))
        return self._bootstrap_result(per_query, provenance)


@register_metric
class MRR(_FactTracing):
    """Mean reciprocal rank of each query's first proponent (0 for a query without one, as Quanda's ``MRRMetric`` and FTRACE).

    Tied scores count as the exact expectation under random tie-breaking
    (:mod:`tdaeval.functional.retrieval`), so constant scores give the random
    baseline ``Σ_r (1/r) C(N−r, m−1)/C(N, m)`` (0.0184 for N = 660, m = 2),
    reported in the provenance next to hit@1, the top-``k`` category
    breakdown and the contradiction rate@k.

    Parameters
    ----------
    k : int
        Top-set size of the category breakdown (10).
    protocol : {"full", "rerank"}
        ``"full"`` ranks the whole training set; ``"rerank"`` ranks, per
        query, its proponents, up to ``n_target_distractors`` items of
        category ``"same_object"`` (they share the query's answer and are not
        proponents, contradictions or same-subject items, by the task's
        category precedence) and ``n_random_distractors`` random others
        (FTRACE's protocol, drawn with ``seed``; :func:`tdaeval.functional.rerank_candidates`).
    n_target_distractors, n_random_distractors : int
        FTRACE's 100 and 100.
    n_bootstrap, seed : int
        Bootstrap over queries, and the seed of the bootstrap and of the rerank draws.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, False, False, False], [False, False, True, True]]))
    >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.8, 0.1]])
    >>> result = MRR(k=2, n_bootstrap=100).compute(scores, truth)
    >>> result.per_example.tolist(), result.value  # ranks 3 and 1
    ([0.3333333333333333, 1.0], 0.6666666666666666)
    >>> round(result.provenance["random_baseline"], 4)  # N = 4: m = 1 gives (1 + 1/2 + 1/3 + 1/4)/4, m = 2 gives 13/18
    0.6215
    """

    name = "mrr"
    definition = "1 / rank of the query's first proponent among its candidates (0 when it has none)"

    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        return F.reciprocal_rank(scores, relevant, candidates)

    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        return F.random_reciprocal_rank(pool, n_relevant)

    def _extra(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> dict[str, Any]:
        return {"hit_at_1": float(F.hit_at_k(scores, relevant, 1, candidates).mean())}


@register_metric
class HitAtK(_FactTracing):
    """Share of queries with at least one proponent in their top ``k`` (hit@k, success@k).

    This is what Quanda calls ``RecallAtKMetric`` (its per-query value is 1
    when any entailing item is in the top-k); :data:`RecallAtKMetric` is the
    Python alias of this class. tdaeval's :class:`RecallAtK` (``recall_at_k``)
    is FTRACE's recall, ``|top-k ∩ proponents| / |proponents|``, a different number.
    Ties: exact expectation under random tie-breaking (hypergeometric over the
    tie group at the boundary); the random baseline ``1 − C(N−m, k)/C(N, k)``
    is in the provenance. Parameters as :class:`MRR`.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, False, False, False], [False, False, True, True]]))
    >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.5, 0.5, 0.5, 0.5]])
    >>> result = HitAtK(k=2, n_bootstrap=100).compute(scores, truth)
    >>> [round(v, 4) for v in result.per_example.tolist()]  # rank 3 misses; all tied: 1 − C(2,2)/C(4,2)
    [0.0, 0.8333]
    """

    name = "hit_at_k"
    definition = "1 if any of the query's proponents is among its top-k candidates, else 0 (Quanda's RecallAtK)"

    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        return F.hit_at_k(scores, relevant, self.k, candidates)

    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        return F.random_hit_at_k(pool, n_relevant, self.k)

    def _extra(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> dict[str, Any]:
        return {"quanda_name": "RecallAtKMetric"}


#: Quanda's name for :class:`HitAtK` (its ``RecallAtKMetric`` is hit@k, not recall).
RecallAtKMetric = HitAtK


@register_metric
class RecallAtK(_FactTracing):
    """FTRACE's recall@k: the share of each query's proponents found in its top ``k`` (NOT Quanda's RecallAtK, which is :class:`HitAtK`).

    A query without proponents has no recall (0/0): its value is NaN and
    left out of the mean (``n_nan``). Ties: exact expectation under random
    tie-breaking; the random baseline ``min(k, N)/N`` is in the provenance.
    Parameters as :class:`MRR`.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, False, False, False], [False, False, True, True]]))
    >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.8, 0.1]])
    >>> RecallAtK(k=2, n_bootstrap=100).compute(scores, truth).per_example.tolist()  # 0 of 1; 1 of 2
    [0.0, 0.5]
    """

    name = "recall_at_k"
    definition = "|top-k ∩ proponents| / |proponents| (FTRACE; NaN without proponents)"

    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        return F.recall_at_k(scores, relevant, self.k, candidates)

    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        return F.random_recall_at_k(pool, n_relevant, self.k)


@register_metric
class PrecisionAtK(_FactTracing):
    """FTRACE's precision@k: the number of proponents in each query's top ``k``, divided by ``k``.

    Ties: exact expectation under random tie-breaking; the random baseline
    ``m/N`` (``m·min(k, N)/(N·k)`` for pools smaller than ``k``) is in the
    provenance. A query with fewer than ``k`` proponents cannot reach 1.
    Parameters as :class:`MRR`.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, False, False, False], [False, False, True, True]]))
    >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.8, 0.1]])
    >>> PrecisionAtK(k=2, n_bootstrap=100).compute(scores, truth).per_example.tolist()
    [0.0, 0.5]
    """

    name = "precision_at_k"
    definition = "|top-k ∩ proponents| / k (FTRACE)"

    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        return F.precision_at_k(scores, relevant, self.k, candidates)

    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        return F.random_precision_at_k(pool, n_relevant, self.k)
