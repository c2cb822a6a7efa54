"""Paired-bootstrap comparisons of methods on the same examples, and ranks with intervals."""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.functional.bootstrap import _row_blocks

__all__ = ["paired_bootstrap_differences", "holm_adjust", "rank_intervals", "pareto_front"]


def paired_bootstrap_differences(
    per_example: Tensor, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean differences between every pair of methods, with paired-bootstrap CIs and p-values.

    Examples are resampled jointly for all methods (the same draw for every
    pair); a pair's mean difference in a resample is taken over the drawn
    examples where both methods have a finite value.

    Parameters
    ----------
    per_example : Tensor
        ``[A, n]`` values of A methods on the same n examples (NaN = undefined).
    n_resamples : int
        Bootstrap resamples B.
    level : float
        Coverage of the percentile intervals.
    seed : int
        Seed of the resampling generator.

    Returns
    -------
    tuple of Tensor
        ``(diff, low, high, p_value)``, each ``[A, A]`` float64: ``diff[i, j]``
        is mean(i − j) over the examples both define, ``low``/``high`` its
        percentile interval and ``p_value`` the two-sided bootstrap p-value
        ``min(1, 2·min(P*(d ≤ 0), P*(d ≥ 0)))`` (1 on the diagonal and for two
        identical methods; NaN where a pair shares no finite example).

    Notes
    -----
    The ``[B, n]`` resample indices and weights are drawn and used in blocks of
    rows of at most 2**24 elements plus one row (``3·n`` when n > 2**23; see
    ``tdaeval.functional.bootstrap.BLOCK_ELEMENTS``), so memory stays bounded
    for any n; the numbers are bit-identical to drawing all B rows at once.
    """
    values = per_example.to(torch.float64)
    n_methods, n = values.shape
    finite = torch.isfinite(values)
    filled = torch.where(finite, values, torch.zeros_like(values))
    pair_i, pair_j = torch.triu_indices(n_methods, n_methods, offset=1)
    if pair_i.numel() == 0:  # one method: nothing to compare
        zeros = torch.zeros(n_methods, n_methods, dtype=torch.float64)
        return zeros, zeros.clone(), zeros.clone(), torch.ones(n_methods, n_methods, dtype=torch.float64)
    both = (finite[pair_i] & finite[pair_j]).to(torch.float64)  # [P, n]
    delta = (filled[pair_i] - filled[pair_j]) * both  # [P, n]

    def means(weights: Tensor) -> Tensor:  # weights [B, n] -> [B, P]
        count = weights @ both.T
        return torch.where(count > 0, (weights @ delta.T) / count.clamp_min(1e-300), torch.nan)

    observed = means(torch.ones(1, n, dtype=torch.float64))[0]
    generator = torch.Generator().manual_seed(seed)
    boot = torch.empty(n_resamples, pair_i.numel(), dtype=torch.float64)  # [B, P]
    for start, stop in _row_blocks(n_resamples, n):
        rows = stop - start
        idx = torch.randint(0, n, (rows, n), generator=generator) if n else torch.zeros(rows, 0, dtype=torch.long)
        weights = torch.zeros(rows, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
        del idx
        boot[start:stop] = means(weights)
    tail = (1.0 - level) / 2.0
    valid = torch.isfinite(boot)
    n_valid = valid.sum(0).to(torch.float64)
    at_most_zero = ((boot <= 0) & valid).sum(0) / n_valid.clamp_min(1)
    at_least_zero = ((boot >= 0) & valid).sum(0) / n_valid.clamp_min(1)
    p = torch.clamp(2 * torch.minimum(at_most_zero, at_least_zero), max=1.0)
    p = torch.where((n_valid > 0) & torch.isfinite(observed), p, torch.nan)
    filled_boot = torch.where(valid, boot, torch.nan)
    low = torch.nanquantile(filled_boot, tail, dim=0) if n_resamples else observed
    high = torch.nanquantile(filled_boot, 1.0 - tail, dim=0) if n_resamples else observed

    def square(upper: Tensor, antisymmetric: bool, diagonal: float) -> Tensor:
        out = torch.full((n_methods, n_methods), diagonal, dtype=torch.float64)
        out[pair_i, pair_j] = upper
        out[pair_j, pair_i] = -upper if antisymmetric else upper
        return out

    diff = square(observed, True, 0.0)
    low_sq = square(low, False, 0.0)
    high_sq = square(high, False, 0.0)
    # the interval of (j − i) is the negated, swapped interval of (i − j)
    low_sq[pair_j, pair_i], high_sq[pair_j, pair_i] = -high, -low
    return diff, low_sq, high_sq, square(p, False, 1.0)


def holm_adjust(p_values: Tensor) -> Tensor:
    """Holm–Bonferroni adjusted p-values (family-wise error control), NaN kept as NaN.

    Parameters
    ----------
    p_values : Tensor
        ``[m]`` raw p-values.

    Returns
    -------
    Tensor
        ``[m]`` adjusted p-values: ``max_{k ≤ r} min(1, (m − k + 1)·p_(k))`` for the r-th smallest.
    """
    p = p_values.to(torch.float64)
    finite = torch.isfinite(p)
    out = torch.full_like(p, torch.nan)
    m = int(finite.sum())
    if m == 0:
        return out
    order = torch.argsort(p[finite], stable=True)
    sorted_p = p[finite][order]
    scaled = torch.clamp(sorted_p * torch.arange(m, 0, -1, dtype=torch.float64), max=1.0)
    adjusted_sorted = torch.cummax(scaled, dim=0).values
    adjusted = torch.empty_like(adjusted_sorted)
    adjusted[order] = adjusted_sorted
    out[finite] = adjusted
    return out


def rank_intervals(means: Tensor, significant: Tensor, higher_is_better: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Ranks of methods and rank intervals from pairwise significance decisions.

    ``low = 1 + #methods significantly better``, ``high = A − #methods
    significantly worse``: the ranks compatible with every significant pairwise
    difference. The point ``rank`` is the midrank of the undecided pairs,
    ``1 + #decided better + #undecided / 2``, where a pair is decided when it
    differs significantly or exactly one of the two means is NaN (a NaN mean
    counts as worse than every finite one). Methods tied with each other and
    separated from all others therefore share their midrank (three methods tied
    for first all get 2.0), whatever their observed means; the ranks always sum
    to ``A(A + 1)/2``, and ``low ≤ rank ≤ high`` for every finite mean.

    Parameters
    ----------
    means : Tensor
        ``[A]`` observed means.
    significant : Tensor
        ``[A, A]`` bool, symmetric: the pair differs significantly.
    higher_is_better : bool
        Direction of the values.

    Returns
    -------
    tuple of Tensor
        ``(rank, low, high)``, each ``[A]``: ``rank`` float64 (1 is best;
        tied methods share a midrank), ``low`` and ``high`` int64.
    """
    keyed = torch.nan_to_num((-1.0 if higher_is_better else 1.0) * means.to(torch.float64), nan=float("inf"))
    strictly_better = keyed.unsqueeze(1) < keyed.unsqueeze(0)  # [i, j]: i better than j
    better = strictly_better & significant.to(torch.bool)
    low = 1 + better.sum(0)
    high = means.numel() - better.sum(1)
    defined = torch.isfinite(means.to(torch.float64))
    decided = better | (defined.unsqueeze(1) & ~defined.unsqueeze(0))  # [i, j]: i decidedly better than j
    n_better, n_worse = decided.sum(0), decided.sum(1)
    undecided = means.numel() - 1 - n_better - n_worse
    rank = 1.0 + n_better.to(torch.float64) + undecided.to(torch.float64) / 2.0
    return rank, low.long(), high.long()


def pareto_front(quality: Tensor, cost: Tensor, higher_is_better: bool = True) -> Tensor:
    """Which points are not dominated in (quality, cost).

    A point is dominated when another has quality at least as good and cost at
    most as high, one of them strictly. NaN quality or cost is never on the front.

    Parameters
    ----------
    quality, cost : Tensor
        ``[A]`` each.
    higher_is_better : bool
        Direction of ``quality``; lower cost is always better.

    Returns
    -------
    Tensor
        ``[A]`` bool.
    """
    q = quality.to(torch.float64) * (1.0 if higher_is_better else -1.0)
    c = cost.to(torch.float64)
    ok = torch.isfinite(q) & torch.isfinite(c)
    no_worse = (q.unsqueeze(1) >= q.unsqueeze(0)) & (c.unsqueeze(1) <= c.unsqueeze(0))  # [j, i]: j no worse than i
    strictly = (q.unsqueeze(1) > q.unsqueeze(0)) | (c.unsqueeze(1) < c.unsqueeze(0))
    dominated = (no_worse & strictly & ok.unsqueeze(1)).any(0)
    return ok & ~dominated
