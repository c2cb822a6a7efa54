"""Vectorised rank and correlation functions (scipy semantics, any dim)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["correlate", "cosine", "rankdata", "pearson", "spearman"]


def rankdata(x: Tensor, dim: int = -1) -> Tensor:
    """Average ranks along ``dim``, starting at 1, like ``scipy.stats.rankdata``.

    Parameters
    ----------
    x : Tensor
        Any shape, real valued.
    dim : int
        Dimension to rank along.

    Returns
    -------
    Tensor
        Same shape as ``x``, float64; tied values share their average rank.
    """
    moved = x.movedim(dim, -1).to(torch.float64).contiguous()
    ordered, _ = torch.sort(moved, dim=-1)
    left = torch.searchsorted(ordered, moved, right=False)
    right = torch.searchsorted(ordered, moved, right=True)
    ranks = (left + right + 1).to(torch.float64) / 2.0
    return ranks.movedim(-1, dim)


def pearson(x: Tensor, y: Tensor, dim: int = -1) -> Tensor:
    """Pearson correlation along ``dim``; NaN where either side is constant.

    Parameters
    ----------
    x, y : Tensor
        Broadcastable tensors of the same size along ``dim``.
    dim : int
        Dimension holding the paired observations.

    Returns
    -------
    Tensor
        ``x`` and ``y`` broadcast with ``dim`` removed, float64.
    """
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    xc = x - x.mean(dim=dim, keepdim=True)
    yc = y - y.mean(dim=dim, keepdim=True)
    cov = (xc * yc).sum(dim=dim)
    sx = xc.pow(2).sum(dim=dim).sqrt()
    sy = yc.pow(2).sum(dim=dim).sqrt()
    denom = sx * sy
    scale = torch.maximum(x.abs().amax(dim=dim), y.abs().amax(dim=dim)).clamp_min(1e-300)
    # A column is constant when its spread is at rounding level of its magnitude.
    constant = (sx <= 1e-12 * scale * x.shape[dim] ** 0.5) | (sy <= 1e-12 * scale * y.shape[dim] ** 0.5)
    r = cov / torch.where(constant, torch.ones_like(denom), denom)
    r = r.clamp(-1.0, 1.0)
    return torch.where(constant, torch.full_like(r, float("nan")), r)


def spearman(x: Tensor, y: Tensor, dim: int = -1) -> Tensor:
    """Spearman rank correlation along ``dim`` (average ranks for ties, like scipy).

    Returns NaN where either input is constant along ``dim``.

    Parameters
    ----------
    x, y : Tensor
        Tensors of the same shape.
    dim : int
        Dimension holding the paired observations.

    Returns
    -------
    Tensor
        Shape of ``x`` with ``dim`` removed, float64.
    """
    if x.shape != y.shape:
        raise ValueError(f"spearman expects x and y of the same shape. Got {tuple(x.shape)} and {tuple(y.shape)}.")
    rx = rankdata(x, dim=dim)
    ry = rankdata(y, dim=dim)
    # Ranks of a constant vector are all equal, so pearson returns NaN for it.
    return pearson(rx, ry, dim=dim)


def cosine(x: Tensor, y: Tensor, dim: int = -1) -> Tensor:
    """Cosine similarity along ``dim``, float64; NaN where either side is all zeros."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    nx, ny = x.norm(dim=dim), y.norm(dim=dim)
    zero = (nx == 0) | (ny == 0)
    value = (x * y).sum(dim=dim) / torch.where(zero, torch.ones_like(nx), nx * ny)
    return torch.where(zero, torch.full_like(value, float("nan")), value.clamp(-1.0, 1.0))


def correlate(x: Tensor, y: Tensor, kind: str, dim: int = -1) -> Tensor:
    """The ``kind`` correlation (``"spearman"``, ``"pearson"`` or ``"cosine"``) of ``x`` and ``y`` along ``dim``, float64.

    ``x`` and ``y`` broadcast (e.g. ``[n_test, k]`` with ``[E, n_test, k]`` gives ``[E, n_test]``).
    """
    functions = {"spearman": spearman, "pearson": pearson, "cosine": cosine}
    if kind not in functions:
        raise ValueError(f"Unknown correlation {kind!r}. Expected one of {sorted(functions)}.")
    x, y = torch.broadcast_tensors(x, y)
    return functions[kind](x, y, dim=dim)
