"""Cross-seed stability of attribution scores (pure functions of a seed stack ``[S, n_test, n_train]``)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from tdaeval.functional.correlation import spearman

__all__ = ["rank_stability", "significant_fraction", "topk_jaccard"]


def _pairs(n_samples: int) -> list[tuple[int, int]]:
    if n_samples < 2:
        raise ValueError(f"Cross-seed stability needs at least 2 seeds. Got {n_samples}.")
    return list(itertools.combinations(range(n_samples), 2))


def rank_stability(samples: Tensor) -> Tensor:
    """``[n_test]``: mean over pairs of seeds of the Spearman correlation of their score rows.

    Parameters
    ----------
    samples : Tensor
        ``[S, n_test, n_train]`` scores of ``S`` seeds.
    """
    pairs = _pairs(samples.shape[0])
    return torch.stack([spearman(samples[s], samples[t]) for s, t in pairs]).mean(0)


def topk_jaccard(samples: Tensor, k: int) -> Tensor:
    """``[n_test]``: mean over pairs of seeds of the Jaccard index of their ``k`` highest-scored training points."""
    if not 1 <= k <= samples.shape[-1]:
        raise ValueError(f"k must be in [1, n_train={samples.shape[-1]}]. Got {k}.")
    top = samples.topk(k, dim=-1).indices  # [S, n_test, k]
    n_train = samples.shape[-1]
    member = torch.zeros(*top.shape[:2], n_train, dtype=torch.bool, device=samples.device)
    member.scatter_(-1, top, True)
    values = []
    for s, t in _pairs(samples.shape[0]):
        inter = (member[s] & member[t]).sum(-1).double()
        union = (member[s] | member[t]).sum(-1).double()
        values.append(inter / union)
    return torch.stack(values).mean(0)


def significant_fraction(p_values: Tensor, alpha: float) -> Tensor:
    """``[n_test]``: fraction of each test point's training points with ``p < alpha``.

    Parameters
    ----------
    p_values : Tensor
        ``[n_test, n_train]`` p-values of the train–test pairs.
    alpha : float
        Significance level.
    """
    return (p_values < alpha).double().mean(dim=1)
