"""Linear datamodeling score (Park et al. 2023), vectorised over test points."""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.functional.correlation import spearman

__all__ = ["subset_predictions", "lds"]


def subset_predictions(scores: Tensor, masks: Tensor, test_chunk: int = 128) -> Tensor:
    """Additive prediction ``g_j(z) = sum_{i in S_j} scores[z, i]`` for every subset.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]`` attribution scores.
    masks : Tensor
        ``[M, n_train]`` boolean inclusion masks.
    test_chunk : int
        Test points converted to float64 and multiplied at a time (keeps the
        float64 copy of the scores small and in cache).

    Returns
    -------
    Tensor
        ``[M, n_test]`` float64.
    """
    weights = masks.to(torch.float64)
    out = torch.empty(masks.shape[0], scores.shape[0], dtype=torch.float64, device=scores.device)
    for start in range(0, scores.shape[0], test_chunk):
        out[:, start : start + test_chunk] = weights @ scores[start : start + test_chunk].to(torch.float64).T
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
