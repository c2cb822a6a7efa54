"""Inverse Hessian-vector solvers on batches of right-hand sides (pure functions of an operator)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["conjugate_gradient", "lissa", "lanczos_eigenpairs"]

Operator = Callable[[Tensor], Tensor]  # [k, P] -> [k, P]


def conjugate_gradient(
    apply: Operator, rhs: Tensor, damping: float = 0.0, max_iter: int = 100, tol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Solve ``(A + damping I) x = b`` for every row ``b`` of ``rhs`` by conjugate gradients.

    Parameters
    ----------
    apply : callable
        ``[k, P] -> [k, P]``, row-wise products with a symmetric ``A``.
    rhs : Tensor
        ``[k, P]`` right-hand sides.
    damping : float
        Added to the diagonal.
    max_iter : int
        Iteration limit.
    tol : float
        Stop a row when ``|r| <= tol * |b|``.

    Returns
    -------
    tuple of Tensor
        ``x`` ``[k, P]`` and ``converged`` ``[k]`` bool. Rows whose curvature
        along the search direction is not positive stop where they are.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum(1)
    target = tol**2 * (rhs * rhs).sum(1)
    active = rs > target
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        ap = apply(p) + damping * p
        curvature = (p * ap).sum(1)
        active = active & (curvature > 0)
        alpha = torch.where(active, rs / torch.where(active, curvature, torch.ones_like(curvature)), torch.zeros_like(rs))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        rs_new = (r * r).sum(1)
        beta = torch.where(active, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + beta[:, None] * p
        rs = rs_new
        active = active & (rs > target)
    return x, rs <= target


def lissa(
    apply: Callable[[Tensor, int], Tensor],
    rhs: Tensor,
    damping: float,
    scale: float,
    depth: int,
    repeats: int = 1,
) -> Tensor:
    """LiSSA: ``x_{j+1} = b + x_j - (A_j x_j + damping x_j) / scale``, then ``x / scale``.

    Converges to ``(A + damping I)^{-1} b`` when ``scale`` exceeds the largest
    eigenvalue of ``A + damping I``; ``A_j`` is a stochastic estimate of ``A``
    (``apply(x, j)`` uses sample ``j``).

    Returns
    -------
    Tensor
        ``[k, P]``, averaged over ``repeats`` runs.
    """
    total = torch.zeros_like(rhs)
    step = 0
    for _ in range(repeats):
        x = rhs.clone()
        for _ in range(depth):
            x = rhs + x - (apply(x, step) + damping * x) / scale
            step += 1
        total = total + x / scale
    return total / repeats


def lanczos_eigenpairs(apply: Operator, dim: int, n_iter: int, seed: int = 0, dtype=torch.float64, device=None) -> tuple[Tensor, Tensor]:
    """Ritz pairs of a symmetric operator from ``n_iter`` Lanczos steps with full reorthogonalisation.

    Returns
    -------
    tuple of Tensor
        eigenvalues ``[m]`` (descending by magnitude) and eigenvectors ``[m, dim]`` (rows).
    """
    n_iter = min(n_iter, dim)
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    q = q / q.norm()
    basis = [q]
    alphas, betas = [], []
    for j in range(n_iter):
        w = apply(basis[-1].unsqueeze(0)).squeeze(0).to(dtype)
        alpha = torch.dot(w, basis[-1])
        alphas.append(alpha)
        stacked = torch.stack(basis)
        w = w - stacked.T @ (stacked @ w)
        w = w - stacked.T @ (stacked @ w)
        beta = w.norm()
        if j == n_iter - 1 or beta < 1e-10:
            break
        betas.append(beta)
        basis.append(w / beta)
    m = len(alphas)
    tri = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[: m - 1])
        tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tri)
    ritz = vectors.T @ torch.stack(basis[:m])  # [m, dim]
    order = torch.argsort(values.abs(), descending=True)
    return values[order], ritz[order]
