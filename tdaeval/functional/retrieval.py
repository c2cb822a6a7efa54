"""Retrieval of known relevant training items (fact tracing): MRR, hit@k, recall@k, precision@k, ROC-AUC, contradiction rate@k; exact ties.

Every function takes ``scores`` ``[n_test, n_train]`` (row = query, higher =
ranked first), ``relevant`` bool of the same shape (the query's proponents)
and an optional ``candidates`` bool mask of the same shape: a query's ranking
is over its candidates only (all training items when ``candidates`` is None).

Tie rule
--------
Tied scores are broken uniformly at random and every function returns the
EXACT expectation over those tie-breaks (no seed, no dependence on the order
of the training items). For a candidate ``i`` let ``b_i`` be the number of
candidates scored strictly above it and ``g_i`` the size of its tie group
(candidates with its score, itself included). Under random tie-breaking its
rank is uniform on ``{b_i + 1, …, b_i + g_i}``, so

* ``P(i ∈ top-k) = clip((k − b_i) / g_i, 0, 1)``: all ``g`` orders of the
  group are equally likely and ``k − b`` of its places lie inside the top-k;
* hence ``E[hits@k] = Σ_{i relevant} P(i ∈ top-k)`` (linearity), which gives
  recall@k and precision@k;
* at most one tie group straddles the boundary ``k`` (``b < k < b + g``): with
  ``B`` candidates above it, ``G`` items in it of which ``m_g`` relevant,
  ``k − B`` of its items enter the top-k as a uniformly random subset, so the
  number of its relevant items in the top-k is hypergeometric and
  ``P(none) = C(G − m_g, k − B) / C(G, k − B)``; hit@k is 1 when a relevant
  item lies in a group wholly inside the top-k, else ``1 − P(none)`` (0 when
  the straddling group holds no relevant item);
* the first relevant item lies in the highest-scored tie group holding a
  relevant item (``b`` candidates above it, ``g`` items, ``m`` relevant). The
  ``m`` relevant items take a uniformly random ``m``-subset of the group's
  ``g`` places; the first of them is at place ``j`` with probability
  ``C(g − j, m − 1) / C(g, m)`` (the other ``m − 1`` lie among the ``g − j``
  places after ``j``), so ``E[RR] = Σ_{j=1}^{g−m+1} 1/(b + j) ·
  C(g − j, m − 1) / C(g, m)``.

With uniformly random scores the whole pool is one tie group (``b = 0``,
``g = N``), which gives the random baselines ``random_*`` below: constant
scores score exactly the random baseline. Binomial ratios are evaluated in
log space (sums of ``log1p`` of the ratio recurrences, float64), accurate
to ~1e-12 relative for pools of 10^5 and more.

Null distribution and CI
------------------------
Under random scores each query's value has an exact distribution
(:func:`random_value_pmf`: first-proponent rank ``P(r) = C(N − r, m − 1) / C(N, m)``,
hypergeometric top-k counts, the Mann–Whitney distribution of the ROC-AUC);
:func:`sample_random_values` and
:func:`random_null` turn it into the distribution of a random attributor's
value (the mean over queries) on given pools, its central interval and a
one-sided p-value. :func:`quasi_wilson_ci` is the interval the fact-tracing
metrics report: a Wilson score interval for a mean of values in ``[0, upper]``
whose dispersion is floored at a random attributor's (:func:`random_dispersion`),
because the percentile bootstrap under-covers these skewed values near 0 and 1.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from tdaeval.errors import ConfigError

__all__ = [
    "reciprocal_rank",
    "hit_at_k",
    "recall_at_k",
    "precision_at_k",
    "roc_auc",
    "contradiction_rate_at_k",
    "topk_inclusion",
    "category_breakdown",
    "rerank_candidates",
    "random_reciprocal_rank",
    "random_hit_at_k",
    "random_recall_at_k",
    "random_precision_at_k",
    "random_roc_auc",
    "random_contradiction_rate_at_k",
    "RANDOM_NULL_METRICS",
    "MANN_WHITNEY_EXACT_LIMIT",
    "random_value_pmf",
    "sample_random_values",
    "random_null",
    "random_dispersion",
    "quasi_wilson_ci",
]


# ----------------------------------------------------------------------------- checks and the tie structure


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"The 'k' argument must be an integer >= 1. Got {k!r}.")
    return k


def _check_mask(name: str, mask: Tensor, shape: torch.Size) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.shape != shape:
        raise ConfigError(f"The '{name}' argument must be a bool Tensor of shape {tuple(shape)} like the scores. "
                          f"Got {mask.dtype} of shape {tuple(mask.shape)}.")
    return mask


def _check(scores: Tensor, relevant: Tensor | None, candidates: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """``scores`` as float64 ``[n_test, n_train]``, ``relevant`` and ``candidates`` as bool masks of that shape."""
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.dtype == torch.bool or scores.dtype.is_complex:
        raise ConfigError(f"The 'scores' argument must be a real Tensor [n_test, n_train]. Got {scores.dtype} of shape {tuple(scores.shape)}.")
    scores = scores.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(scores).all()):
        raise ConfigError("The 'scores' argument has non-finite values: a ranking needs finite scores.")
    if relevant is not None:
        relevant = _check_mask("relevant", relevant, scores.shape).cpu()
    if candidates is None:
        candidates = torch.ones(scores.shape, dtype=torch.bool)
    else:
        candidates = _check_mask("candidates", candidates, scores.shape).cpu()
        if not bool(candidates.any(dim=1).all()):
            raise ConfigError("The 'candidates' argument must leave every query at least one candidate.")
    return scores, relevant, candidates


def _above_and_tied(scores: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """``b`` (candidates scored strictly above) and ``g`` (size of the tie group among candidates), int64 ``[n_test, n_train]``.

    Entries of non-candidates are meaningless (callers mask them).
    """
    masked = scores.masked_fill(~candidates, -math.inf)  # finite candidates are never tied with or below a non-candidate
    values, order = masked.sort(dim=1, descending=True)
    n = scores.shape[1]
    position = torch.arange(n).expand_as(order)
    first = torch.ones_like(values, dtype=torch.bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]  # a tie group starts here
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]  # a tie group ends here
    start = torch.where(first, position, torch.zeros_like(position)).cummax(dim=1).values
    end = torch.where(last, position + 1, torch.full_like(position, n)).flip(1).cummin(dim=1).values.flip(1)
    b = torch.empty_like(order).scatter_(1, order, start)
    g = torch.empty_like(order).scatter_(1, order, end - start)
    return b, g


def _log_miss(n: Tensor, m: Tensor, t: Tensor) -> Tensor:
    """``log[C(n − m, t) / C(n, t)]``: no relevant item among ``t`` drawn from ``n`` holding ``m`` (float64, requires ``n − m >= t``).

    The ratio is ``Π_{i<t} (1 − m/(n − i)) = Π_{i<m} (1 − t/(n − i))``; the
    shorter product is summed as ``log1p`` terms (exact to a few ulps, no
    ``lgamma`` cancellation), in row chunks of bounded memory.
    """
    length, other = torch.minimum(m, t), torch.maximum(m, t)
    out = torch.zeros_like(n)
    longest = int(length.max()) if length.numel() else 0
    if longest == 0:
        return out
    step = max(1, 2**22 // longest)
    i = torch.arange(longest, dtype=torch.float64)
    flat_n, flat_c, flat_l, flat_out = n.reshape(-1), other.reshape(-1), length.reshape(-1), out.reshape(-1)
    for start in range(0, flat_n.numel(), step):
        rows = slice(start, start + step)
        used = i < flat_l[rows, None]
        denominator = torch.where(used, flat_n[rows, None] - i, torch.ones_like(i))
        terms = torch.log1p(-flat_c[rows, None] / denominator)
        flat_out[rows] = torch.where(used, terms, torch.zeros_like(terms)).sum(dim=1)
    return flat_out.reshape(n.shape)


def _first_relevant_rr(b: int, g: int, m: int) -> float:
    """``E[1/rank]`` of the first of ``m`` relevant items placed uniformly among ``g`` tied places after ``b`` items (0 when m = 0).

    ``P(first at j) = C(g − j, m − 1) / C(g, m)`` by the ratio recurrence
    ``P(1) = m/g``, ``P(j + 1) = P(j) · (1 − (m − 1)/(g − j))``, summed in log space.
    """
    if m <= 0:
        return 0.0
    if g == m:
        return 1.0 / (b + 1)
    j = torch.arange(1, g - m + 2, dtype=torch.float64)
    steps = torch.log1p(-(m - 1) / (g - j[:-1]))
    log_p = math.log(m / g) + torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps, 0)])
    return float((torch.exp(log_p) / (b + j)).sum())


# ----------------------------------------------------------------------------- per-query metrics


def topk_inclusion(scores: Tensor, k: int, candidates: Tensor | None = None) -> Tensor:
    """Probability that each candidate is in its query's top ``k`` under uniformly random tie-breaking.

    ``P(i ∈ top-k) = clip((k − b_i) / g_i, 0, 1)`` with ``b_i`` the candidates
    scored strictly above ``i`` and ``g_i`` its tie group (module docstring).

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``, finite; higher = ranked first.
    k : int
        Top-set size (>= 1; a pool smaller than ``k`` is included whole).
    candidates : Tensor, optional
        ``[n_test, n_train]`` bool; non-candidates get probability 0.

    Returns
    -------
    Tensor
        ``[n_test, n_train]`` float64 in [0, 1]; each row sums to ``min(k, n_candidates)``.

    Examples
    --------
    >>> import torch
    >>> topk_inclusion(torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]]), k=2).tolist()  # one of the three tied 2.0s enters
    [[1.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 0.0]]
    """
    k = _check_k(k)
    scores, _, candidates = _check(scores, None, candidates)
    b, g = _above_and_tied(scores, candidates)
    return ((k - b).double() / g.double()).clamp(0.0, 1.0) * candidates


def _expected_hits(scores: Tensor, relevant: Tensor, candidates: Tensor, k: int) -> tuple[Tensor, Tensor]:
    b, g = _above_and_tied(scores, candidates)
    inclusion = ((k - b).double() / g.double()).clamp(0.0, 1.0)
    chosen = relevant & candidates
    return (inclusion * chosen).sum(dim=1), chosen.sum(dim=1)


def reciprocal_rank(scores: Tensor, relevant: Tensor, candidates: Tensor | None = None) -> Tensor:
    """Expected reciprocal rank of each query's first relevant candidate (0 when it has none, as Quanda and FTRACE).

    Tie rule (module docstring): with ``b`` candidates above the highest tie
    group holding a relevant item, ``g`` items in that group and ``m`` of them
    relevant, ``E[RR] = Σ_{j=1}^{g−m+1} 1/(b + j) · C(g − j, m − 1) / C(g, m)``;
    without ties this is ``1 / rank``.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``, finite; higher = ranked first.
    relevant : Tensor
        ``[n_test, n_train]`` bool, the query's relevant items (proponents).
    candidates : Tensor, optional
        ``[n_test, n_train]`` bool; only candidates are ranked (every row needs one). All items when None.

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1].

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.2, 0.2]])
    >>> relevant = torch.tensor([[False, True, False], [True, False, False]])
    >>> [round(v, 6) for v in reciprocal_rank(scores, relevant).tolist()]  # 1/2; all tied: (1 + 1/2 + 1/3) / 3
    [0.5, 0.611111]
    """
    scores, relevant, candidates = _check(scores, relevant, candidates)
    b, g = _above_and_tied(scores, candidates)
    chosen = relevant & candidates
    best = scores.masked_fill(~chosen, -math.inf).max(dim=1)
    first = best.indices[:, None]
    b_first, g_first = b.gather(1, first)[:, 0], g.gather(1, first)[:, 0]
    m_first = (chosen & (scores == best.values[:, None])).sum(dim=1)  # relevant items in the first relevant tie group
    found = chosen.any(dim=1)
    out = torch.where(found, 1.0 / (b_first + 1).double(), torch.zeros(scores.shape[0], dtype=torch.float64))
    for q in torch.nonzero(found & (g_first > m_first)).flatten().tolist():  # ties with non-relevant items: the closed form
        out[q] = _first_relevant_rr(int(b_first[q]), int(g_first[q]), int(m_first[q]))
    return out


def hit_at_k(scores: Tensor, relevant: Tensor, k: int, candidates: Tensor | None = None) -> Tensor:
    """Probability that at least one relevant candidate is in the top ``k`` (Quanda's ``RecallAtKMetric``; success@k).

    Tie rule (module docstring): 1 when a relevant item's whole tie group is
    in the top-k; else, for the group straddling the boundary (``B`` above,
    ``G`` items, ``m_g`` relevant), ``1 − C(G − m_g, k − B) / C(G, k − B)``.

    Parameters
    ----------
    scores, relevant, candidates : Tensor
        As :func:`reciprocal_rank`.
    k : int
        Top-set size (>= 1).

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1] (0 for a query without relevant items).

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.2, 0.2]])
    >>> relevant = torch.tensor([[False, True, False], [True, False, False]])
    >>> [round(v, 6) for v in hit_at_k(scores, relevant, k=1).tolist()]  # second query: 1 of 3 tied items enters the top-1
    [0.0, 0.333333]
    """
    k = _check_k(k)
    scores, relevant, candidates = _check(scores, relevant, candidates)
    b, g = _above_and_tied(scores, candidates)
    chosen = relevant & candidates
    inside = (chosen & (b + g <= k)).any(dim=1)
    straddling = candidates & (b < k) & (b + g > k)
    m_g = (straddling & chosen).sum(dim=1).double()
    group = (g * straddling).amax(dim=1).double()
    above = (b * straddling).amax(dim=1).double()
    taken = k - above
    possible = (m_g > 0) & (group - m_g >= taken)  # else some relevant item is always taken
    zero = torch.zeros_like(taken)
    log_none = _log_miss(torch.where(possible, group, zero), torch.where(possible, m_g, zero), torch.where(possible, taken, zero))
    partial = torch.where(possible, -torch.expm1(log_none), torch.where(m_g > 0, torch.ones_like(zero), zero))
    return torch.where(inside, torch.ones_like(partial), partial)


def recall_at_k(scores: Tensor, relevant: Tensor, k: int, candidates: Tensor | None = None) -> Tensor:
    """Expected share of each query's relevant candidates in its top ``k`` (FTRACE's recall: ``|top-k ∩ relevant| / |relevant|``).

    Tie rule: ``E[hits] = Σ_{i relevant} clip((k − b_i) / g_i, 0, 1)`` (module docstring).

    Parameters
    ----------
    scores, relevant, candidates : Tensor
        As :func:`reciprocal_rank`.
    k : int
        Top-set size (>= 1).

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1]; NaN for a query without relevant
        candidates (0/0: FTRACE divides by the number of proponents).

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.5, 0.1, 0.0]])
    >>> recall_at_k(scores, torch.tensor([[True, False, True, False]]), k=2).tolist()
    [0.5]
    """
    k = _check_k(k)
    scores, relevant, candidates = _check(scores, relevant, candidates)
    hits, m = _expected_hits(scores, relevant, candidates, k)
    return torch.where(m > 0, hits / m.clamp(min=1), torch.full_like(hits, math.nan))


def precision_at_k(scores: Tensor, relevant: Tensor, k: int, candidates: Tensor | None = None) -> Tensor:
    """Expected share of relevant items among the top ``k`` (FTRACE's precision: hits / k, also when the pool is smaller than k).

    Tie rule: ``E[hits] = Σ_{i relevant} clip((k − b_i) / g_i, 0, 1)`` (module docstring).

    Parameters
    ----------
    scores, relevant, candidates : Tensor
        As :func:`reciprocal_rank`.
    k : int
        Top-set size (>= 1).

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1].

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.5, 0.1, 0.0]])
    >>> precision_at_k(scores, torch.tensor([[True, False, True, False]]), k=2).tolist()
    [0.5]
    """
    k = _check_k(k)
    scores, relevant, candidates = _check(scores, relevant, candidates)
    hits, _ = _expected_hits(scores, relevant, candidates, k)
    return hits / k


def roc_auc(scores: Tensor, relevant: Tensor, candidates: Tensor | None = None) -> Tensor:
    """Per-query ROC-AUC of the candidates' scores, positives = the relevant candidates (DDA's metric), ties counted 1/2.

    With ``P`` relevant and ``Q`` other candidates, the AUC is the
    Mann–Whitney statistic ``U / (P·Q)``, ``U = #{(i, j): i relevant, j not,
    s_i > s_j} + ½·#{(i, j): s_i = s_j}``, computed from the midranks:
    ``U = Σ_{i relevant} r_i − P(P + 1)/2`` with ``r_i = n_c − b_i − (g_i − 1)/2``
    the ascending midrank of ``i`` among the ``n_c`` candidates (``b_i`` above
    it, ``g_i`` its tie group). Counting a tied pair ½ is the family's tie rule:
    it is the exact expectation of the AUC over uniformly random tie-breaking
    (module docstring), as ``sklearn.metrics.roc_auc_score`` counts it. Under
    random scores its expectation is ½ (:func:`random_value_pmf` gives the
    whole null distribution).

    Parameters
    ----------
    scores, relevant, candidates : Tensor
        As :func:`reciprocal_rank`.

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1]; NaN for a query whose candidates hold no
        relevant item or no other item (the AUC is undefined: 0/0), as
        :func:`recall_at_k` for a query without relevant items.

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]])
    >>> relevant = torch.tensor([[False, True, False, False], [True, True, True, True]])
    >>> roc_auc(scores, relevant).tolist()  # above 0.1, tied with one 0.5, below 0.9: (1 + 0.5 + 0)/3; no negative: NaN
    [0.5, nan]
    """
    scores, relevant, candidates = _check(scores, relevant, candidates)
    b, g = _above_and_tied(scores, candidates)
    chosen = relevant & candidates
    n_candidates = candidates.sum(dim=1, keepdim=True).double()
    midrank = n_candidates - b.double() - (g.double() - 1.0) / 2.0  # ascending, 1 = lowest
    positives = chosen.sum(dim=1).double()
    negatives = candidates.sum(dim=1).double() - positives
    u = (midrank * chosen).sum(dim=1) - positives * (positives + 1.0) / 2.0
    defined = (positives > 0) & (negatives > 0)
    return torch.where(defined, u / (positives * negatives).clamp(min=1.0), torch.full_like(u, math.nan))


def contradiction_rate_at_k(scores: Tensor, contradicting: Tensor, k: int, candidates: Tensor | None = None) -> Tensor:
    """Expected share of each query's top ``k`` that contradicts it (FASTTRACK's point: a relevant item need not support the fact).

    ``Σ_{i contradicting} P(i ∈ top-k) / min(k, n_candidates)`` with the
    family's tie rule ``P(i ∈ top-k) = clip((k − b_i)/g_i, 0, 1)``
    (:func:`topk_inclusion`): the "contradiction" column of
    :func:`category_breakdown`, for any bool mask. LOWER is better. Under
    random scores its expectation is ``c/N`` (``c`` contradicting among ``N``
    candidates; :func:`random_contradiction_rate_at_k`).

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``, finite; higher = ranked first.
    contradicting : Tensor
        ``[n_test, n_train]`` bool, the items that contradict the query's fact
        (the truth's ``"contradiction"`` category).
    k : int
        Top-set size (>= 1; a pool smaller than ``k`` is taken whole).
    candidates : Tensor, optional
        ``[n_test, n_train]`` bool; only candidates are ranked.

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1] (0 for a query without contradicting candidates).

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    >>> contradicting = torch.tensor([[True, False, True, False]])
    >>> contradiction_rate_at_k(scores, contradicting, k=2).tolist()  # 0.9, then one of the two tied 0.5s: (1 + 1/2)/2
    [0.75]
    """
    k = _check_k(k)
    scores, contradicting, candidates = _check(scores, contradicting, candidates)
    inclusion = topk_inclusion(scores, k, candidates)
    return (inclusion * (contradicting & candidates)).sum(dim=1) / candidates.sum(dim=1).clamp(max=k).double()


def category_breakdown(scores: Tensor, categories: Tensor, k: int, n_categories: int, candidates: Tensor | None = None) -> Tensor:
    """Expected share of each query's top ``k`` falling in each category (same tie rule as :func:`topk_inclusion`).

    The share of category ``c`` is ``Σ_{i in c} P(i ∈ top-k) / min(k, n_candidates)``;
    a row sums to 1. The contradiction rate@k is the column of the
    "contradiction" category.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``, finite; higher = ranked first.
    categories : Tensor
        ``[n_test, n_train]`` integer codes in ``[0, n_categories)``.
    k : int
        Top-set size (>= 1).
    n_categories : int
        Number of categories (columns of the result).
    candidates : Tensor, optional
        ``[n_test, n_train]`` bool; only candidates are ranked.

    Returns
    -------
    Tensor
        ``[n_test, n_categories]`` float64.

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    >>> categories = torch.tensor([[1, 0, 2, 1]], dtype=torch.int8)
    >>> category_breakdown(scores, categories, k=2, n_categories=3).tolist()  # 0.9, then one of the tied 0.5s
    [[0.25, 0.5, 0.25]]
    """
    inclusion = topk_inclusion(scores, k, candidates)
    categories = torch.as_tensor(categories)
    if categories.shape != inclusion.shape or categories.dtype.is_floating_point or categories.dtype == torch.bool:
        raise ConfigError(f"The 'categories' argument must be an integer Tensor of shape {tuple(inclusion.shape)} like the scores. "
                          f"Got {categories.dtype} of shape {tuple(categories.shape)}.")
    if isinstance(n_categories, bool) or not isinstance(n_categories, int) or n_categories < 1:
        raise ConfigError(f"The 'n_categories' argument must be an integer >= 1. Got {n_categories!r}.")
    codes = categories.long().cpu()
    if bool(((codes < 0) | (codes >= n_categories)).any()):
        raise ConfigError(f"The 'categories' argument must hold codes in [0, {n_categories}). "
                          f"Got values in [{int(codes.min())}, {int(codes.max())}].")
    out = torch.zeros(inclusion.shape[0], n_categories, dtype=torch.float64).scatter_add_(1, codes, inclusion)
    return out / inclusion.sum(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- FTRACE's reranking protocol


def _pick(eligible: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Up to ``n`` items per row drawn uniformly without replacement from ``eligible`` (bool ``[rows, cols]``)."""
    if n == 0:
        return torch.zeros_like(eligible)
    keys = torch.rand(eligible.shape, generator=generator, dtype=torch.float64).masked_fill(~eligible, -1.0)
    order = keys.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(eligible.shape[1]).expand_as(order).contiguous())
    return eligible & (ranks < n)


