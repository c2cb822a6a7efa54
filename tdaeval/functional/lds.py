"""Linear datamodeling score (Park et al. 2023), vectorised over test points."""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.functional.correlation import spearman

__all__ = ["subset_predictions", "lds", "lds_two_way_ci"]


def subset_predictions(scores: Tensor, masks: Tensor, train_chunk: int = 4096) -> Tensor:
    """Additive prediction ``g_j(z) = sum_{i in S_j} scores[z, i]`` for every subset.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]`` attribution scores (may be memory-mapped).
    masks : Tensor
        ``[M, n_train]`` boolean inclusion masks.
    train_chunk : int
        Training points read and converted to float64 at a time: memory stays
        ``O((n_test + M) · train_chunk)`` besides the ``[M, n_test]`` result.

    Returns
    -------
    Tensor
        ``[M, n_test]`` float64.
    """
    out = torch.zeros(masks.shape[0], scores.shape[0], dtype=torch.float64, device=scores.device)
    for start in range(0, scores.shape[1], train_chunk):
        stop = start + train_chunk
        out += masks[:, start:stop].to(device=scores.device, dtype=torch.float64) @ scores[:, start:stop].to(torch.float64).T
    return out


def lds(scores: Tensor, masks: Tensor, outputs: Tensor) -> Tensor:
    """Per-test-point LDS: Spearman over subsets between predictions and outputs.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``; positive means the training point supports the
        test point's measurement.
    masks : Tensor
        ``[M, n_train]`` boolean; ``masks[j, i]`` is True when training point
        ``i`` is in subset ``j``.
    outputs : Tensor
        ``[M, n_test]`` measurement of each test point under the model(s)
        trained on subset ``j`` (averaged over seeds), oriented so that higher
        means better supported (negate a loss before passing it).

    Returns
    -------
    Tensor
        ``[n_test]`` float64; NaN where the outputs or predictions of a test
        point are constant over subsets.
    """
    if scores.ndim != 2:
        raise ValueError(f"lds expects scores of shape [n_test, n_train]. Got {tuple(scores.shape)}.")
    if masks.ndim != 2 or masks.shape[1] != scores.shape[1]:
        raise ValueError(
            f"lds expects masks of shape [M, n_train={scores.shape[1]}]. Got {tuple(masks.shape)}."
        )
    if outputs.shape != (masks.shape[0], scores.shape[0]):
        raise ValueError(
            f"lds expects outputs of shape [M={masks.shape[0]}, n_test={scores.shape[0]}]. "
            f"Got {tuple(outputs.shape)}."
        )
    predictions = subset_predictions(scores, masks)
    return spearman(predictions, outputs.to(torch.float64), dim=0)


