"""Detection of flagged training points from a score per point (pure functions, O(n log n))."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["positive_ranks", "detection_curve"]


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