def rerank_candidates(relevant: Tensor, shares_answer: Tensor, n_target: int = 100, n_random: int = 100, *,
                      generator: torch.Generator) -> Tensor:
    """Each query's candidate pool under FTRACE's reranking protocol (Akyürek et al. 2022, ``eval/evaluate.py``).

    A query's candidates are (1) all its relevant items (proponents), (2) up
    to ``n_target`` distractors drawn uniformly without replacement from the
    non-relevant items that share the query's answer (``shares_answer``), and
    (3) ``n_random`` (or all remaining, if fewer) items drawn uniformly without
    replacement from the rest (neither relevant nor already drawn). FTRACE
    draws (2) from every item with the query's target string and (3) from the
    whole training set, so its pools may repeat items or proponents; here the
    three sets are disjoint, so the pool size is exactly
    ``m + min(n_target, #sharing) + min(n_random, #rest)``.

    Parameters
    ----------
    relevant : Tensor
        ``[n_test, n_train]`` bool.
    shares_answer : Tensor
        ``[n_test, n_train]`` bool, the items sharing the query's answer
        (relevant items among them are ignored).
    n_target, n_random : int
        Distractor counts (>= 0; FTRACE: 100 and 100).
    generator : torch.Generator
        Seeded generator of the draws (two ``torch.rand`` calls of shape ``[n_test, n_train]``).

    Returns
    -------
    Tensor
        ``[n_test, n_train]`` bool candidate mask.

    Examples
    --------
    >>> import torch
    >>> relevant = torch.tensor([[True, False, False, False, False, False]])
    >>> shares = torch.tensor([[False, True, True, False, False, False]])
    >>> pool = rerank_candidates(relevant, shares, n_target=5, n_random=1, generator=torch.Generator().manual_seed(0))
    >>> pool[0, :3].tolist(), int(pool.sum())  # the proponent, both answer-sharing items, and one random other
    ([True, True, True], 4)
    """
    relevant = torch.as_tensor(relevant)
    if relevant.ndim != 2 or relevant.dtype != torch.bool:
        raise ConfigError(f"The 'relevant' argument must be a bool Tensor [n_test, n_train]. Got {relevant.dtype} of shape {tuple(relevant.shape)}.")
    shares_answer = _check_mask("shares_answer", shares_answer, relevant.shape)
    for name, value in (("n_target", n_target), ("n_random", n_random)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"The '{name}' argument must be an integer >= 0. Got {value!r}.")
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"The 'generator' argument must be a seeded torch.Generator. Got {type(generator).__name__}.")
    relevant, shares_answer = relevant.cpu(), shares_answer.cpu()
    target = _pick(shares_answer & ~relevant, n_target, generator)
    rest = _pick(~relevant & ~target, n_random, generator)
    return relevant | target | rest


