"""Set metrics of fact tracing: precision, recall and F1 of the set of training items a method says support each query (FASTTRACK).

The truth is the task's entailment matrix (:class:`~tdaeval.groundtruth.truths.EntailmentTruth`),
as for the ranking metrics of :mod:`tdaeval.metrics.fact_tracing`. The set of a query comes from:

* ``threshold="auto"`` (default): the attributor's own set when it returns one
  (it has a ``selection(scores) -> bool [n_test, n_train]`` method, as
  ``cluster_verify``), else ``"rank"``;
* ``"attributor"``: the attributor's set (an error when it has none);
* ``"rank"``: the top ``|proponents|`` of the query's ranking (R-precision; ties
  by the retrieval metrics' rule, exact expectation under random tie-breaking);
* ``"tuned"``: one global score threshold, chosen to maximise the mean F1 on a
  seeded half of the queries and evaluated on the other half (the tuning
  queries' per-example values are NaN, counted in ``n_nan``; which queries and
  which threshold are in the provenance);
* a number: ``score >= threshold``.

Per-query math and the empty-set conventions (no NaN): :mod:`tdaeval.functional.sets`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tdaeval.errors import ConfigError
from tdaeval.functional.sets import rank_selection, set_counts, set_f1, set_precision, set_recall, split_queries, threshold_selection, tune_threshold
from tdaeval.groundtruth.truths import NO_TRUTH, EntailmentTruth, GroundTruth
from tdaeval.metrics.base import Metric, MetricResult, register_metric
from tdaeval.params import Interval, Options

__all__ = ["SetPrecision", "SetRecall", "SetF1", "SELECTIONS"]

#: The named ways a set is made (``threshold`` may also be a number).
SELECTIONS = ("auto", "attributor", "rank", "tuned")
#: The category whose share of the set is reported as ``contradiction_rate``.
CONTRADICTION = "contradiction"


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _SetMetric(Metric):
    """Shared truth, selection and provenance of the set metrics."""

    higher_is_better = True
    bounds = (0.0, 1.0)
    truth_type = EntailmentTruth
    needs_attributor = True  # the attributor's own set, when it has one
    _parameter_constraints = {
        **Metric._parameter_constraints,
        "threshold": [Options(SELECTIONS), Interval(float, None, None)],
    }
    #: What one query's value is (provenance).
    definition: str = ""

    def __init__(self, threshold: str | float = "auto", n_bootstrap: int = 2000, seed: int = 0) -> None:
        super().__init__(n_bootstrap, seed)
        self.threshold = threshold

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

    @staticmethod
    def _per_query(selected: Tensor, relevant: Tensor) -> Tensor:
        raise NotImplementedError

    def _select(self, scores: Tensor, relevant: Tensor, attributor: Any) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """The selection ``[n_test, n_train]`` (bool or float memberships), the evaluated queries (None: all) and provenance."""
        mode = self.threshold
        has_set = callable(getattr(attributor, "selection", None))
        if mode == "auto":
            mode = "attributor" if has_set else "rank"
        if mode == "attributor":
            if not has_set:
                raise ConfigError(f"Metric {self.name!r} with threshold='attributor' needs an attributor that returns a set "
                                  f"(a selection(scores) method, as cluster_verify); got {type(attributor).__name__}.")
            selected = torch.as_tensor(attributor.selection(scores))
            if selected.dtype != torch.bool or tuple(selected.shape) != tuple(scores.shape):
                raise ConfigError(f"Metric {self.name!r}: the attributor's selection(scores) must return a bool Tensor of the scores' "
                                  f"shape {tuple(scores.shape)}. Got {selected.dtype} of shape {tuple(selected.shape)}.")
            return selected.cpu(), None, {"selection": "attributor's set", "attributor_set_threshold": getattr(attributor, "accept", None)}
        if mode == "rank":
            return rank_selection(scores, relevant), None, {
                "selection": "top-|proponents| per query (R-precision); ties: exact expectation under uniformly random tie-breaking"}
        if mode == "tuned":
            if scores.shape[0] < 2:
                raise ConfigError(f"Metric {self.name!r} with threshold='tuned' needs at least 2 queries (a tuning and an evaluation half). "
                                  f"Got {scores.shape[0]}.")
            tune, evaluate = split_queries(scores.shape[0], torch.Generator().manual_seed(self.seed))
            threshold, tuned_f1 = tune_threshold(scores[tune], relevant[tune].bool())
            return threshold_selection(scores, threshold), evaluate, {
                "selection": "one global score threshold maximising the mean F1 on the tuning queries, evaluated on the others",
                "tuned_threshold": _nan_to_none(threshold), "tuning_f1": tuned_f1, "tuning_queries": tune.tolist(),
                "evaluation_queries": evaluate.tolist(), "split_seed": self.seed}
        return threshold_selection(scores, float(mode)), None, {"selection": "score >= threshold", "threshold_value": float(mode)}

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        """Per query: the set metric of the query's selected set against its proponents; value = mean over (evaluated) queries."""
        truth = self._truth(truth)
        scores = self._scores(scores, n_test=truth.n_test, n_train=truth.n_train).detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(scores).all()):
            raise ConfigError(f"Metric {self.name!r}: the scores have non-finite values.")
        relevant = truth.entailment.cpu()
        selected, evaluated, provenance = self._select(scores, relevant, attributor)
        per_query = self._per_query(selected, relevant)
        if evaluated is not None:
            keep = torch.zeros(len(per_query), dtype=torch.bool)
            keep[evaluated] = True
            per_query = torch.where(keep, per_query, torch.full_like(per_query, math.nan))
        tp, size, n_relevant = set_counts(selected, relevant)
        rows = torch.arange(len(per_query)) if evaluated is None else evaluated
        n_train = truth.n_train
        provenance = {
            "kind": "set",
            "definition": self.definition,
            "threshold": self.threshold,
            **provenance,
            "empty_set_rule": "0/0 is 1 when the query's set and its proponents are both empty, else 0 (no NaN)",
            "set_size_mean": float(size[rows].mean()),
            "n_relevant_mean": float(n_relevant[rows].mean()),
            "n_empty_sets": int((size[rows] <= 1e-12).sum()),
            "random_precision": float((n_relevant[rows] / n_train).mean()),  # a random set's expected precision: the base rate
            "ci_covers": "sampling variance over queries; scores, proponents and the selection rule fixed",
        }
        if truth.categories is not None and CONTRADICTION in truth.category_names:
            contradicts = (truth.categories.cpu() == truth.category_names.index(CONTRADICTION)).double()
            chosen = selected.double()[rows]
            total = float(chosen.sum())
            provenance["contradiction_rate"] = float((chosen * contradicts[rows]).sum()) / total if total > 0 else 0.0
        candidates = getattr(attributor, "candidates", None)
        if callable(candidates):  # a set attributor that judges only some items (cluster_verify): the share of proponents it judged
            judged = torch.as_tensor(candidates(scores)).cpu()
            if judged.dtype == torch.bool and judged.shape == relevant.shape:
                found = (judged & relevant)[rows].sum().item()
                total_relevant = relevant[rows].sum().item()
                provenance["candidate_recall"] = found / total_relevant if total_relevant else None
                provenance["candidates_mean"] = float(judged[rows].double().sum(dim=1).mean())
        return self._bootstrap_result(per_query, provenance)


