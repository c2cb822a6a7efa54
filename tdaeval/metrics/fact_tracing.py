"""Fact-tracing retrieval metrics: MRR, hit@k, recall@k, precision@k, ROC-AUC of the known proponents, contradiction rate@k (issues #16, #17).

The truth is the task's entailment matrix (which training sentences state
each query's fact), built by construction, with no retraining. Math (tie
rule, random baselines, FTRACE's reranking pools, a random attributor's
null distribution and the CI) in :mod:`tdaeval.functional.retrieval`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.functional.retrieval import (
    contradiction_rate_at_k,
    quasi_wilson_ci,
    random_contradiction_rate_at_k,
    random_dispersion,
    random_null,
    random_roc_auc,
    roc_auc,
)
from tdaeval.groundtruth.truths import NO_TRUTH, EntailmentTruth, GroundTruth
from tdaeval.metrics.base import Metric, MetricResult, register_metric
from tdaeval.params import Interval, Options

__all__ = ["MRR", "HitAtK", "RecallAtK", "PrecisionAtK", "RecallAtKMetric", "RocAuc", "ContradictionRateAtK", "PROTOCOLS", "TIE_RULE"]

#: ``"full"``: rank the whole training set; ``"rerank"``: FTRACE's per-query candidate pools.
PROTOCOLS = ("full", "rerank")
#: How tied scores are ranked (recorded in every result's provenance).
TIE_RULE = "exact expectation under uniformly random tie-breaking (hypergeometric over the tie group at the boundary)"
#: The category whose items share the query's answer: FTRACE's target-sharing distractors under protocol="rerank".
ANSWER_SHARING = "same_object"
#: How ``random_interval`` and ``p_value_vs_random`` are computed (recorded in the provenance).
RANDOM_NULL_METHOD = ("Monte-Carlo of the value (mean over queries) of a random attributor on the same pools: each query's value drawn from "
                      "its exact null distribution (first-proponent rank P(r) = C(N-r, m-1)/C(N, m); hypergeometric top-k count); "
                      "Mann-Whitney distribution of the AUC's U; p = (1 + #{draws at least as good as the value}) / (n_draws + 1), one-sided "
                      "(>= when higher is better, <= for the contradiction rate)")
#: How the CI is computed (``provenance["ci_method"]``); the percentile bootstrap's interval stays in ``provenance["ci_percentile_bootstrap"]``.
CI_METHOD = ("quasi-binomial Wilson score interval of the mean of the per-query values scaled to [0, 1] by ci_upper, "
             "dispersion = clip(max(sample dispersion, random attributor's dispersion on these pools), 0, 1)")
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
        "n_random_draws": [Interval(int, 100, None)],
    }
    #: What one query's value is (provenance).
    definition: str = ""
    #: The per-query function's name in :data:`tdaeval.functional.retrieval.RANDOM_NULL_METRICS` (its null distribution).
    null_metric: str = ""
    #: What the "relevant" items of a query are (provenance ``target``): the proponents, or the contradicting items.
    target: str = "proponents"

    def __init__(self, k: int = 10, protocol: str = "full", n_target_distractors: int = 100, n_random_distractors: int = 100,
                 n_bootstrap: int = 2000, seed: int = 0, n_random_draws: int = 10_000) -> None:
        super().__init__(n_bootstrap, seed)
        self.k, self.protocol = k, protocol
        self.n_target_distractors, self.n_random_distractors = n_target_distractors, n_random_distractors
        self.n_random_draws = n_random_draws

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

    def _relevant(self, truth: EntailmentTruth) -> Tensor:
        """``[n_test, n_train]`` bool: the items whose ranking the metric grades (the proponents; the contradiction rate overrides)."""
        return truth.entailment.cpu()

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
        relevant = self._relevant(truth)
        candidates = self._candidates(truth)
        per_query = self._per_query(scores, relevant, candidates)
        pool, n_relevant = candidates.sum(dim=1), (relevant & candidates).sum(dim=1)
        baseline = self._random(pool, n_relevant)
        provenance: dict[str, Any] = {
            "kind": "fact_tracing",
            "definition": self.definition,
            "target": self.target,
            "tie_rule": TIE_RULE,
            "protocol": self.protocol,
            "k": self.k,
            "random_baseline": _nan_to_none(float(baseline.nanmean())),
            "pool_size_mean": float(pool.double().mean()),
            "n_relevant_mean": float(n_relevant.double().mean()),
            "n_queries_without_relevant": int((n_relevant == 0).sum()),
            "ci_covers": "sampling variance over queries; scores, proponents and candidate pools fixed",
        }
        if self.protocol == "rerank":
            provenance.update({"n_target_distractors": self.n_target_distractors, "n_random_distractors": self.n_random_distractors,
                               "answer_sharing_category": ANSWER_SHARING, "candidates_seed": self.seed})
        if truth.categories is not None:
            shares = F.category_breakdown(scores, truth.categories, self.k, len(truth.category_names), candidates).mean(dim=0)
            provenance["category_breakdown"] = {name: float(share) for name, share in zip(truth.category_names, shares.tolist())}
            provenance["contradiction_rate_at_k"] = provenance["category_breakdown"].get(CONTRADICTION)
        provenance.update(self._extra(scores, relevant, candidates))
        result = self._bootstrap_result(per_query, provenance)
        self._interval(result, pool, n_relevant)
        self._random_null(result, pool, n_relevant)
        return result

    def _upper(self, pool: Tensor, n_relevant: Tensor) -> float:
        """The largest value a query can take (the scale of :func:`~tdaeval.functional.retrieval.quasi_wilson_ci`)."""
        return 1.0

    def _interval(self, result: MetricResult, pool: Tensor, n_relevant: Tensor) -> None:
        """Replace the base's percentile-bootstrap CI by the quasi-binomial Wilson interval (:data:`CI_METHOD`), keeping the bootstrap's."""
        provenance = result.provenance
        provenance["ci_percentile_bootstrap"] = [_nan_to_none(v) for v in result.ci]
        if not math.isfinite(result.value):
            provenance.update({"ci_method": CI_METHOD, "ci_upper": None, "ci_dispersion": None, "ci_dispersion_random": None})
            return
        upper = self._upper(pool, n_relevant)
        floor = random_dispersion(self.null_metric, pool, n_relevant, self.k, upper)
        floor = 0.0 if not math.isfinite(floor) else floor
        low, high = quasi_wilson_ci(result.per_example, upper, floor)
        result.ci = (min(low, result.value), max(high, result.value))
        finite = result.per_example[torch.isfinite(result.per_example)] / upper
        p = float(finite.mean())
        spread = float(finite.var()) / (p * (1.0 - p)) if finite.numel() > 1 and 0.0 < p < 1.0 else 0.0
        provenance.update({"ci_method": CI_METHOD, "ci_upper": upper, "ci_dispersion": min(1.0, max(spread, floor)),
                           "ci_dispersion_random": floor})

    def _random_null(self, result: MetricResult, pool: Tensor, n_relevant: Tensor) -> None:
        """Add ``random_interval`` and ``p_value_vs_random``: where a random attributor on these pools lands.

        :func:`tdaeval.functional.retrieval.random_null` with ``n_random_draws`` draws, seeded with ``seed``.
        """
        provenance = result.provenance
        if not math.isfinite(result.value):  # no query with a finite value (recall without any proponent): nothing to test
            provenance.update({"random_interval": None, "p_value_vs_random": None})
            return
        generator = torch.Generator().manual_seed(self.seed)
        (low, high), p_value = random_null(result.value, self.null_metric, pool, n_relevant, self.k, self.n_random_draws, generator=generator,
                                           higher_is_better=self.higher_is_better)
        provenance.update({
            "random_interval": [_nan_to_none(low), _nan_to_none(high)],
            "p_value_vs_random": _nan_to_none(p_value),
            "random_null": {"n_draws": self.n_random_draws, "seed": self.seed, "level": 0.95,
                            "method": RANDOM_NULL_METHOD},
        })


@register_metric
class MRR(_FactTracing):
    """Mean reciprocal rank of each query's first proponent (0 for a query without one, as Quanda's ``MRRMetric`` and FTRACE).

    Tied scores count as the exact expectation under random tie-breaking
    (:mod:`tdaeval.functional.retrieval`), so constant scores give the random
    baseline ``Σ_r (1/r) C(N−r, m−1)/C(N, m)`` (0.0184 for N = 660, m = 2),
    reported in the provenance next to hit@1, the top-``k`` category
    breakdown and the contradiction rate@k.

    **Is it better than random?** The provenance answers with the exact
    null of a random attributor on the same pools, not with the CI:
    ``random_interval`` is the central 95% range of the value (the mean over
    queries) a random attributor gets, and ``p_value_vs_random`` the one-sided
    probability that it gets at least the observed value,
    ``(1 + #{draws ≥ value}) / (n_random_draws + 1)`` (never below
    ``1/(n_random_draws + 1)``). Both come from ``n_random_draws`` Monte-Carlo
    draws in which every query's value is drawn from its exact distribution
    under random scores (first proponent at rank ``r`` with probability
    ``C(N−r, m−1)/C(N, m)``; a hypergeometric count of proponents in the top
    ``k`` for the other three metrics), seeded with ``seed``
    (:func:`tdaeval.functional.retrieval.random_null`).

    **CI.** ``ci`` is a quasi-binomial Wilson score interval for the mean of
    the per-query values (in [0, 1]): the set of means ``μ`` with
    ``(value − μ)² ≤ 1.96² φ μ(1 − μ)/n``, with the dispersion ``φ`` the
    sample's, floored at a random attributor's on these pools and capped at 1
    (:func:`tdaeval.functional.retrieval.quasi_wilson_ci`; ``ci_method``,
    ``ci_dispersion`` in the provenance). The base's percentile bootstrap is
    kept as ``ci_percentile_bootstrap``: per-query reciprocal ranks of a
    near-random attributor are so skewed (half of random's 0.0184 comes from
    the 3% of queries with a proponent in the top 10) that 60 queries often
    hold none, and the percentile interval then lies wholly below the truth:
    it covered random's expectation in 70% of 400 simulated 60-query samples
    (N = 660, m = 2; 81–85% for hit@10, recall@10, precision@10), the Wilson
    interval in 98% (96–98%), with the same width as the bootstrap for
    attributors away from 0 and 1 (docs: ``docs/metrics/fact-tracing.rst``).

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
        Bootstrap over queries (``ci_percentile_bootstrap``), and the seed of
        the bootstrap, of the rerank draws and of the random null's draws.
    n_random_draws : int
        Monte-Carlo draws of a random attributor's value (>= 100; 10,000):
        ``random_interval`` and ``p_value_vs_random``.

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
    null_metric = "reciprocal_rank"
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
    is in the provenance, with ``random_interval`` and ``p_value_vs_random``
    (a random attributor's value on the same pools, the number of hits per
    query hypergeometric) and the CI, a Wilson score interval (hit@k is a
    proportion), all as :class:`MRR`. Parameters as :class:`MRR`.

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
    null_metric = "hit_at_k"
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
    tie-breaking; the random baseline ``min(k, N)/N`` is in the provenance,
    with ``random_interval``, ``p_value_vs_random`` and the quasi-binomial
    Wilson CI as :class:`MRR`. Parameters as :class:`MRR`.

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
    null_metric = "recall_at_k"
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
    ``random_interval``, ``p_value_vs_random`` and the quasi-binomial Wilson CI
    as :class:`MRR`; the CI scales the values by the most a query can reach,
    ``max_q min(m_q, k)/k`` (``ci_upper``). Parameters as :class:`MRR`.

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
    null_metric = "precision_at_k"
    definition = "|top-k ∩ proponents| / k (FTRACE)"

    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        return F.precision_at_k(scores, relevant, self.k, candidates)

    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        return F.random_precision_at_k(pool, n_relevant, self.k)

    def _upper(self, pool: Tensor, n_relevant: Tensor) -> float:
        most = int(torch.minimum(torch.minimum(pool, n_relevant), torch.tensor(self.k)).max())  # the most hits a query can have
        return most / self.k if most > 0 else 1.0