# ----------------------------------------------------------------------------- random baselines (closed forms)


def _sizes(pool_sizes: Tensor | int, n_relevant: Tensor | int) -> tuple[Tensor, Tensor]:
    n, m = torch.broadcast_tensors(torch.as_tensor(pool_sizes, dtype=torch.float64), torch.as_tensor(n_relevant, dtype=torch.float64))
    if bool((n < 1).any()) or bool((m < 0).any()) or bool((m > n).any()) or bool((n != n.round()).any()) or bool((m != m.round()).any()):
        raise ConfigError("The 'pool_sizes' and 'n_relevant' arguments must be integers with 0 <= n_relevant <= pool_sizes and pool_sizes >= 1.")
    return n, m


def random_reciprocal_rank(pool_sizes: Tensor | int, n_relevant: Tensor | int) -> Tensor:
    """``E[RR]`` of uniformly random scores: ``Σ_{r=1}^{N−m+1} (1/r) · C(N − r, m − 1) / C(N, m)`` (0 when m = 0).

    ``C(N − r, m − 1) / C(N, m)`` is the probability that the first of ``m``
    relevant items among ``N`` randomly ordered ones is at rank ``r``.

    Parameters
    ----------
    pool_sizes : Tensor or int
        ``N`` per query (>= 1).
    n_relevant : Tensor or int
        ``m`` per query (``0 <= m <= N``); broadcast with ``pool_sizes``.

    Returns
    -------
    Tensor
        float64, the broadcast shape.

    Examples
    --------
    >>> round(float(random_reciprocal_rank(660, 2)), 4)
    0.0184
    """
    n, m = _sizes(pool_sizes, n_relevant)
    flat = [_first_relevant_rr(0, int(a), int(b)) for a, b in zip(n.flatten().tolist(), m.flatten().tolist())]
    return torch.tensor(flat, dtype=torch.float64).reshape(n.shape)


