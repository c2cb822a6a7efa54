"""Paired-bootstrap rank intervals."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bootstrap_rank_intervals"]


def bootstrap_rank_intervals(
    per_example: Tensor,
    higher_is_better: bool = True,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Ranks of A methods from per-example values on the same examples, with intervals.

    Examples are resampled jointly for all methods (paired bootstrap); in
    each resample the methods are ranked by their mean over finite values.

    Parameters
    ----------
    per_example : Tensor
        ``[A, n]``; NaN entries are skipped in each mean.
    higher_is_better : bool
        Direction of the values.
    n_resamples : int
        Bootstrap resamples.
    level : float
        Coverage of the rank intervals.
    seed : int
        Seed of the resampling generator.

    Returns
    -------
    tuple of Tensor
        ``(rank, low, high)``, each ``[A]`` int64: the rank of the observed
        means (1 = best; ties share the best rank) and the rank interval.
    """
    values = per_example.to(torch.float64)
    n_methods, n = values.shape
    sign = -1.0 if higher_is_better else 1.0

    def ranks_of(means: Tensor) -> Tensor:
        keyed = torch.nan_to_num(sign * means, nan=float("inf"))
        # rank = 1 + number of methods strictly better
        return 1 + (keyed.unsqueeze(-1) > keyed.unsqueeze(-2)).sum(dim=-1)

    observed = ranks_of(torch.nanmean(values, dim=1))
    if n == 0:
        return observed, observed.clone(), observed.clone()
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_resamples, n), generator=generator)
    means = torch.nanmean(values[:, idx], dim=2).T  # [B, A]
    boot = ranks_of(means).to(torch.float64)
    tail = (1.0 - level) / 2.0
    low = torch.quantile(boot, tail, dim=0, interpolation="lower").round().long()
    high = torch.quantile(boot, 1.0 - tail, dim=0, interpolation="higher").round().long()
    return observed, torch.minimum(low, observed), torch.maximum(high, observed)
