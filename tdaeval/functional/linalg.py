"""Inverse Hessian-vector solvers on batches of right-hand sides (pure functions of an operator)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["block_conjugate_gradient", "conjugate_gradient", "lissa", "lanczos_eigenpairs"]

Operator = Callable[[Tensor], Tensor]  # [k, P] -> [k, P]


def conjugate_gradient(
    apply: Operator,
    rhs: Tensor,
    damping: float = 0.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    initial: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Solve ``(A + damping I) x = b`` for every row ``b`` of ``rhs`` by conjugate gradients, row by row.

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
    initial : Tensor, optional
        ``[k, P]`` starting point (default zeros); costs one extra product.

    Returns
    -------
    tuple of Tensor
        ``x`` ``[k, P]`` and ``converged`` ``[k]`` bool. Rows whose curvature
        along the search direction is not positive stop where they are.
        Products are taken only for the rows still iterating.
    """
    if initial is None:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
    else:
        x = initial.to(rhs.dtype).clone()
        r = rhs - (apply(x).to(rhs.dtype) + damping * x)
    p = r.clone()
    rs = (r * r).sum(1)
    target = tol**2 * (rhs * rhs).sum(1)
    active = rs > target
    for _ in range(max_iter):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        p_rows = p[rows]
        ap = apply(p_rows).to(rhs.dtype) + damping * p_rows
        curvature = (p_rows * ap).sum(1)
        positive = curvature > 0
        active[rows[~positive]] = False
        rows, p_rows, ap, curvature = rows[positive], p_rows[positive], ap[positive], curvature[positive]
        if rows.numel() == 0:
            break
        alpha = rs[rows] / curvature
        x[rows] += alpha[:, None] * p_rows
        r_rows = r[rows] - alpha[:, None] * ap
        r[rows] = r_rows
        rs_new = (r_rows * r_rows).sum(1)
        p[rows] = r_rows + (rs_new / rs[rows])[:, None] * p_rows
        rs[rows] = rs_new
        active[rows] = rs_new > target[rows]
    return x, rs <= target


def _orthonormal_rows(block: Tensor, threshold: float) -> Tensor:
    """An orthonormal basis (rows) of the row space of ``block`` ``[b, P]``, dropping singular values <= ``threshold``.

    Through the ``[b, b]`` Gram matrix (``b² P`` operations, not an SVD of the
    long matrix), so ``threshold`` should be above ``sqrt(eps)`` times the largest
    singular value.
    """
    squared, left = torch.linalg.eigh(block @ block.T)
    keep = squared > threshold**2
    return (left[:, keep].T @ block) / squared[keep].sqrt()[:, None]


def block_conjugate_gradient(
    apply: Operator, rhs: Tensor, damping: float = 0.0, max_iter: int = 100, tol: float = 1e-6, max_basis_rows: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Solve ``(A + damping I) X = B`` for all rows of ``rhs`` at once in their shared Krylov space.

    Block conjugate gradients (O'Leary 1980) in its Galerkin form: the rows of
    ``B`` span the first block of ``K_j = span{B, AB, …, A^{j-1}B}``; each
    iteration applies ``A`` to the newest block (one product of ``k`` rows, as
    one iteration of row-wise CG), orthonormalises it against the basis twice
    (classical Gram–Schmidt, then an SVD that drops directions the basis
    already holds), and solves the projected system ``Q(A + λI)Qᵀ y = Qb``
    exactly. Every row sees the directions found for all others, so on
    spectra with outlying eigenvalues (a network's Hessian) it needs several
    times fewer products than row-wise CG for the same residual. Rows that
    have not converged when the basis stops growing (an invariant subspace,
    ``max_basis_rows``, or ``max_iter``) continue by row-wise CG from where
    the block solve left them, within the remaining iterations.

    Parameters
    ----------
    apply, rhs, damping
        As for :func:`conjugate_gradient`; ``apply`` takes blocks of any
        number of rows ``[m, P]``.
    max_iter : int
        Products (block or row-wise) in all.
    tol : float
        Stop when ``|b - (A + λI)x| <= tol * |b|`` for every row; the residual
        is exact (from the stored products), not a recursion.
    max_basis_rows : int, optional
        Cap on the basis size (memory: two float64 ``[rows, P]`` matrices).

    Returns
    -------
    tuple
        ``x`` ``[k, P]`` (dtype of ``rhs``), ``converged`` ``[k]`` bool, and the
        number of products taken. A projected matrix that is not positive
        definite (``A + λI`` indefinite) hands all rows to row-wise CG, which
        stops them on negative curvature.
    """
    calls = [0]

    def counted(vectors: Tensor) -> Tensor:
        calls[0] += 1
        return apply(vectors).double()

    work = rhs.double()
    k = work.shape[0]
    norms = work.norm(dim=1)
    target = tol * norms
    x = torch.zeros_like(work)
    converged = norms <= target
    basis: list[Tensor] = []
    products: list[Tensor] = []
    basis_rhs: list[Tensor] = []  # Q bᵀ, block by block
    projected = torch.zeros(0, 0, dtype=work.dtype, device=work.device)  # Q (A + λI) Qᵀ
    block = _orthonormal_rows(work, 1e-7 * float(norms.max())) if k else work
    while calls[0] < max_iter and block.shape[0] > 0 and not bool(converged.all()):
        if max_basis_rows is not None and sum(b.shape[0] for b in basis) + block.shape[0] > max_basis_rows:
            break
        product = counted(block) + damping * block
        basis.append(block)
        products.append(product)
        basis_rhs.append(block @ work.T)
        q = torch.cat(basis)
        new_column = q @ product.T  # [m, b]
        m, b = q.shape[0], block.shape[0]
        grown = torch.zeros(m, m, dtype=work.dtype, device=work.device)
        grown[: m - b, : m - b] = projected
        grown[:, m - b :] = new_column
        grown[m - b :, : m - b] = new_column[: m - b].T
        projected = grown
        values, vectors = torch.linalg.eigh((projected + projected.T) / 2)
        if float(values.min()) <= 0:
            break
        coefficients = vectors @ ((vectors.T @ torch.cat(basis_rhs)) / values[:, None])  # [m, k]
        x = coefficients.T @ q
        residual = work - coefficients.T @ torch.cat(products)
        converged = residual.norm(dim=1) <= target
        # Next block: the new directions in A·(newest block), orthogonal to the basis.
        scale = float(product.norm(dim=1).max())
        fresh = product - (product @ q.T) @ q
        fresh = fresh - (fresh @ q.T) @ q
        block = _orthonormal_rows(fresh, 1e-7 * scale)
    if not bool(converged.all()) and calls[0] + 1 < max_iter:
        rows = (~converged).nonzero().squeeze(1)
        refined, row_converged = conjugate_gradient(
            counted, work[rows], damping, max_iter - calls[0] - 1, tol, initial=x[rows]
        )
        x[rows], converged[rows] = refined, row_converged
    return x.to(rhs.dtype), converged, calls[0]


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