def random_hit_at_k(pool_sizes: Tensor | int, n_relevant: Tensor | int, k: int) -> Tensor:
    """``E[hit@k]`` of uniformly random scores: ``1 − C(N − m, k) / C(N, k)`` (k capped at N; 0 when m = 0).

    Examples
    --------
    >>> round(float(random_hit_at_k(660, 2, 10)), 4)
    0.0301
    """
    k = _check_k(k)
    n, m = _sizes(pool_sizes, n_relevant)
    top = torch.minimum(n, torch.tensor(float(k)))
    possible = n - m >= top
    zero = torch.zeros_like(n)
    log_miss = _log_miss(torch.where(possible, n, zero), torch.where(possible, m, zero), torch.where(possible, top, zero))
    return torch.where(possible, -torch.expm1(log_miss), torch.where(m > 0, torch.ones_like(n), zero))


def random_recall_at_k(pool_sizes: Tensor | int, n_relevant: Tensor | int, k: int) -> Tensor:
    """``E[recall@k]`` of uniformly random scores: ``min(k, N) / N`` (NaN when m = 0, as :func:`recall_at_k`).

    Examples
    --------
    >>> round(float(random_recall_at_k(660, 2, 10)), 6)
    0.015152
    """
    k = _check_k(k)
    n, m = _sizes(pool_sizes, n_relevant)
    value = torch.minimum(n, torch.tensor(float(k))) / n
    return torch.where(m > 0, value, torch.full_like(value, math.nan))


