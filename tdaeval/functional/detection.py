"""Detection of flagged training points from a score per point (pure functions, O(n log n))."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["average_precision", "positive_ranks", "detection_curve"]


def positive_ranks(scores: Tensor, positives: Tensor) -> Tensor:
    """For each positive, the fraction of negatives scored below it (ties count half).

    Their mean is the ROC-AUC (the Mann–Whitney statistic). Invariant to the
    order of the points: no index enters the comparison.

    Parameters
    ----------
    scores : Tensor
        ``[n]``, higher = more suspicious.
    positives : Tensor
        ``[n]`` bool, with at least one positive and one negative.

    Returns
    -------
    Tensor
        ``[n_positive]`` float64 in [0, 1], positives in index order.
    """
    scores = scores.double()
    negatives = torch.sort(scores[~positives]).values
    chosen = scores[positives]
    below = torch.searchsorted(negatives, chosen, right=False).double()
    not_above = torch.searchsorted(negatives, chosen, right=True).double()
    return (below + 0.5 * (not_above - below)) / negatives.numel()


def detection_curve(scores: Tensor, positives: Tensor) -> Tensor:
    """``[n]``: fraction of the positives found among the ``j`` highest-scored points, ``j = 1 … n``.

    Points with equal scores are inspected as a group: within it the curve
    rises linearly (the expectation over the group's orders), so the curve
    does not depend on the order of the points. Quanda 0.5.0 instead adds
    ``arange(n)·1e-4`` to the scores before sorting, which reorders small
    scores by their position in the training set.
    """
    sorted_scores, order = torch.sort(scores.double(), descending=True)
    found = positives[order].double()
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    group = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    group_found = torch.zeros(counts.numel(), dtype=torch.float64).index_add_(0, group, found)
    group_start = torch.cumsum(counts, 0) - counts
    found_before = torch.cumsum(group_found, 0) - group_found
    within = torch.arange(scores.numel()) - group_start[group] + 1
    curve = found_before[group] + within * group_found[group] / counts[group]
    return curve / positives.sum()


def average_precision(scores: Tensor, positives: Tensor) -> Tensor:
    """Average precision of each score row for the ``positives`` mask (scikit-learn's definition, ties grouped).

    ``AP = Σ_j (R_j − R_{j−1}) · P_j`` over the distinct score values in
    decreasing order, ``P_j`` / ``R_j`` the precision / recall of the points
    scored at least the ``j``-th value. Chance is the share of positives.

    Parameters
    ----------
    scores : Tensor
        ``[m, n]`` (or ``[n]``), higher = more likely positive.
    positives : Tensor
        ``[n]`` bool, with at least one positive.

    Returns
    -------
    Tensor
        ``[m]`` float64 in [0, 1] (a 0-d tensor for ``[n]`` scores).
    """
    single = scores.ndim == 1
    rows = scores.double().reshape(-1, scores.shape[-1])
    sorted_scores, order = torch.sort(rows, dim=1, descending=True)
    hits = positives.to(torch.float64)[order]  # [m, n]
    true_positives = torch.cumsum(hits, dim=1)
    # a threshold ends where the next sorted score differs (ties are one threshold)
    last = torch.ones_like(sorted_scores, dtype=torch.bool)
    last[:, :-1] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    ranks = torch.arange(1, rows.shape[1] + 1, dtype=torch.float64).expand_as(rows)
    precision = true_positives / ranks
    n_positive = positives.sum().double()
    gained = torch.diff(torch.where(last, true_positives, torch.zeros_like(true_positives)).cummax(dim=1).values,
                        dim=1, prepend=torch.zeros(rows.shape[0], 1, dtype=torch.float64))
    ap = (gained * precision * last).sum(dim=1) / n_positive
    return ap[0] if single else ap
