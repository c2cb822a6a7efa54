"""Percentile bootstrap confidence intervals over examples."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bootstrap_ci", "nanmean_ci"]

#: Most elements one block of resample rows holds (``b·n`` for ``b`` resamples of
#: ``n`` examples): the bootstraps draw their ``[B, n]`` resample indices block
#: by block, so their memory stays bounded however many examples there are.
BLOCK_ELEMENTS = 2**24


def _row_blocks(n_rows: int, n_cols: int, max_elements: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of a ``[n_rows, n_cols]`` matrix, each holding at most ~``max_elements``.

    Every block has at least two rows (a lone last row joins the block before
    it; a single row holds ``n_cols`` however many that is), so a block holds
    at most ``max(max_elements + n_cols, 3·n_cols)`` elements. Two rows or more keep
    torch's row reductions and matrix products on the same code path as one
    ``[n_rows, n_cols]`` matrix, so processing the blocks in order gives
    bit-identical numbers; torch's CPU ``randint`` with a generator draws
    sequentially, so drawing block by block gives the same indices as one draw.
    """
    max_elements = BLOCK_ELEMENTS if max_elements is None else max_elements
    step = max(2, max_elements // max(n_cols, 1))
    blocks = [[start, min(start + step, n_rows)] for start in range(0, n_rows, step)]
    if len(blocks) > 1 and blocks[-1][1] - blocks[-1][0] == 1:
        blocks.pop()
        blocks[-1][1] = n_rows
    return [(start, stop) for start, stop in blocks]


def bootstrap_means(values: Tensor, n_resamples: int, generator: torch.Generator) -> Tensor:
    """``[n_resamples]`` means of resamples (with replacement) of the ``[n]`` float64 ``values``.

    The ``[n_resamples, n]`` indices are drawn from ``generator`` block by block
    (:func:`_row_blocks`), so memory stays bounded for any ``n`` and the numbers
    equal one draw of the whole matrix.
    """
    n = values.numel()
    means = torch.empty(n_resamples, dtype=torch.float64)
    for start, stop in _row_blocks(n_resamples, n):
        idx = torch.randint(0, n, (stop - start, n), generator=generator)  # [b, n]
        means[start:stop] = values[idx].mean(dim=1)
    return means


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

    Notes
    -----
    The ``[n_resamples, n]`` resample indices are drawn and averaged in blocks
    of rows of at most ``BLOCK_ELEMENTS`` = 2**24 elements plus one row
    (``3·n`` when n > 2**23), so memory stays bounded for any n; the numbers are
    bit-identical to drawing the whole matrix at once.
    """
    values = values.detach().to("cpu", torch.float64).flatten()
    n = values.numel()
    if n == 0:
        return float("nan"), float("nan")
    means = bootstrap_means(values, n_resamples, torch.Generator().manual_seed(seed))
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

    The bootstrap runs in bounded memory (blocks of at most 2**24 elements, see
    :func:`bootstrap_ci`).
    """
    values = values.detach().to("cpu", torch.float64).flatten()
    finite = torch.isfinite(values)
    kept = values[finite]
    mean = float(kept.mean()) if kept.numel() else float("nan")
    return mean, bootstrap_ci(kept, n_resamples, level, seed), int((~finite).sum())