def random_precision_at_k(pool_sizes: Tensor | int, n_relevant: Tensor | int, k: int) -> Tensor:
    """``E[precision@k]`` of uniformly random scores: ``m · min(k, N) / (N · k)`` (``m / N`` when k <= N).

    Examples
    --------
    >>> round(float(random_precision_at_k(660, 2, 10)), 6)
    0.00303
    """
    k = _check_k(k)
    n, m = _sizes(pool_sizes, n_relevant)
    return m * torch.minimum(n, torch.tensor(float(k))) / (n * k)


def random_roc_auc(pool_sizes: Tensor | int, n_relevant: Tensor | int) -> Tensor:
    """``E[AUC]`` of uniformly random scores: ½ (NaN when ``m = 0`` or ``m = N``, as :func:`roc_auc`).

    Examples
    --------
    >>> random_roc_auc(torch.tensor([660, 660, 3]), torch.tensor([2, 0, 3])).tolist()
    [0.5, nan, nan]
    """
    n, m = _sizes(pool_sizes, n_relevant)
    return torch.where((m > 0) & (m < n), torch.full_like(n, 0.5), torch.full_like(n, math.nan))


def random_contradiction_rate_at_k(pool_sizes: Tensor | int, n_contradicting: Tensor | int, k: int) -> Tensor:
    """``E[contradiction rate@k]`` of uniformly random scores: ``min(k, N)·(c/N) / min(k, N) = c/N``.

    Examples
    --------
    >>> round(float(random_contradiction_rate_at_k(660, 33, 10)), 6)
    0.05
    """
    _check_k(k)
    n, c = _sizes(pool_sizes, n_contradicting)
    return c / n


# ----------------------------------------------------------------------------- the null distribution of a random attributor


#: The per-query metrics whose null distribution under random scores :func:`random_value_pmf` knows.
RANDOM_NULL_METRICS = ("reciprocal_rank", "hit_at_k", "recall_at_k", "precision_at_k", "roc_auc", "contradiction_rate_at_k")

#: Largest ``P·Q`` (relevant × other candidates) whose Mann–Whitney null :func:`random_value_pmf` computes exactly
#: (cost ~ (P·Q)²/4 multiply-adds, < 1 s); larger pools with ``min(P, Q) >= 2`` use the normal approximation.
MANN_WHITNEY_EXACT_LIMIT = 64_000


@functools.lru_cache(maxsize=256)
def _mann_whitney_pmf(n_positive: int, n_negative: int) -> tuple[float, ...]:
    """``P(U = u)``, ``u = 0 … P·Q``, of the Mann–Whitney count of (positive above negative) pairs in a uniformly random order.

    Exact: conditioning on the highest-ranked of ``i`` positives and ``j`` negatives (a positive, with
    probability ``i/(i + j)``, is above all ``j`` negatives; a negative adds nothing),
    ``p_{i,j}(u) = i/(i+j)·p_{i−1,j}(u − j) + j/(i+j)·p_{i,j−1}(u)`` with ``p_{i,0} = p_{0,j} = δ_0``: a convex
    combination of probability vectors (no overflow, no cancellation). The distribution is symmetric in
    ``(P, Q)``, so the loop runs ``min(P, Q)`` rows by ``max(P, Q)`` columns. ``min(P, Q) = 1``: uniform on
    ``0 … max(P, Q)``. Above :data:`MANN_WHITNEY_EXACT_LIMIT`: the normal approximation (mean ``PQ/2``, variance
    ``PQ(P + Q + 1)/12``) integrated over ``[u − ½, u + ½]`` and renormalised on the lattice.
    """
    a, b = sorted((n_positive, n_negative))
    if a == 0:
        return (1.0,)
    if a == 1:
        return tuple([1.0 / (b + 1)] * (b + 1))
    size = a * b + 1
    if a * b > MANN_WHITNEY_EXACT_LIMIT:
        u = torch.arange(size, dtype=torch.float64)
        normal = torch.distributions.Normal(torch.tensor(a * b / 2.0, dtype=torch.float64),
                                            torch.tensor(math.sqrt(a * b * (a + b + 1) / 12.0), dtype=torch.float64))
        p = normal.cdf(u + 0.5) - normal.cdf(u - 0.5)
        return tuple((p / p.sum()).tolist())
    rows = [np.zeros(i * b + 1) for i in range(a + 1)]
    for row in rows:
        row[0] = 1.0  # j = 0: no negative to beat
    for j in range(1, b + 1):
        for i in range(1, a + 1):  # ascending i: rows[i - 1] already holds column j
            w = i / (i + j)
            current, below = rows[i], rows[i - 1]
            current[: i * (j - 1) + 1] *= 1.0 - w
            current[j : j + (i - 1) * j + 1] += w * below[: (i - 1) * j + 1]
    return tuple(rows[a].tolist())

