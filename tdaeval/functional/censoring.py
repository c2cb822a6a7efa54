"""Censored "smallest k" values: a grid search that may end before the event happens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["censoring_value", "cumulative_flips", "first_event_k", "censored_median"]


def censoring_value(k_grid: Sequence[int]) -> float:
    """The value given to an example whose event never happens within ``k_grid``: one grid step past its end.

    ``k_max + (k_max − k_prev)`` for a grid of two or more sizes, ``2 · k_max``
    for a single size. It is worse than every tested ``k`` and is a lower bound
    on the example's true (unobserved) value, so a mean over examples is a
    restricted mean that counts a never-flipped example against the method.

    Parameters
    ----------
    k_grid : sequence of int
        Increasing sizes tested.

    Returns
    -------
    float
    """
    grid = [float(k) for k in k_grid]
    if not grid:
        raise ValueError("censoring_value needs a non-empty k_grid.")
    return grid[-1] + (grid[-1] - grid[-2]) if len(grid) > 1 else 2.0 * grid[-1]


def first_event_k(events: Tensor, k_grid: Sequence[int]) -> Tensor:
    """Smallest ``k`` of the grid at which each example's event happened, censored past the grid.

    Parameters
    ----------
    events : Tensor
        ``[n, K]`` bool, ``events[z, j]`` True when the event (e.g. a flipped
        prediction) happened for example ``z`` at ``k_grid[j]``.
    k_grid : sequence of int
        ``K`` increasing sizes.

    Returns
    -------
    Tensor
        ``[n]`` float64: the first ``k`` with an event, or
        :func:`censoring_value` of ``k_grid`` when there is none.
    """
    if events.ndim != 2 or events.shape[1] != len(k_grid):
        raise ValueError(f"first_event_k expects events of shape [n, K={len(k_grid)}]. Got {tuple(events.shape)}.")
    events = events.to(torch.bool)
    grid = torch.tensor([float(k) for k in k_grid], dtype=torch.float64)
    first = grid[events.int().argmax(dim=1)] if events.shape[0] else torch.zeros(0, dtype=torch.float64)
    return torch.where(events.any(dim=1), first, torch.full_like(first, censoring_value(k_grid)))


def censored_median(values: Tensor, k_grid: Sequence[int]) -> float | None:
    """Median of :func:`first_event_k` values: the smallest ``k`` by which at least half the examples had the event.

    Parameters
    ----------
    values : Tensor
        ``[n]`` output of :func:`first_event_k`.
    k_grid : sequence of int
        The same grid.

    Returns
    -------
    float or None
        None when fewer than half of the examples had the event within the
        grid (the median is then only known to exceed the grid), or when ``n = 0``.
    """
    n = values.numel()
    if n == 0:
        return None
    for k in k_grid:
        if float((values <= float(k)).double().mean()) >= 0.5:
            return float(k)
    return None


def cumulative_flips(margins: Tensor) -> Tensor:
    """Whether each test point's prediction is flipped at each removal size, and stays flipped for larger ones.

    A point is flipped at ``k`` when fewer than half of the seeds classify it
    correctly (margin > 0); once flipped it counts as flipped for every larger ``k``.

    Parameters
    ----------
    margins : Tensor
        ``[t, K, R]`` margins after removing ``k`` points, per seed, ``K`` removal sizes in increasing order.

    Returns
    -------
    Tensor
        ``[t, K]`` bool, non-decreasing along ``K``.
    """
    flipped = (margins > 0).double().mean(dim=2) < 0.5
    return torch.cummax(flipped.int(), dim=1).values.bool()