@register_metric
class RocAuc(_FactTracing):
    """Per-query ROC-AUC of the proponents against every other candidate (DDA's metric, Wu et al. 2024 §5), averaged over queries.

    Each query's AUC is the Mann–Whitney statistic of its candidates' scores
    with positives = its proponents and negatives = all its other candidates
    (the other fine-tuning items in DDA's hallucination tracing):
    ``U/(P·Q)``, ``U`` the number of (proponent, other) pairs ranked the right
    way, a tied pair counting ½ — the family's tie rule, the exact expectation
    over random tie-breaking (:func:`tdaeval.functional.retrieval.roc_auc`;
    equal to ``sklearn.metrics.roc_auc_score`` per query). Random scores give
    0.5 (``random_baseline``).

    A query whose candidates hold no proponent or no other item has no AUC:
    its value is NaN, left out of the mean and counted (``n_nan``;
    ``n_queries_without_positive`` and ``n_queries_without_negative`` in the
    provenance); when no query is left the metric raises a ``ConfigError``.

    ``random_interval`` and ``p_value_vs_random`` come from each query's exact
    null (the Mann–Whitney distribution of ``U`` for its ``P`` and ``Q``,
    :func:`tdaeval.functional.retrieval.random_value_pmf`), the CI is the
    quasi-binomial Wilson interval floored at a random attributor's dispersion
    ``(N + 1)/(3PQ)`` (averaged over queries), all as :class:`MRR`. ``k`` only
    sets the top-``k`` category breakdown of the provenance. Parameters as :class:`MRR`.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, False, False, False], [False, False, True, True]]))
    >>> scores = torch.tensor([[0.5, 0.9, 0.5, 0.0], [0.3, 0.05, 0.8, 0.1]])
    >>> result = RocAuc(n_bootstrap=100).compute(scores, truth)
    >>> result.per_example.tolist(), result.provenance["random_baseline"]  # (0 + 1/2 + 1)/3; 3 of 4 pairs right
    ([0.5, 0.75], 0.5)
    """

    name = "roc_auc"
    null_metric = "roc_auc"
    definition = ("ROC-AUC of the query's candidates' scores, positives = its proponents, negatives = its other candidates, "
                  "ties 1/2 (Mann-Whitney U / (P Q); NaN without a positive or a negative)")

    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        values = roc_auc(scores, relevant, candidates)
        if not bool(torch.isfinite(values).any()):
            raise ConfigError(f"Metric {self.name!r} needs a query with both a proponent and another item among its candidates. "
                              f"Got none of {values.numel()} queries.")
        return values

    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        return random_roc_auc(pool, n_relevant)

    def _extra(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> dict[str, Any]:
        positives = (relevant & candidates).sum(dim=1)
        negatives = candidates.sum(dim=1) - positives
        return {"n_queries_without_positive": int((positives == 0).sum()), "n_queries_without_negative": int((negatives == 0).sum()),
                "excluded_queries": "queries without a proponent or without another candidate have no AUC: NaN, left out of the mean"}


@register_metric
class ContradictionRateAtK(_FactTracing):
    """Share of each query's top ``k`` that CONTRADICTS its fact (category ``"contradiction"``), averaged over queries; LOWER is better.

    FASTTRACK's point (Chen et al. 2024): an item can be relevant to a query
    (same subject and relation) without supporting it; a sentence stating
    ``(s, r, o′)`` contradicts the query's ``(s, r, o)``. Lexical and
    similarity attributors rank these high; a verifier does not. The value of
    a query is ``Σ_{i contradicting} P(i ∈ top-k) / min(k, N)`` with the
    family's tie rule (:func:`tdaeval.functional.retrieval.contradiction_rate_at_k`;
    :func:`~tdaeval.functional.retrieval.topk_inclusion`), the
    ``"contradiction"`` share of the category breakdown that every
    fact-tracing result reports. It needs the truth's categories with a
    ``"contradiction"`` category (a ``ConfigError`` otherwise); a query with no
    contradicting candidate scores 0.

    Random scores give ``c/N`` (``c`` contradicting among ``N`` candidates;
    ``random_baseline``). ``random_interval`` and ``p_value_vs_random`` come
    from the exact null (a hypergeometric count of contradictions in the top
    ``min(k, N)``); the p-value is the probability that a random attributor
    does at least as well, i.e. has a rate AT MOST the value. The CI is the
    quasi-binomial Wilson interval as :class:`MRR`, with values scaled by the
    most a query can reach, ``max_q min(c_q, k')/k'`` (``ci_upper``,
    ``k' = min(k, N_q)``). ``n_relevant_mean`` and ``n_queries_without_relevant``
    in the provenance count contradicting candidates (``target``). Parameters as :class:`MRR`.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> names = ("other", "proponent", "contradiction")
    >>> categories = torch.tensor([[1, 2, 0, 2], [0, 2, 1, 0]], dtype=torch.int8)
    >>> truth = EntailmentTruth(categories == 1, categories, names)
    >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.8], [0.3, 0.2, 0.8, 0.1]])
    >>> result = ContradictionRateAtK(k=2, n_bootstrap=100).compute(scores, truth)
    >>> result.per_example.tolist(), result.higher_is_better  # both top-2 items contradict; none of (0.8, 0.3) does
    ([1.0, 0.0], False)
    """

    name = "contradiction_rate_at_k"
    null_metric = "contradiction_rate_at_k"
    higher_is_better = False
    target = "contradictions"
    definition = "share of the query's top-k candidates whose category is 'contradiction' (lower is better)"

    def _relevant(self, truth: EntailmentTruth) -> Tensor:
        if truth.categories is None or CONTRADICTION not in truth.category_names:
            raise ConfigError(f"Metric {self.name!r} needs the truth's categories with a {CONTRADICTION!r} category "
                              f"(e.g. the language_model task's). Got categories {list(truth.category_names)}.")
        return truth.category(CONTRADICTION).cpu()

    def _per_query(self, scores: Tensor, relevant: Tensor, candidates: Tensor) -> Tensor:
        return contradiction_rate_at_k(scores, relevant, self.k, candidates)

    def _random(self, pool: Tensor, n_relevant: Tensor) -> Tensor:
        return random_contradiction_rate_at_k(pool, n_relevant, self.k)

    def _upper(self, pool: Tensor, n_relevant: Tensor) -> float:
        top = pool.clamp(max=self.k).double()
        most = float((torch.minimum(n_relevant.double(), top) / top).max())  # the largest share a query can reach
        return most if most > 0 else 1.0