#: Observed values within this of a draw count as equal to it (summation-order round-off) in :func:`random_null`.
_TIE_TOLERANCE = 1e-12


def _check_null_metric(metric: str, k: int | None) -> int | None:
    if metric not in RANDOM_NULL_METRICS:
        raise ConfigError(f"The 'metric' argument must be one of {', '.join(map(repr, RANDOM_NULL_METRICS))}. Got {metric!r}.")
    if metric in ("reciprocal_rank", "roc_auc"):
        return None
    return _check_k(k)  # type: ignore[arg-type]


def random_value_pmf(metric: str, pool_size: int, n_relevant: int, k: int | None = None) -> tuple[Tensor, Tensor]:
    """Exact distribution of ONE query's value under uniformly random scores: its possible values and their probabilities.

    A random (or tie-free, exchangeable) ranking of a pool of ``N`` candidates
    holding ``m`` proponents places the proponents on a uniformly random
    ``m``-subset of the ranks, so

    * ``reciprocal_rank``: the first proponent is at rank ``r`` with probability
      ``P(r) = C(N − r, m − 1) / C(N, m)``, ``r = 1 … N − m + 1`` (value ``1/r``;
      ratio recurrence ``P(1) = m/N``, ``P(r + 1) = P(r)·(1 − (m − 1)/(N − r))``
      in log space);
    * the others: the number ``X`` of proponents in the top ``k' = min(k, N)`` is
      hypergeometric, ``P(X = x) = C(m, x) C(N − m, k' − x) / C(N, k')``
      (``lgamma``, renormalised), with value ``[X > 0]`` (``hit_at_k``),
      ``X/m`` (``recall_at_k``), ``X/k`` (``precision_at_k``, FTRACE's hits / k)
      or ``X/k'`` (``contradiction_rate_at_k``, whose "proponents" are the ``m``
      contradicting candidates);
    * ``roc_auc``: the Mann–Whitney count ``U`` of (relevant above other) pairs
      has the exact distribution of the ranks' sum, ``P(U = u)`` from the
      recurrence ``p_{i,j}(u) = i/(i+j)·p_{i−1,j}(u − j) + j/(i+j)·p_{i,j−1}(u)``
      over ``i`` relevant and ``j`` other items (value ``U/(m(N − m))``; exact up
      to ``m(N − m) =`` :data:`MANN_WHITNEY_EXACT_LIMIT`, the continuity-corrected
      normal approximation above it unless ``min(m, N − m) = 1``, where it is uniform).

    A query without proponents (``m = 0``) has the single value 0 (NaN for
    ``recall_at_k``, as :func:`recall_at_k`; NaN for ``roc_auc`` also when ``m = N``).

    Parameters
    ----------
    metric : {"reciprocal_rank", "hit_at_k", "recall_at_k", "precision_at_k", "roc_auc", "contradiction_rate_at_k"}
        The per-query metric (:data:`RANDOM_NULL_METRICS`).
    pool_size : int
        ``N``, the query's number of candidates (>= 1).
    n_relevant : int
        ``m``, its proponents (contradicting items for ``contradiction_rate_at_k``) among them (``0 <= m <= N``).
    k : int, optional
        Top-set size (>= 1); required except for ``reciprocal_rank`` and ``roc_auc``.

    Returns
    -------
    tuple of Tensor
        ``(values [s], probabilities [s])``, float64, values increasing, probabilities summing to 1.

    Examples
    --------
    >>> values, probabilities = random_value_pmf("reciprocal_rank", 4, 2)
    >>> values.tolist(), [round(p, 6) for p in probabilities.tolist()]  # first of 2 among 4 at rank 1, 2, 3
    ([0.3333333333333333, 0.5, 1.0], [0.166667, 0.333333, 0.5])
    >>> values, probabilities = random_value_pmf("hit_at_k", 660, 2, k=10)
    >>> values.tolist(), round(float(probabilities[1]), 4)  # = random_hit_at_k(660, 2, 10)
    ([0.0, 1.0], 0.0301)
    >>> values, probabilities = random_value_pmf("roc_auc", 4, 2)  # U = 0 … 4 with counts 1, 1, 2, 1, 1 over C(4, 2) orders
    >>> values.tolist(), [round(p, 6) for p in probabilities.tolist()]
    ([0.0, 0.25, 0.5, 0.75, 1.0], [0.166667, 0.166667, 0.333333, 0.166667, 0.166667])
    """
    k = _check_null_metric(metric, k)
    n_t, m_t = _sizes(pool_size, n_relevant)
    if n_t.ndim != 0:
        raise ConfigError(f"The 'pool_size' and 'n_relevant' arguments must be single integers. Got shape {tuple(n_t.shape)}.")
    n, m = int(n_t), int(m_t)
    one = torch.ones(1, dtype=torch.float64)
    if metric == "roc_auc":
        if m == 0 or m == n:
            return torch.full((1,), math.nan, dtype=torch.float64), one
        p = torch.tensor(_mann_whitney_pmf(m, n - m), dtype=torch.float64)
        return torch.arange(p.numel(), dtype=torch.float64) / (m * (n - m)), p / p.sum()
    if m == 0:
        return torch.full((1,), math.nan if metric == "recall_at_k" else 0.0, dtype=torch.float64), one
    if metric == "reciprocal_rank":
        r = torch.arange(1, n - m + 2, dtype=torch.float64)
        steps = torch.log1p(-(m - 1) / (n - r[:-1]))
        log_p = math.log(m / n) + torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps, 0)])
        p = torch.exp(log_p)
        return (1.0 / r).flip(0), (p / p.sum()).flip(0)
    top = min(k, n)  # type: ignore[type-var]
    x = torch.arange(max(0, top - (n - m)), min(m, top) + 1, dtype=torch.float64)

    def log_choose(a: Tensor | float, b: Tensor) -> Tensor:
        a = torch.as_tensor(a, dtype=torch.float64)
        return torch.lgamma(a + 1) - torch.lgamma(b + 1) - torch.lgamma(a - b + 1)

    log_p = log_choose(float(m), x) + log_choose(float(n - m), top - x)
    p = torch.exp(log_p - log_p.max())
    p = p / p.sum()
    if metric == "hit_at_k":
        miss = p[x == 0].sum()
        return torch.tensor([0.0, 1.0], dtype=torch.float64), torch.stack([miss, 1.0 - miss])
    if metric == "contradiction_rate_at_k":
        return x / top, p
    return (x / m if metric == "recall_at_k" else x / k), p


