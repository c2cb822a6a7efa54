"""Set retrieval of known relevant training items: per-query precision, recall and F1 of a selected set, and how a set is made from scores.

Every function takes ``[n_test, n_train]`` tensors, one row per query. A
*selection* is the set a method returns for each query: a bool mask, or a
float64 mask of membership probabilities in ``[0, 1]`` (the expected
membership when ties are broken at random, as :func:`rank_selection` gives).

Per query, with ``S`` the selection, ``P`` the relevant items (the
proponents) and ``TP = Σ_i s_i·[i ∈ P]``:

* precision ``= TP / |S|``, recall ``= TP / |P|``, F1 ``= 2·TP / (|S| + |P|)``;
* **a ratio 0/0 is 1 when the query's selection and its relevant items are
  both empty** (the empty answer is exactly right) **and 0 otherwise**: an
  empty selection for a query with something to find has precision 0 (so
  abstaining never raises precision), a non-empty selection for a query with
  nothing to find has recall 0. F1 is only ever 0/0 when both are empty. No
  value is NaN. (scikit-learn's ``precision_recall_fscore_support`` per query
  gives the same numbers with ``zero_division=1`` when both sets are empty and
  ``zero_division=0`` otherwise.)
* With fractional membership ``|S| = Σ_i s_i`` and the values are the ratios
  of the expectations; for :func:`rank_selection` the set size is fixed
  (``|P|`` per query), so they are the exact expectations over tie-breaks.

Making a set from a ranking (for attributors that return scores only):

* :func:`rank_selection`: each query's top ``|P_q|`` (R-precision: precision
  = recall = F1 there), ties by the retrieval metrics' rule
  (:func:`tdaeval.functional.retrieval.topk_inclusion`: exact expectation
  under uniformly random tie-breaking);
* :func:`threshold_selection`: ``score >= threshold`` with one global threshold;
* :func:`tune_threshold`: the global threshold that maximises the mean
  per-query F1 on some queries (evaluate it on the others: :func:`split_queries`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tdaeval.errors import ConfigError
from tdaeval.functional.retrieval import topk_inclusion

__all__ = [
    "set_counts",
    "set_precision",
    "set_recall",
    "set_f1",
    "rank_selection",
    "threshold_selection",
    "tune_threshold",
    "split_queries",
]


def _selection(selected: Tensor, relevant: Tensor) -> tuple[Tensor, Tensor]:
    """``selected`` as float64 in [0, 1] and ``relevant`` as float64 0/1, both ``[n_test, n_train]``, checked."""
    selected, relevant = torch.as_tensor(selected), torch.as_tensor(relevant)
    if relevant.dtype != torch.bool or relevant.ndim != 2:
        raise ConfigError(f"The 'relevant' argument must be a bool Tensor [n_test, n_train]. Got {relevant.dtype} of shape {tuple(relevant.shape)}.")
    if selected.shape != relevant.shape or selected.dtype.is_complex:
        raise ConfigError(f"The 'selected' argument must be a bool or real Tensor of the relevant mask's shape {tuple(relevant.shape)}. "
                          f"Got {selected.dtype} of shape {tuple(selected.shape)}.")
    selected = selected.detach().to("cpu", torch.float64)
    if not bool(((selected >= 0) & (selected <= 1)).all()):  # NaN fails too
        raise ConfigError("The 'selected' argument must hold memberships in [0, 1] (a bool mask or probabilities); got values outside it.")
    return selected, relevant.cpu().double()


def set_counts(selected: Tensor, relevant: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per query: ``TP = Σ s·r``, the selection's size ``Σ s`` and the number relevant ``Σ r``, each float64 ``[n_test]``.

    Parameters
    ----------
    selected : Tensor
        ``[n_test, n_train]`` bool mask, or float memberships in ``[0, 1]``.
    relevant : Tensor
        ``[n_test, n_train]`` bool: the query's relevant items (proponents).
    """
    s, r = _selection(selected, relevant)
    return (s * r).sum(dim=1), s.sum(dim=1), r.sum(dim=1)


def _ratio(numerator: Tensor, denominator: Tensor, both_empty: Tensor) -> Tensor:
    """``numerator / denominator``; where the denominator is 0: 1 if ``both_empty`` else 0."""
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, both_empty.double())


def _empty(size: Tensor) -> Tensor:
    return size <= 1e-12  # a fractional selection of total mass ~0 is empty


def set_precision(selected: Tensor, relevant: Tensor) -> Tensor:
    """Per-query precision ``TP / |S|`` of the selection (module docstring: 0/0 is 1 when both sets are empty, else 0).

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1].

    Examples
    --------
    >>> import torch
    >>> relevant = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    >>> selected = torch.tensor([[True, False, True], [False, False, False], [False, False, False]])
    >>> set_precision(selected, relevant).tolist()  # 1 of 2; an empty set with something to find; both empty
    [0.5, 0.0, 1.0]
    """
    tp, size, n_relevant = set_counts(selected, relevant)
    return _ratio(tp, torch.where(_empty(size), torch.zeros_like(size), size), _empty(size) & (n_relevant == 0)).clamp(0.0, 1.0)


def set_recall(selected: Tensor, relevant: Tensor) -> Tensor:
    """Per-query recall ``TP / |P|`` (0/0 is 1 when the selection is empty too, else 0).

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1].
    """
    tp, size, n_relevant = set_counts(selected, relevant)
    return _ratio(tp, n_relevant, _empty(size) & (n_relevant == 0)).clamp(0.0, 1.0)


