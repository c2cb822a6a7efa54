"""Linear datamodeling score (Park et al. 2023), vectorised over test points."""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.functional.correlation import spearman

__all__ = ["subset_predictions", "lds"]


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
