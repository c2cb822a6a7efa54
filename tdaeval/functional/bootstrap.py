"""Percentile bootstrap confidence intervals over examples."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bootstrap_ci", "nanmean_ci"]


def bootstrap_ci(
    values: Tensor,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``.

    Parameters
    ----------
    values : Tensor
        ``[n]`` finite per-example values (drop NaNs first).
    n_resamples : int
        Number of bootstrap resamples.
    level : float
        Coverage of the interval, in (0, 1).
    seed : int
        Seed of the resampling generator (global RNG state is not touched).

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(nan, nan)`` when ``values`` is empty.
    """
    values = values.detach().to("cpu", torch.float64).flatten()
    n = values.numel()
    if n == 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_resamples, n), generator=generator)
    means = values[idx].mean(dim=1)
    tail = (1.0 - level) / 2.0
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(low), float(high)


def nanmean_ci(
    values: Tensor, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float], int]:
    """Mean over the finite entries, its bootstrap CI, and the number of NaNs skipped.

    Returns
    -------
    tuple
        ``(mean, (low, high), n_nan)``.
    """
    values = values.detach().to("cpu", torch.float64).flatten()
    finite = torch.isfinite(values)
    kept = values[finite]
    mean = float(kept.mean()) if kept.numel() else float("nan")
    return mean, bootstrap_ci(kept, n_resamples, level, seed), int((~finite).sum())