def set_f1(selected: Tensor, relevant: Tensor) -> Tensor:
    """Per-query F1 ``2·TP / (|S| + |P|)`` (1 when both are empty).

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1].
    """
    tp, size, n_relevant = set_counts(selected, relevant)
    size = torch.where(_empty(size), torch.zeros_like(size), size)
    return _ratio(2 * tp, size + n_relevant, (size + n_relevant) == 0).clamp(0.0, 1.0)


def rank_selection(scores: Tensor, relevant: Tensor) -> Tensor:
    """Each query's top ``|P_q|`` items (R-precision) as expected memberships under uniformly random tie-breaking.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]`` finite; higher = ranked first.
    relevant : Tensor
        ``[n_test, n_train]`` bool; its row sums set each query's set size. A
        query without relevant items selects nothing.

    Returns
    -------
    Tensor
        ``[n_test, n_train]`` float64 in [0, 1], row ``q`` summing to ``|P_q|``
        (:func:`tdaeval.functional.retrieval.topk_inclusion` with ``k = |P_q|``).
    """
    relevant = torch.as_tensor(relevant)
    if relevant.dtype != torch.bool or relevant.ndim != 2 or tuple(torch.as_tensor(scores).shape) != tuple(relevant.shape):
        raise ConfigError(f"The 'relevant' argument must be a bool Tensor of the scores' shape {tuple(torch.as_tensor(scores).shape)}. "
                          f"Got {relevant.dtype} of shape {tuple(relevant.shape)}.")
    scores = torch.as_tensor(scores)
    sizes = relevant.sum(dim=1)
    out = torch.zeros(relevant.shape, dtype=torch.float64)
    for m in sizes.unique().tolist():
        if m == 0:
            continue
        rows = (sizes == m).nonzero().flatten()
        out[rows] = topk_inclusion(scores[rows], int(m))
    return out


def threshold_selection(scores: Tensor, threshold: float) -> Tensor:
    """``scores >= threshold``: bool ``[n_test, n_train]`` (one global threshold; ``inf`` selects nothing)."""
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.dtype == torch.bool or scores.dtype.is_complex:
        raise ConfigError(f"The 'scores' argument must be a real Tensor [n_test, n_train]. Got {scores.dtype} of shape {tuple(scores.shape)}.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ConfigError(f"The 'threshold' argument must be a number (inf selects nothing). Got {threshold!r}.")
    return scores.detach().cpu().double() >= float(threshold)


def tune_threshold(scores: Tensor, relevant: Tensor, chunk: int = 4096) -> tuple[float, float]:
    """The global threshold ``t`` maximising the mean over queries of F1 of ``scores >= t`` (exact search).

    The candidates are every distinct score and ``+inf`` (the empty set); on a
    tie in mean F1 the largest threshold (the smallest sets) wins.

    Parameters
    ----------
    scores : Tensor
        ``[n_q, n_train]`` finite scores of the tuning queries.
    relevant : Tensor
        ``[n_q, n_train]`` bool.
    chunk : int
        Candidate thresholds evaluated at once (memory ``n_q × chunk``).

    Returns
    -------
    (float, float)
        The threshold and its mean F1 on these queries.
    """
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    relevant = torch.as_tensor(relevant)
    if scores.ndim != 2 or relevant.shape != scores.shape or relevant.dtype != torch.bool:
        raise ConfigError(f"tune_threshold needs scores [n_q, n_train] and a bool relevant mask of that shape. "
                          f"Got {tuple(scores.shape)} and {relevant.dtype} {tuple(relevant.shape)}.")
    if scores.shape[0] == 0 or not bool(torch.isfinite(scores).all()):
        raise ConfigError("tune_threshold needs at least one query and finite scores.")
    order = scores.sort(dim=1)  # ascending
    ascending, positives = order.values, relevant[torch.arange(len(scores))[:, None], order.indices].double()
    n_train = scores.shape[1]
    above_pos = positives.flip(1).cumsum(1).flip(1)  # positives at sorted position >= j
    above_pos = torch.cat([above_pos, torch.zeros(len(scores), 1, dtype=torch.float64)], dim=1)  # [n_q, n_train + 1]
    n_relevant = positives.sum(dim=1, keepdim=True)
    candidates = torch.cat([scores.unique(), torch.tensor([math.inf], dtype=torch.float64)])
    best_t, best_f1 = math.inf, -math.inf
    for start in range(0, len(candidates), chunk):
        t = candidates[start : start + chunk]
        first = torch.searchsorted(ascending.contiguous(), t.expand(len(scores), -1).contiguous(), right=False)  # first index >= t
        size = (n_train - first).double()
        tp = above_pos.gather(1, first)
        denominator = size + n_relevant
        f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.ones_like(tp)).mean(dim=0)
        top = float(f1.max())
        if top >= best_f1 - 1e-12:  # candidates ascend, so a later tie is a larger threshold
            index = int((f1 >= top - 1e-12).nonzero().flatten().max())  # the largest threshold among this chunk's best
            best_t, best_f1 = float(t[index]), max(top, best_f1)
    return best_t, best_f1


def split_queries(n_test: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A seeded split of ``n_test`` queries into a tuning half (``floor(n/2)``) and an evaluation half (the rest), each sorted."""
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 2:
        raise ConfigError(f"Splitting queries into tuning and evaluation halves needs at least 2 queries. Got {n_test!r}.")
    order = torch.randperm(n_test, generator=generator)
    half = n_test // 2
    return order[:half].sort().values, order[half:].sort().values
