"""Influence functions with several inverse-Hessian-vector solvers.

``score(z, z_i) = (1/n) g(z)ᵀ (H + λI)⁻¹ ∇L(z_i)`` where ``g`` is the gradient
of the measurement oriented as a loss (``-f`` when higher is better), ``H`` the
Hessian of the mean training loss and ``n`` the number of training points:
the first-order estimate of how much including ``z_i`` improves the test
measurement (the negated leave-one-out effect), in the measurement's units.
The inverse-HVP is solved once per batch of test points and then multiplied
with training gradients chunk by chunk, so only ``chunk_size x P`` training
gradients are in memory at a time.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from tdaeval.attributors._params import FlatParams, GaussNewtonOperator, HessianOperator
from tdaeval.attributors.ekfac import apply_ekfac_inverse, fit_ekfac
from tdaeval.attributors.base import Attributor, register
from tdaeval.attributors.gradient import test_measurement_grads, train_loss_grads
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError, ConvergenceWarning, check_int_at_least
from tdaeval.functional.linalg import block_conjugate_gradient, conjugate_gradient, lanczos_eigenpairs, lissa

__all__ = ["Influence"]

SOLVERS = ("explicit", "cg", "lissa", "arnoldi", "ekfac", "astra")


@register
class Influence(Attributor):
    """Influence functions (Koh & Liang 2017) with a choice of inverse-HVP solver.

    Parameters
    ----------
    solver : {"explicit", "cg", "lissa", "arnoldi", "ekfac", "astra"}
        ``explicit`` builds the dense Hessian (models up to ``max_explicit_params``);
        ``cg`` batched conjugate gradients; ``lissa`` stochastic Neumann series;
        ``arnoldi`` top eigenpairs by Lanczos iteration (Schioppa et al. 2022),
        inverting only in their span; ``ekfac`` replaces the Hessian by the
        eigenvalue-corrected Kronecker-factored Fisher of every ``nn.Linear``
        layer (Grosse et al. 2023), with targets sampled from the model when
        the task can sample them (``ekfac_sampled``); ``astra`` (Wang et al.
        2025) refines the EK-FAC solution by EK-FAC-preconditioned stochastic
        gradient descent with momentum on ``½xᵀ(G + λI)x − gᵀx``, ``G`` the
        Gauss–Newton matrix (positive semi-definite, as in the paper; it equals
        the Hessian for linear models), so it solves ``(G + λI)⁻¹ g``.
    damping : float, optional
        λ added to the curvature's diagonal. Default (None): for the Hessian
        solvers (``explicit``, ``cg``, ``lissa``, ``arnoldi``) 0.1, raised to
        twice the magnitude of the Hessian's most negative eigenvalue
        (estimated by 20 Lanczos steps at fit; Arnoldi's and LiSSA's own
        Lanczos runs are reused) when that is larger, so that ``H + λI`` is
        positive definite and CG converges: the quick-start digits MLP's
        Hessian goes down to about -0.04 (λ stays 0.1), a 400-image one to
        about -0.15 (λ ≈ 0.3; with 0.1 CG stopped on negative curvature for
        every test point). The λ used is ``damping_`` after fit. ``astra``
        uses 0.1 (its Gauss–Newton matrix is positive semi-definite);
        ``ekfac`` 0.1 × the mean corrected eigenvalue of each layer. A given
        value is used as is; a solve that then does not converge issues a
        :class:`~tdaeval.errors.ConvergenceWarning`, which results record
        under the attributor's ``warnings``.
    max_iter : int
        CG iterations (products of the Hessian with a block of test vectors).
    tol : float
        CG relative residual tolerance, ``|g - (H + λI)x| <= tol |g|`` per test point.
    cg_block : bool
        True (default): block CG, all test points of a batch in one shared
        Krylov space (:func:`~tdaeval.functional.linalg.block_conjugate_gradient`),
        several times fewer Hessian products for the same residual (6 against
        27 on the digits MLP at ``tol=1e-6``); the basis is capped at
        ``cg_basis_bytes`` (two float64 ``[rows, P]`` matrices), after which
        unconverged rows continue row by row. False: classic CG, each test
        point in its own Krylov space.
    lissa_depth, lissa_repeats, lissa_batch_size : int
        LiSSA recursion depth, independent repeats and Hessian sample size per
        step (drawn without replacement; all training points when it exceeds them).
    lissa_scale : float, optional
        LiSSA scale, > largest eigenvalue of ``H + λI`` (default: estimated by
        Lanczos and doubled).
    arnoldi_iter, arnoldi_rank : int
        Lanczos iterations and eigenpairs kept.
    astra_iter, astra_lr, astra_momentum, astra_batch_size, astra_halve_every : int, float, float, int, int
        ASTRA's iterations (200), step size (0.05: the sampling noise in the
        solution grows with it; at 0.5 it diverges on the digits MLP), heavy-ball momentum (0.9), training points per
        Hessian-vector product (256, a seeded sample each step; all points
        when it exceeds them) and the period of halving the step size (50).
        ASTRA uses the Hessian damping (0.1 by default) in both the quadratic
        and its EK-FAC preconditioner.
    ekfac_sampled : bool
        EK-FAC with sampled targets (Fisher) rather than observed ones (empirical Fisher).
    hessian_samples : int, optional
        Estimate ``H`` on a seeded sample of this many training points (default: all).
    chunk_size : int
        Examples per gradient / Hessian pass.
    max_explicit_params : int
        Refuse ``explicit`` above this parameter count.
    seed : int
        Seed of sampling in LiSSA, Arnoldi and ``hessian_samples``.
    device : str, optional
        Where to compute (default: the model's device).
    """

    name = "influence"
    #: Memory for block CG's basis and its products (bytes).
    cg_basis_bytes = 2**28
    #: Default damping of the Hessian solvers, before it is raised above the Hessian's most negative eigenvalue.
    default_damping = 0.1
    #: Lanczos steps of that eigenvalue estimate (``cg``, ``explicit``, and ``lissa`` with a given scale).
    damping_lanczos_iter = 20

    def __init__(
        self,
        solver: str = "cg",
        damping: float | None = None,
        max_iter: int = 100,
        tol: float = 1e-6,
        cg_block: bool = True,
        lissa_depth: int = 200,
        lissa_repeats: int = 1,
        lissa_batch_size: int = 128,
        lissa_scale: float | None = None,
        arnoldi_iter: int = 100,
        arnoldi_rank: int = 50,
        astra_iter: int = 200,
        astra_lr: float = 0.05,
        astra_momentum: float = 0.9,
        astra_batch_size: int = 256,
        astra_halve_every: int = 50,
        ekfac_sampled: bool = True,
        hessian_samples: int | None = None,
        chunk_size: int = 256,
        max_explicit_params: int = 10_000,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        if solver not in SOLVERS:
            raise ConfigError(f"The 'solver' parameter of Influence must be one of {SOLVERS}. Got {solver!r} instead.")
        if damping is not None and not damping >= 0:
            raise ConfigError(f"The 'damping' parameter of Influence must be None or >= 0. Got {damping!r} instead.")
        for pname, value in (
            ("max_iter", max_iter), ("lissa_depth", lissa_depth), ("lissa_repeats", lissa_repeats),
            ("lissa_batch_size", lissa_batch_size), ("arnoldi_iter", arnoldi_iter), ("arnoldi_rank", arnoldi_rank),
            ("chunk_size", chunk_size), ("astra_iter", astra_iter), ("astra_batch_size", astra_batch_size),
            ("astra_halve_every", astra_halve_every),
        ):
            check_int_at_least(pname, "Influence", value, 1)
        if not isinstance(cg_block, bool):
            raise ConfigError(f"The 'cg_block' parameter of Influence must be True or False. Got {cg_block!r} instead.")
        self.solver = solver
        self.cg_block = cg_block
        self.damping = None if damping is None else float(damping)
        # The Hessian solvers need a number; ekfac keeps None for its per-layer heuristic.
        self._hessian_damping = self.default_damping if damping is None else float(damping)
        self.max_iter, self.tol = max_iter, tol
        self.lissa_depth, self.lissa_repeats, self.lissa_batch_size = lissa_depth, lissa_repeats, lissa_batch_size
        self.lissa_scale = lissa_scale
        self.arnoldi_iter, self.arnoldi_rank = arnoldi_iter, arnoldi_rank
        if not astra_lr > 0:
            raise ConfigError(f"The 'astra_lr' parameter of Influence must be > 0. Got {astra_lr!r} instead.")
        if not 0 <= astra_momentum < 1:
            raise ConfigError(f"The 'astra_momentum' parameter of Influence must be in [0, 1). Got {astra_momentum!r} instead.")
        self.astra_iter, self.astra_lr, self.astra_momentum = astra_iter, float(astra_lr), float(astra_momentum)
        self.astra_batch_size, self.astra_halve_every = astra_batch_size, astra_halve_every
        self.ekfac_sampled = ekfac_sampled
        self.hessian_samples = hessian_samples
        self.chunk_size = chunk_size
        self.max_explicit_params = max_explicit_params
        self.seed = seed
        self.device = device

    def _fit(self) -> None:
        self.model_.eval()
        self.flat_ = FlatParams(self.model_, self.device)
        data = self.train_
        if self.hessian_samples is not None and self.hessian_samples < len(data):
            pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))[: self.hessian_samples]
            data = data.subset(pick)
        self.hessian_ = HessianOperator(self.task_, self.flat_, data, chunk_size=self.chunk_size)
        self.damping_ = self.damping if self.solver == "ekfac" else self._hessian_damping
        if self.solver == "astra":
            self.gauss_newton_ = GaussNewtonOperator(self.task_, self.flat_, data, chunk_size=self.chunk_size)
        elif self.damping is None and (self.solver in ("explicit", "cg") or self.solver == "lissa" and self.lissa_scale is not None):
            values, _ = lanczos_eigenpairs(
                self.hessian_, self.flat_.n_params, self.damping_lanczos_iter, seed=self.seed, device=self.flat_.vector.device
            )
            self._raise_damping(values)
        if self.solver in ("ekfac", "astra"):
            self.ekfac_ = fit_ekfac(self.task_, self.model_, data, sampled=self.ekfac_sampled, seed=self.seed, chunk_size=self.chunk_size)
        elif self.solver == "explicit":
            if self.flat_.n_params > self.max_explicit_params:
                raise ConfigError(
                    f"Influence(solver='explicit') builds a {self.flat_.n_params} x {self.flat_.n_params} Hessian; "
                    f"the model has more than max_explicit_params={self.max_explicit_params} parameters. "
                    "Use solver='cg', 'lissa' or 'arnoldi'."
                )
            hessian = self.hessian_.dense().double()
            eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
            self.inverse_ = torch.linalg.inv(hessian + self.damping_ * eye)
        elif self.solver == "arnoldi":
            values, vectors = lanczos_eigenpairs(
                self.hessian_, self.flat_.n_params, self.arnoldi_iter, seed=self.seed, device=self.flat_.vector.device
            )
            if self.damping is None:
                self._raise_damping(values)
            self.eigenvalues_ = values[: self.arnoldi_rank]
            self.eigenvectors_ = vectors[: self.arnoldi_rank]
        elif self.solver == "lissa" and self.lissa_scale is None:
            values, _ = lanczos_eigenpairs(self.hessian_, self.flat_.n_params, 20, seed=self.seed, device=self.flat_.vector.device)
            if self.damping is None:
                self._raise_damping(values)
            self.scale_ = 2.0 * float(values.abs().max() + self.damping_)
        else:
            self.scale_ = self.lissa_scale

    def _raise_damping(self, eigenvalues: Tensor) -> None:
        """Default damping: at least twice the magnitude of the most negative Ritz value ``eigenvalues`` ``[m]``.

        A Ritz value is never below the true smallest eigenvalue, hence the
        margin of two; then ``H + λI`` is positive definite.
        """
        lowest = float(eigenvalues.min()) if eigenvalues.numel() else 0.0
        self.damping_ = max(self._hessian_damping, -2.0 * lowest)

    def inverse_hvp(self, vectors: Tensor) -> Tensor:
        """``(H + λI)⁻¹ v`` for each row of ``vectors`` ``[k, P]``."""
        if self.solver == "explicit":
            return (vectors.double() @ self.inverse_).to(vectors.dtype)
        if self.solver == "ekfac":
            return apply_ekfac_inverse(self.ekfac_, vectors, self.damping)
        if self.solver == "astra":
            return self._astra(vectors)
        if self.solver == "cg":
            if self.cg_block:
                max_rows = max(1, self.cg_basis_bytes // (16 * self.flat_.n_params))
                solution, self.converged_, self.cg_products_ = block_conjugate_gradient(
                    self.hessian_, vectors, self.damping_, self.max_iter, self.tol, max_basis_rows=max_rows
                )
            else:
                solution, self.converged_ = conjugate_gradient(
                    self.hessian_, vectors, self.damping_, self.max_iter, self.tol
                )
            if not bool(self.converged_.all()):
                warnings.warn(
                    f"Influence(solver='cg'): {int((~self.converged_).sum())} of {len(self.converged_)} test points did "
                    f"not converge in max_iter={self.max_iter} iterations (negative curvature or too few iterations); "
                    f"raise 'damping' (now {self.damping_:.4g}) or 'max_iter'.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            return solution
        if self.solver == "arnoldi":
            u = self.eigenvectors_.to(vectors.dtype)
            coefficients = (vectors @ u.T) / (self.eigenvalues_.to(vectors.dtype) + self.damping_)
            return coefficients @ u
        generator = torch.Generator().manual_seed(self.seed)
        n = len(self.hessian_.data)
        samples = [
            torch.randperm(n, generator=generator)[: self.lissa_batch_size]
            for _ in range(self.lissa_depth * self.lissa_repeats)
        ]

        def sampled_hvp(x: Tensor, step: int) -> Tensor:
            operator = HessianOperator(self.task_, self.flat_, self.hessian_.data.subset(samples[step]), self.chunk_size)
            return operator(x)

        return lissa(sampled_hvp, vectors, self.damping_, self.scale_, self.lissa_depth, self.lissa_repeats)

    def _astra(self, vectors: Tensor) -> Tensor:
        """EK-FAC-preconditioned heavy-ball SGD on ``½xᵀ(G + λI)x − vᵀx`` (G: Gauss–Newton), started at the EK-FAC solution."""
        damping = self._hessian_damping

        def precondition(x: Tensor) -> Tensor:
            return apply_ekfac_inverse(self.ekfac_, x, damping)

        data = self.hessian_.data
        generator = torch.Generator().manual_seed(self.seed)
        solution = precondition(vectors)
        velocity = torch.zeros_like(solution)
        lr = self.astra_lr
        for step in range(self.astra_iter):
            if step and step % self.astra_halve_every == 0:
                lr /= 2
            if self.astra_batch_size < len(data):
                pick = torch.randperm(len(data), generator=generator)[: self.astra_batch_size]
                operator = GaussNewtonOperator(self.task_, self.flat_, data.subset(pick), self.chunk_size)
            else:
                operator = self.gauss_newton_
            gradient = operator(solution) + damping * solution - vectors
            velocity = self.astra_momentum * velocity + precondition(gradient)
            solution = solution - lr * velocity
        return solution

    def _attribute(self, test: Data) -> Tensor:
        test_grads = test_measurement_grads(self.task_, self.model_, test, chunk_size=self.chunk_size, device=self.device)
        preconditioned = self.inverse_hvp(test_grads.to(self.flat_.vector.dtype)).float() / len(self.train_)
        columns = []
        for start in range(0, len(self.train_), self.chunk_size):
            chunk = self.train_.subset(torch.arange(start, min(start + self.chunk_size, len(self.train_))))
            train_grads = train_loss_grads(self.task_, self.model_, chunk, chunk_size=self.chunk_size, device=self.device)
            columns.append(preconditioned @ train_grads.T)
        return torch.cat(columns, dim=1)