@register_metric
class SetPrecision(_SetMetric):
    """Per query: the share of the query's set that are proponents, ``|S ∩ P| / |S|``; value = mean over queries.

    An empty set scores 0 when the query has proponents (abstaining never
    raises precision) and 1 when it has none. Random sets (``threshold="rank"``
    on random scores) score the base rate ``|P|/n_train`` on average
    (``random_precision`` in the provenance). The provenance also holds the
    mean set size, the contradiction rate (share of the selected items that
    contradict the query's fact: FASTTRACK's "relevant but not supporting")
    and, for ``cluster_verify``, ``candidate_recall`` (the share of
    proponents inside the judged candidate clusters: the most recall the
    judge can reach).

    Parameters
    ----------
    threshold : {"auto", "attributor", "rank", "tuned"} or float
        How the set is made (module docstring). ``"tuned"`` draws its split of
        the queries with ``seed``.
    n_bootstrap, seed : int
        The percentile bootstrap over queries of the CI (``seed`` also splits the queries for ``"tuned"``).

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, True, False, False], [False, False, True, False]]))
    >>> scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.3, 0.2, 0.8, 0.1]])
    >>> SetPrecision(threshold="rank", n_bootstrap=100).compute(scores, truth).per_example.tolist()  # top-2, top-1
    [0.5, 1.0]
    """

    name = "set_precision"
    definition = "|S ∩ P| / |S| (0/0: 1 if the query has no proponent, else 0)"

    @staticmethod
    def _per_query(selected: Tensor, relevant: Tensor) -> Tensor:
        return set_precision(selected, relevant)


@register_metric
class SetRecall(_SetMetric):
    """Per query: the share of the query's proponents in its set, ``|S ∩ P| / |P|``; value = mean over queries.

    A query without proponents scores 1 with an empty set and 0 otherwise.
    Parameters and provenance as :class:`SetPrecision`. With ``threshold="rank"``
    the set size is ``|P|``, so set recall = set precision = set F1 (R-precision).

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, True, False, False], [False, False, True, False]]))
    >>> scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.3, 0.2, 0.8, 0.1]])
    >>> SetRecall(threshold=0.5, n_bootstrap=100).compute(scores, truth).per_example.tolist()  # sets {0, 2} and {2}
    [0.5, 1.0]
    """

    name = "set_recall"
    definition = "|S ∩ P| / |P| (0/0: 1 if the set is empty too, else 0)"

    @staticmethod
    def _per_query(selected: Tensor, relevant: Tensor) -> Tensor:
        return set_recall(selected, relevant)


@register_metric
class SetF1(_SetMetric):
    """Per query: F1 of the query's set, ``2|S ∩ P| / (|S| + |P|)``, FASTTRACK's headline number; value = mean over queries.

    1 when the set and the proponents are both empty. Parameters and
    provenance as :class:`SetPrecision`.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import EntailmentTruth
    >>> truth = EntailmentTruth(torch.tensor([[True, True, False, False], [False, False, True, False]]))
    >>> scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.3, 0.2, 0.8, 0.1]])
    >>> SetF1(threshold=0.5, n_bootstrap=100).compute(scores, truth).per_example.tolist()  # 2·1/(2+2), 2·1/(1+1)
    [0.5, 1.0]
    """

    name = "set_f1"
    definition = "2|S ∩ P| / (|S| + |P|) (1 when both are empty)"

    @staticmethod
    def _per_query(selected: Tensor, relevant: Tensor) -> Tensor:
        return set_f1(selected, relevant)