def lds_two_way_ci(
    predictions: Tensor,
    outputs: Tensor,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    chunk_elements: int = 2**18,
) -> tuple[float, float]:
    """Percentile CI of the mean LDS, resampling subsets and test points together (two-way bootstrap).

    The test-point bootstrap (:func:`tdaeval.functional.nanmean_ci` of the
    per-test LDS) holds the M subsets fixed, so it leaves out the variance of
    drawing them, which every test point shares. Here each resample draws M
    subsets with replacement and, independently, the test points with a finite
    LDS with replacement; every drawn test point's Spearman correlation is
    recomputed over the drawn subsets (repeated subsets are ties, with average
    ranks) and the resampled statistic is the mean over the drawn test points
    (skipping any that is constant over the drawn subsets). A subset is drawn
    with its trained model(s), so seed noise of the subset models is covered too.
    Resampling both ways counts the interaction of subsets and test points
    twice, so the interval errs on the wide side (McCullagh 2000).

    Parameters
    ----------
    predictions : Tensor
        ``[M, n_test]`` additive predictions (:func:`subset_predictions`).
    outputs : Tensor
        ``[M, n_test]`` retrained measurements, oriented so that higher means
        better supported (as for :func:`lds`).
    n_resamples : int
        Bootstrap resamples B.
    level : float
        Coverage of the percentile interval, in (0, 1).
    seed : int
        Seed of a fresh generator that draws the subset indices ``[B, M]``
        first, then the test indices ``[B, t]`` (t = test points with a finite
        LDS, in their order); the global RNG is not touched.
    chunk_elements : int
        Resamples are processed in chunks of about this many ``B·M·t``
        elements (at least one resample per chunk); the resample indices are
        drawn chunk by chunk too, so memory stays bounded for any B (the
        numbers are bit-identical to drawing all ``[B, M]`` and ``[B, t]``
        indices at once).

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(nan, nan)`` when no test point has a finite LDS.
    """
    if predictions.ndim != 2 or outputs.shape != predictions.shape:
        raise ValueError(
            f"lds_two_way_ci expects predictions and outputs of the same shape [M, n_test]. "
            f"Got {tuple(predictions.shape)} and {tuple(outputs.shape)}."
        )
    predictions = predictions.detach().to("cpu", torch.float64)
    outputs = outputs.detach().to("cpu", torch.float64)
    n_subsets = predictions.shape[0]
    finite = torch.isfinite(spearman(predictions, outputs, dim=0))
    kept = torch.nonzero(finite).flatten()
    t = int(kept.numel())
    if t == 0 or n_subsets < 2:
        return float("nan"), float("nan")
    levels_p, levels_o = _dense_levels(predictions[:, kept]), _dense_levels(outputs[:, kept])
    # One generator stream: all [B, M] subset indices, then all [B, t] test
    # indices. Drawn chunk by chunk from two generators, the second one moved
    # past the subset draws first (randint draws sequentially, so the numbers
    # are the same as one [B, M] and one [B, t] draw).
    subset_gen = torch.Generator().manual_seed(seed)
    test_gen = torch.Generator().manual_seed(seed)
    skip_rows = max(1, 2**24 // n_subsets)
    for start in range(0, n_resamples, skip_rows):
        torch.randint(0, n_subsets, (min(skip_rows, n_resamples - start), n_subsets), generator=test_gen)
    stats = torch.empty(n_resamples, dtype=torch.float64)
    step = max(1, chunk_elements // (n_subsets * t))
    for start in range(0, n_resamples, step):
        rows = min(step, n_resamples - start)
        drawn = torch.randint(0, n_subsets, (rows, n_subsets), generator=subset_gen)  # [b, M]
        test_idx = torch.randint(0, t, (rows, t), generator=test_gen)  # [b, t]
        weights = torch.zeros(rows, t, dtype=torch.float64).scatter_add_(1, test_idx, torch.ones(rows, t, dtype=torch.float64))
        counts = torch.zeros(drawn.shape, dtype=torch.float64).scatter_add_(1, drawn, torch.ones(drawn.shape, dtype=torch.float64))
        r = _multiset_spearman(levels_p, levels_o, counts)  # [b, t]
        ok = torch.isfinite(r)
        w = weights * ok
        total = w.sum(dim=1)
        stats[start:start + step] = torch.where(total > 0, (w * torch.where(ok, r, 0.0)).sum(dim=1) / total.clamp_min(1e-300), torch.nan)
    tail = (1.0 - level) / 2.0
    low, high = torch.nanquantile(stats, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(low), float(high)


def _dense_levels(x: Tensor) -> Tensor:
    """``[M, t]`` int64: each value's index among the distinct values of its column, in increasing order."""
    ordered, order = torch.sort(x, dim=0)
    new = torch.cat([torch.zeros(1, x.shape[1], dtype=torch.long), (ordered[1:] != ordered[:-1]).long()], dim=0).cumsum(0)
    return torch.empty_like(new).scatter_(0, order, new)


def _multiset_spearman(levels_x: Tensor, levels_y: Tensor, counts: Tensor) -> Tensor:
    """Spearman correlation per column of the multisets that repeat row ``j`` ``counts[b, j]`` times.

    Equal to :func:`spearman` of the rows drawn with repetition (average ranks
    for repeats and ties), without sorting each resample: the average rank of a
    level is the count of drawn values below it plus half the count at it, plus
    1/2, and the correlation is the Pearson correlation of ranks weighted by
    ``counts``. ``levels_*`` ``[M, t]`` from :func:`_dense_levels`, ``counts``
    ``[b, M]`` summing to M; returns ``[b, t]`` float64, NaN where a side is constant.
    """
    b, m = counts.shape
    t = levels_x.shape[1]
    weight = counts.unsqueeze(2).expand(b, m, t)

    def ranks(levels: Tensor) -> tuple[Tensor, Tensor]:
        """Centred average rank of each drawn row ``[b, M, t]`` and the weighted sum of squares ``[b, t]``."""
        index = levels.unsqueeze(0).expand(b, m, t)
        at_level = torch.zeros(b, m, t, dtype=torch.float64).scatter_add_(1, index, weight)
        # rank of a level = #below + (#at + 1)/2; centred on the mean rank (M + 1)/2: cumsum − (#at + M)/2
        centred = at_level.cumsum(1).add_(at_level, alpha=-0.5).sub_(m / 2.0)
        squares = (at_level * centred).mul_(centred).sum(1)
        return centred.gather(1, index), squares

    (rx, vx), (ry, vy) = ranks(levels_x), ranks(levels_y)
    cov = (rx.mul_(weight)).mul_(ry).sum(1)
    constant = (vx <= 1e-9) | (vy <= 1e-9)
    return torch.where(constant, torch.nan, cov / torch.sqrt(torch.where(constant, 1.0, vx * vy)))
