"""Top-k heuristics of a score matrix: label agreement and cardinality (pure functions, no retraining)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["topk_label_agreement", "topk_cardinality_shares"]


def topk_label_agreement(scores: Tensor, train_labels: Tensor, test_labels: Tensor, k: int) -> Tensor:
    """Fraction of each test point's ``k`` highest-scored training points whose label equals its own.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``.
    train_labels : Tensor
        ``[n_train]`` integer labels.
    test_labels : Tensor
        ``[n_test]`` integer labels.
    k : int
        Top set size (at most ``n_train``).

    Returns
    -------
    Tensor
        ``[n_test]`` float64 in [0, 1].
    """
    top = scores.topk(k, dim=1).indices
    return (train_labels[top] == test_labels[:, None]).double().mean(dim=1)


def topk_cardinality_shares(scores: Tensor, k: int) -> tuple[Tensor, float]:
    """Each test point's share of the union of all top-``k`` sets, and the cardinality ratio.

    The ratio is ``|∪_t topk(t)| / (n_test · k)``; test point ``t``'s share is
    ``(1/k) · Σ_{i ∈ topk(t)} 1/c_i`` with ``c_i`` the number of test points
    whose top ``k`` holds ``i``, so the shares average exactly to the ratio.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``.
    k : int
        Top set size (at most ``n_train``).

    Returns
    -------
    tuple
        ``[n_test]`` float64 shares and the ratio (float).
    """
    top = scores.topk(k, dim=1).indices
    ratio = float(torch.unique(top).numel()) / top.numel()
    counts = torch.zeros(scores.shape[1], dtype=torch.long).index_add_(0, top.flatten(), torch.ones(top.numel(), dtype=torch.long))
    return (1.0 / counts[top].double()).sum(dim=1) / k, ratio