def sample_random_values(metric: str, pool_sizes: Tensor | int, n_relevant: Tensor | int, k: int | None = None, n_draws: int = 10_000,
                         *, generator: torch.Generator) -> Tensor:
    """Monte-Carlo draws of the metric's VALUE (the mean over queries) that a random attributor gets on these very pools.

    Each draw samples every query's value independently from its exact null
    distribution (:func:`random_value_pmf`, inverse-CDF sampling, one
    ``torch.rand`` per query and draw; no score matrices) and averages the
    finite ones (a query whose value is NaN, recall without proponents, is
    left out as the metric leaves it out). Queries sharing ``(N, m)`` share
    one table; draws are made in blocks of bounded memory.

    Parameters
    ----------
    metric : str
        The per-query metric, one of :data:`RANDOM_NULL_METRICS`.
    pool_sizes, n_relevant : Tensor or int
        ``[n_test]`` pool size ``N`` and proponent count ``m`` of each query (broadcast together).
    k : int, optional
        Top-set size (required except for ``reciprocal_rank``).
    n_draws : int
        Number of draws (>= 1).
    generator : torch.Generator
        Seeded source of the draws (the global RNG is not touched).

    Returns
    -------
    Tensor
        ``[n_draws]`` float64 (all NaN when no query has a finite value).

    Examples
    --------
    >>> import torch
    >>> draws = sample_random_values("reciprocal_rank", torch.full((60,), 660), 2, n_draws=4000, generator=torch.Generator().manual_seed(0))
    >>> abs(float(draws.mean()) - float(random_reciprocal_rank(660, 2))) < 1e-3  # centred on the closed form
    True
    """
    k = _check_null_metric(metric, k)
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ConfigError(f"The 'n_draws' argument must be an integer >= 1. Got {n_draws!r}.")
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"The 'generator' argument must be a seeded torch.Generator. Got {type(generator).__name__}.")
    n, m = _sizes(pool_sizes, n_relevant)
    pairs = torch.stack([n.flatten(), m.flatten()], dim=1)
    groups, counts = torch.unique(pairs, dim=0, return_counts=True)  # sorted: a deterministic draw order
    total = torch.zeros(n_draws, dtype=torch.float64)
    finite = 0
    for (size, relevant), count in zip(groups.tolist(), counts.tolist()):
        values, probabilities = random_value_pmf(metric, int(size), int(relevant), k)
        if not bool(torch.isfinite(values).all()):  # recall without proponents: NaN, left out of the mean
            continue
        finite += count
        if values.numel() == 1:
            total += count * values[0]
            continue
        cdf = probabilities.cumsum(0)
        step = max(1, 2**22 // n_draws)
        for start in range(0, count, step):
            width = min(step, count - start)
            u = torch.rand(n_draws, width, generator=generator, dtype=torch.float64) * cdf[-1]
            index = torch.searchsorted(cdf, u, right=True).clamp_(max=values.numel() - 1)
            total += values[index].sum(dim=1)
    if finite == 0:
        return torch.full((n_draws,), math.nan, dtype=torch.float64)
    return total / finite


def random_null(observed: float, metric: str, pool_sizes: Tensor | int, n_relevant: Tensor | int, k: int | None = None,
                n_draws: int = 10_000, level: float = 0.95, *, generator: torch.Generator,
                higher_is_better: bool = True) -> tuple[tuple[float, float], float]:
    """Where a random attributor's value falls on these pools, and how surprising ``observed`` is under it.

    From ``n_draws`` draws ``v_1 … v_B`` of :func:`sample_random_values`:

    * the random interval: the central ``level`` range of the ``v_b``
      (``torch.quantile``, linear interpolation); a random attributor's value
      lies inside it with probability ``level`` (up to Monte-Carlo error and
      the discreteness of the value);
    * the one-sided p-value ``(1 + #{b : v_b ≥ observed}) / (B + 1)``: the
      probability that a random attributor does at least as well (the ``+1``
      keeps it a valid p-value, never 0; its smallest value is ``1/(B + 1)``).
      Values within 1e-12 of ``observed`` count as ties (≥), so summation
      round-off never makes it anti-conservative. For a metric where lower is
      better (``higher_is_better=False``: the contradiction rate@k) "at least as
      well" is ``v_b ≤ observed``: ``(1 + #{b : v_b ≤ observed}) / (B + 1)``.

    Parameters
    ----------
    observed : float
        The metric's value (mean over queries) to test.
    metric, pool_sizes, n_relevant, k, n_draws, generator
        As :func:`sample_random_values`.
    level : float
        Coverage of the interval, in (0, 1).
    higher_is_better : bool
        The metric's direction: which tail the p-value counts (keyword only).

    Returns
    -------
    tuple
        ``((low, high), p_value)``; ``((nan, nan), nan)`` when no query has a finite value.

    Examples
    --------
    >>> import torch
    >>> n, m = torch.full((60,), 660), torch.full((60,), 2)
    >>> (low, high), p = random_null(0.9, "reciprocal_rank", n, m, n_draws=999, generator=torch.Generator().manual_seed(0))
    >>> low < 0.0184 < high, p  # nothing random reaches MRR 0.9: p is its floor 1/(B + 1)
    (True, 0.001)
    """
    if not isinstance(level, float) or not 0.0 < level < 1.0:
        raise ConfigError(f"The 'level' argument must be a float in (0, 1). Got {level!r}.")
    observed = float(observed)
    if not math.isfinite(observed):
        raise ConfigError(f"The 'observed' argument must be a finite value. Got {observed!r}.")
    if not isinstance(higher_is_better, bool):
        raise ConfigError(f"The 'higher_is_better' argument must be a bool. Got {higher_is_better!r}.")
    draws = sample_random_values(metric, pool_sizes, n_relevant, k, n_draws, generator=generator)
    if bool(torch.isnan(draws).all()):
        return (math.nan, math.nan), math.nan
    tail = (1.0 - level) / 2.0
    low, high = torch.quantile(draws, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    if higher_is_better:
        at_least = int((draws >= observed - _TIE_TOLERANCE).sum())
    else:
        at_least = int((draws <= observed + _TIE_TOLERANCE).sum())
    return (low, high), (1 + at_least) / (n_draws + 1)


def random_dispersion(metric: str, pool_sizes: Tensor | int, n_relevant: Tensor | int, k: int | None = None, upper: float = 1.0) -> float:
    """Dispersion ``φ₀ = mean_q Var_q / (μ₀ (1 − μ₀))`` of a random attributor's per-query values on these pools (exact).

    ``Var_q`` is the variance of query ``q``'s value under random scores
    (:func:`random_value_pmf`) and ``μ₀`` the mean of their expectations, both
    in units of ``upper`` (values divided by it, so they lie in [0, 1]); queries
    with a NaN value are left out. ``φ₀ = 1`` for 0/1 values (hit@k);
    ``φ₀ ≈ 0.255`` for the reciprocal rank and ``0.499`` for recall@k at
    N = 660, m = 2, k = 10. It is the variance the mean of ``n`` such values
    has, ``φ₀ μ₀ (1 − μ₀) / n``, as a share of the largest variance values in
    [0, 1] with mean ``μ₀`` can have (:func:`quasi_wilson_ci` floors its dispersion at it).

    Parameters
    ----------
    metric, pool_sizes, n_relevant, k
        As :func:`sample_random_values`.
    upper : float
        The largest value a query can take (> 0): 1, or ``max_q min(m_q, k)/k`` for precision@k.

    Returns
    -------
    float
        ``φ₀`` in [0, 1]; 0 when every finite value is a sure 0 or 1 (``μ₀`` is 0 or 1), NaN when no query has a finite value.

    Examples
    --------
    >>> round(random_dispersion("reciprocal_rank", 660, 2), 3), random_dispersion("hit_at_k", 660, 2, k=10)
    (0.255, 1.0)
    """
    k = _check_null_metric(metric, k)
    if isinstance(upper, bool) or not isinstance(upper, (int, float)) or not upper > 0 or not math.isfinite(upper):
        raise ConfigError(f"The 'upper' argument must be a finite number > 0. Got {upper!r}.")
    n, m = _sizes(pool_sizes, n_relevant)
    pairs = torch.stack([n.flatten(), m.flatten()], dim=1)
    groups, counts = torch.unique(pairs, dim=0, return_counts=True)
    means, variances, weights = [], [], []
    for (size, relevant), count in zip(groups.tolist(), counts.tolist()):
        values, probabilities = random_value_pmf(metric, int(size), int(relevant), k)
        if not bool(torch.isfinite(values).all()):
            continue
        values = values / upper
        mean = float((values * probabilities).sum())
        means.append(mean)
        variances.append(max(0.0, float(((values - mean) ** 2 * probabilities).sum())))
        weights.append(count)
    if not weights:
        return math.nan
    total = sum(weights)
    mu = sum(w * a for w, a in zip(weights, means)) / total
    variance = sum(w * v for w, v in zip(weights, variances)) / total
    if mu <= 0.0 or mu >= 1.0:
        return 0.0
    return min(1.0, variance / (mu * (1.0 - mu)))


def quasi_wilson_ci(values: Tensor, upper: float = 1.0, min_dispersion: float = 0.0, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for the mean of values in ``[0, upper]``, with a quasi-binomial dispersion.

    With ``x = values / upper`` (the finite ones, ``n`` of them), ``p̂ = mean(x)``
    and the dispersion ``φ = clip(max(φ̂, min_dispersion), 0, 1)``, where
    ``φ̂ = s² / (p̂ (1 − p̂))`` (``s²`` the unbiased sample variance; 0 when p̂
    is 0 or 1), the interval is the Wilson score interval of ``p̂`` with
    ``n / φ`` trials, times ``upper``: the set of means ``μ`` with
    ``(p̂ − μ)² ≤ z² φ μ (1 − μ) / n``. ``φ = 1`` is the largest variance a
    [0, 1] variable of mean ``μ`` can have (0/1 values: the plain Wilson
    interval of a proportion). Unlike the percentile bootstrap it does not
    collapse when the sample holds no rare large value (a mean near 0 or 1):
    the variance is that of the hypothesised ``μ``, not of the sample.

    Parameters
    ----------
    values : Tensor
        ``[n]`` per-example values in ``[0, upper]`` (NaN entries are left out).
    upper : float
        Largest possible value (> 0).
    min_dispersion : float
        Floor of ``φ`` in [0, 1] (e.g. :func:`random_dispersion`: a sample
        near the floor cannot estimate the variance its rare values carry).
    level : float
        Coverage in (0, 1).

    Returns
    -------
    tuple of float
        ``(low, high)`` inside ``[0, upper]`` and around the mean; ``(nan, nan)`` without a finite value.
        With ``φ = 0`` (no spread and no floor) it is the point ``(mean, mean)``.

    Examples
    --------
    >>> import torch
    >>> [round(v, 4) for v in quasi_wilson_ci(torch.zeros(60), min_dispersion=1.0)]  # 0 of 60: the Wilson interval [0, 0.060]
    [0.0, 0.0602]
    """
    if isinstance(upper, bool) or not isinstance(upper, (int, float)) or not upper > 0 or not math.isfinite(upper):
        raise ConfigError(f"The 'upper' argument must be a finite number > 0. Got {upper!r}.")
    if isinstance(min_dispersion, bool) or not isinstance(min_dispersion, (int, float)) or not 0.0 <= min_dispersion <= 1.0:
        raise ConfigError(f"The 'min_dispersion' argument must be a number in [0, 1]. Got {min_dispersion!r}.")
    if not isinstance(level, float) or not 0.0 < level < 1.0:
        raise ConfigError(f"The 'level' argument must be a float in (0, 1). Got {level!r}.")
    values = torch.as_tensor(values).detach().to("cpu", torch.float64).flatten()
    x = values[torch.isfinite(values)] / upper
    n = x.numel()
    if n == 0:
        return math.nan, math.nan
    if bool((x < -1e-12).any()) or bool((x > 1 + 1e-12).any()):
        low, high = float(x.min()) * upper, float(x.max()) * upper
        raise ConfigError(f"The 'values' argument must lie in [0, upper={upper!r}]. Got values in [{low}, {high}].")
    p = float(x.mean())
    phi_hat = float(x.var()) / (p * (1.0 - p)) if n > 1 and 0.0 < p < 1.0 else 0.0
    phi = min(1.0, max(phi_hat, float(min_dispersion)))
    if phi == 0.0:
        return p * upper, p * upper
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2.0, dtype=torch.float64)))
    trials = n / phi
    shrink = 1.0 + z * z / trials
    centre = (p + z * z / (2.0 * trials)) / shrink
    half = z / shrink * math.sqrt(max(p * (1.0 - p), 0.0) / trials + z * z / (4.0 * trials * trials))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return min(low, p) * upper, max(high, p) * upper
