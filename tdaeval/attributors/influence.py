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
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from tdaeval.attributors._params import FlatParams, GaussNewtonOperator, HessianOperator
from tdaeval.attributors._tracked import PARAMS_CONSTRAINT, params_record, resolve_tracked
from tdaeval.attributors.base import DEVICE_CONSTRAINT, Attributor, register
from tdaeval.attributors.ekfac import apply_ekfac_inverse, fit_ekfac
from tdaeval.attributors.gradient import test_measurement_grads, train_loss_grads
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError, ConvergenceWarning
from tdaeval.functional.linalg import block_conjugate_gradient, conjugate_gradient, lanczos_eigenpairs, lissa
from tdaeval.params import Boolean, Instance, Interval, Options, ValidatedDataclass

__all__ = [
    "Influence",
    "CGSettings",
    "LiSSASettings",
    "ArnoldiSettings",
    "ASTRASettings",
    "EKFACSettings",
    "ExplicitSettings",
    "SETTINGS",
    "FLAT_SETTINGS",
]

SOLVERS = ("explicit", "cg", "lissa", "arnoldi", "ekfac", "astra")


@dataclass(frozen=True)
class CGSettings(ValidatedDataclass):
    """Conjugate gradients (``solver="cg"``).

    Attributes
    ----------
    max_iter : int
        Iterations (products of the Hessian with a block of test vectors); flat name ``max_iter``.
    tol : float
        Relative residual tolerance, ``|g - (H + λI)x| <= tol |g|`` per test point; flat name ``tol``.
    block : bool
        True: block CG, all test points of a batch in one shared Krylov space
        (:func:`~tdaeval.functional.linalg.block_conjugate_gradient`); False:
        classic CG, each test point on its own. Flat name ``cg_block``.
    """

    max_iter: int = 100
    tol: float = 1e-6
    block: bool = True

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "max_iter": [Interval(int, 1, None)],
        "tol": [Interval(float, 0, None)],
        "block": [Boolean()],
    }


@dataclass(frozen=True)
class LiSSASettings(ValidatedDataclass):
    """The stochastic Neumann series (``solver="lissa"``).

    Attributes
    ----------
    depth : int
        Recursion depth; flat name ``lissa_depth``.
    repeats : int
        Independent repeats averaged; flat name ``lissa_repeats``.
    batch_size : int
        Hessian sample size per step (drawn without replacement; all training
        points when it exceeds them); flat name ``lissa_batch_size``.
    scale : float, optional
        Scale, > the largest eigenvalue of ``H + λI`` (default: estimated by
        Lanczos and doubled); flat name ``lissa_scale``.
    """

    depth: int = 200
    repeats: int = 1
    batch_size: int = 128
    scale: float | None = None

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "depth": [Interval(int, 1, None)],
        "repeats": [Interval(int, 1, None)],
        "batch_size": [Interval(int, 1, None)],
        "scale": [None, Interval(float, 0, None, closed="neither")],
    }


@dataclass(frozen=True)
class ArnoldiSettings(ValidatedDataclass):
    """Top eigenpairs by Lanczos iteration (``solver="arnoldi"``).

    Attributes
    ----------
    n_iter : int
        Lanczos iterations; flat name ``arnoldi_iter``.
    rank : int
        Eigenpairs kept; flat name ``arnoldi_rank``.
    """

    n_iter: int = 100
    rank: int = 50

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "n_iter": [Interval(int, 1, None)],
        "rank": [Interval(int, 1, None)],
    }


@dataclass(frozen=True)
class ASTRASettings(ValidatedDataclass):
    """EK-FAC-preconditioned heavy-ball SGD (``solver="astra"``).

    Attributes
    ----------
    n_iter : int
        Iterations (200); flat name ``astra_iter``.
    lr : float
        Step size (0.05: the sampling noise in the solution grows with it; at
        0.5 it diverges on the digits MLP); flat name ``astra_lr``.
    momentum : float
        Heavy-ball momentum in [0, 1) (0.9); flat name ``astra_momentum``.
    batch_size : int
        Training points per Gauss–Newton-vector product (256, a seeded sample
        each step; all points when it exceeds them); flat name ``astra_batch_size``.
    halve_every : int
        Iterations between halvings of the step size (50); flat name ``astra_halve_every``.
    """

    n_iter: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 256
    halve_every: int = 50

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "n_iter": [Interval(int, 1, None)],
        "lr": [Interval(float, 0, None, closed="neither")],
        "momentum": [Interval(float, 0, 1, closed="left")],
        "batch_size": [Interval(int, 1, None)],
        "halve_every": [Interval(int, 1, None)],
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "momentum", float(self.momentum))


@dataclass(frozen=True)
class EKFACSettings(ValidatedDataclass):
    """The EK-FAC curvature (``solver="ekfac"``, and ASTRA's preconditioner).

    Attributes
    ----------
    sampled : bool
        Targets sampled from the model (Fisher) rather than observed ones
        (empirical Fisher); flat name ``ekfac_sampled``.
    """

    sampled: bool = True

    _parameter_constraints: ClassVar[dict[str, Any]] = {"sampled": [Boolean()]}


@dataclass(frozen=True)
class ExplicitSettings(ValidatedDataclass):
    """The dense Hessian (``solver="explicit"``).

    Attributes
    ----------
    max_params : int
        Refuse models with more parameters; flat name ``max_explicit_params``.
    """

    max_params: int = 10_000

    _parameter_constraints: ClassVar[dict[str, Any]] = {"max_params": [Interval(int, 1, None)]}


#: Settings group (constructor parameter) → its dataclass.
SETTINGS: dict[str, type[ValidatedDataclass]] = {
    "cg": CGSettings,
    "lissa": LiSSASettings,
    "arnoldi": ArnoldiSettings,
    "astra": ASTRASettings,
    "ekfac": EKFACSettings,
    "explicit": ExplicitSettings,
}
#: Flat keyword argument (the constructor's parameters before the groups) → ``(group, field)``.
FLAT_SETTINGS: dict[str, tuple[str, str]] = {
    "max_iter": ("cg", "max_iter"),
    "tol": ("cg", "tol"),
    "cg_block": ("cg", "block"),
    "lissa_depth": ("lissa", "depth"),
    "lissa_repeats": ("lissa", "repeats"),
    "lissa_batch_size": ("lissa", "batch_size"),
    "lissa_scale": ("lissa", "scale"),
    "arnoldi_iter": ("arnoldi", "n_iter"),
    "arnoldi_rank": ("arnoldi", "rank"),
    "astra_iter": ("astra", "n_iter"),
    "astra_lr": ("astra", "lr"),
    "astra_momentum": ("astra", "momentum"),
    "astra_batch_size": ("astra", "batch_size"),
    "astra_halve_every": ("astra", "halve_every"),
    "ekfac_sampled": ("ekfac", "sampled"),
    "max_explicit_params": ("explicit", "max_params"),
}


def _settings(group: str, given: Any, flat: dict[str, Any]) -> ValidatedDataclass:
    """The settings of ``group``: ``given`` (a dataclass or a dict of its fields), else built from the flat keywords."""
    cls = SETTINGS[group]
    from_flat = {field: flat[name] for name, (g, field) in FLAT_SETTINGS.items() if g == group and name in flat}
    if given is not None and from_flat:
        names = sorted(name for name, (g, _) in FLAT_SETTINGS.items() if g == group and name in flat)
        raise ConfigError(
            f"Influence takes the {group!r} settings either as {group}={cls.__name__}(...) or as flat parameters "
            f"({', '.join(names)}), not both."
        )
    if isinstance(given, cls):
        return given
    if isinstance(given, dict):
        unknown = sorted(set(map(str, given)) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                f"The {group!r} parameter of Influence has unknown settings {unknown}; "
                f"{cls.__name__} takes {[f.name for f in fields(cls)]}."
            )
        return cls(**given)
    return cls(**from_flat)


@register
class Influence(Attributor):
    """Influence functions (Koh & Liang 2017) with a choice of inverse-HVP solver.

    Each solver's settings are a small frozen dataclass (:class:`CGSettings`,
    :class:`LiSSASettings`, :class:`ArnoldiSettings`, :class:`ASTRASettings`,
    :class:`EKFACSettings`, :class:`ExplicitSettings`), passed as
    ``Influence(solver="cg", cg=CGSettings(max_iter=50))`` or as a dict
    (``cg={"max_iter": 50}``, as suites write it); the flat keyword arguments
    of earlier versions (``max_iter=50``, ``lissa_depth=…``, ``astra_lr=…``;
    :data:`FLAT_SETTINGS`) still work and are what :meth:`get_params` reports.

    Parameters
    ----------
    solver : {"explicit", "cg", "lissa", "arnoldi", "ekfac", "astra"}
        ``explicit`` builds the dense Hessian (models up to ``explicit.max_params``);
        ``cg`` batched conjugate gradients; ``lissa`` stochastic Neumann series;
        ``arnoldi`` top eigenpairs by Lanczos iteration (Schioppa et al. 2022),
        inverting only in their span; ``ekfac`` replaces the Hessian by the
        eigenvalue-corrected Kronecker-factored Fisher of every ``nn.Linear``
        layer (Grosse et al. 2023), with targets sampled from the model when
        the task can sample them (``ekfac.sampled``); ``astra`` (Wang et al.
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
    cg : CGSettings or dict, optional
        Iterations, tolerance and block CG (default ``CGSettings()``: 100,
        1e-6, block). Block CG shares one Krylov space among the test points
        of a batch: several times fewer Hessian products for the same
        residual (6 against 27 on the digits MLP at ``tol=1e-6``); the basis is
        capped at ``cg_basis_bytes`` (two float64 ``[rows, P]`` matrices),
        after which unconverged rows continue row by row.
    lissa : LiSSASettings or dict, optional
        Depth, repeats, Hessian sample size and scale.
    arnoldi : ArnoldiSettings or dict, optional
        Lanczos iterations and eigenpairs kept.
    astra : ASTRASettings or dict, optional
        ASTRA's iterations, step size, momentum, sample size and halving
        period. ASTRA uses the Hessian damping (0.1 by default) in both the
        quadratic and its EK-FAC preconditioner.
    ekfac : EKFACSettings or dict, optional
        Sampled (Fisher) or observed (empirical Fisher) targets.
    explicit : ExplicitSettings or dict, optional
        The largest model the dense Hessian is built for.
    hessian_samples : int, optional
        Estimate ``H`` on a seeded sample of this many training points (default: all).
    chunk_size : int
        Examples per gradient / Hessian pass.
    seed : int
        Seed of sampling in LiSSA, Arnoldi and ``hessian_samples``.
    device : str, optional
        Where to compute (default: the model's device).
    params : {"all", "linear"} or list of str
        Tracked parameters (:mod:`tdaeval.attributors._tracked`): every
        parameter (default), the weights and biases of the ``nn.Linear`` /
        ``nn.Conv2d`` layers, or parameter names and module-name prefixes.
        Gradients, the Hessian / Gauss–Newton products and the EK-FAC factors
        are over the tracked ones, the others frozen: ``ekfac`` and ``astra``
        on a model with embeddings or LayerNorm need ``params="linear"``.
    **settings
        The flat settings (:data:`FLAT_SETTINGS`): ``max_iter``, ``tol``,
        ``cg_block``, ``lissa_depth``, ``lissa_repeats``, ``lissa_batch_size``,
        ``lissa_scale``, ``arnoldi_iter``, ``arnoldi_rank``, ``astra_iter``,
        ``astra_lr``, ``astra_momentum``, ``astra_batch_size``,
        ``astra_halve_every``, ``ekfac_sampled``, ``max_explicit_params``;
        each fills its group's field, and a group is given either way, not both.
    """

    name = "influence"
    #: Memory for block CG's basis and its products (bytes).
    cg_basis_bytes = 2**28
    #: Default damping of the Hessian solvers, before it is raised above the Hessian's most negative eigenvalue.
    default_damping = 0.1
    #: Lanczos steps of that eigenvalue estimate (``cg``, ``explicit``, and ``lissa`` with a given scale).
    damping_lanczos_iter = 20
    _parameter_constraints = {
        "solver": [Options(SOLVERS)],
        "damping": [None, Interval(float, 0, None)],
        **{group: [None, Instance(cls), Instance(dict)] for group, cls in SETTINGS.items()},
        **{flat: SETTINGS[group]._parameter_constraints[field] for flat, (group, field) in FLAT_SETTINGS.items()},
        "hessian_samples": [None, Interval(int, 1, None)],
        "chunk_size": [Interval(int, 1, None)],
        "seed": [Interval(int, 0, None)],
        "device": DEVICE_CONSTRAINT,
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self,
        solver: str = "cg",
        damping: float | None = None,
        *,
        cg: CGSettings | dict[str, Any] | None = None,
        lissa: LiSSASettings | dict[str, Any] | None = None,
        arnoldi: ArnoldiSettings | dict[str, Any] | None = None,
        astra: ASTRASettings | dict[str, Any] | None = None,
        ekfac: EKFACSettings | dict[str, Any] | None = None,
        explicit: ExplicitSettings | dict[str, Any] | None = None,
        hessian_samples: int | None = None,
        chunk_size: int = 256,
        seed: int = 0,
        device: str | None = None,
        params: str | list[str] = "all",
        **settings: Any,
    ) -> None:
        unknown = sorted(set(settings) - set(FLAT_SETTINGS))
        if unknown:
            raise TypeError(f"Influence.__init__() got unexpected keyword argument(s) {unknown}")
        self.solver = solver
        self.damping = None if damping is None else float(damping)
        # The Hessian solvers need a number; ekfac keeps None for its per-layer heuristic.
        self._hessian_damping = self.default_damping if damping is None else float(damping)
        groups = {"cg": cg, "lissa": lissa, "arnoldi": arnoldi, "astra": astra, "ekfac": ekfac, "explicit": explicit}
        for group, given in groups.items():
            setattr(self, group, _settings(group, given, settings))
        self.hessian_samples = hessian_samples
        self.chunk_size = chunk_size
        self.seed = seed
        self.device = device
        self.params = params

    def get_params(self) -> dict[str, Any]:
        """The parameters with every setting under its flat name (``max_iter``, ``lissa_depth``, …), for provenance."""
        params: dict[str, Any] = {"solver": self.solver, "damping": self.damping}
        for flat, (group, field) in FLAT_SETTINGS.items():
            if flat != "max_explicit_params":
                params[flat] = getattr(getattr(self, group), field)
        params["hessian_samples"] = self.hessian_samples
        params["chunk_size"] = self.chunk_size
        params["max_explicit_params"] = self.explicit.max_params
        params["seed"] = self.seed
        params["device"] = self.device if isinstance(self.device, (str, type(None))) else repr(self.device)
        params["params"] = params_record(self.params)
        return params

    def _fit(self) -> None:
        self.model_.eval()
        self.tracked_ = resolve_tracked(self.model_, self.params, f"Attributor {self.display_name!r}")
        self.flat_ = FlatParams(self.model_, self.device, names=self.tracked_)
        data = self.train_
        if self.hessian_samples is not None and self.hessian_samples < len(data):
            pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))[: self.hessian_samples]
            data = data.subset(pick)
        self.hessian_ = HessianOperator(self.task_, self.flat_, data, chunk_size=self.chunk_size)
        self.damping_ = self.damping if self.solver == "ekfac" else self._hessian_damping
        if self.solver == "astra":
            self.gauss_newton_ = GaussNewtonOperator(self.task_, self.flat_, data, chunk_size=self.chunk_size)
        elif self.damping is None and (self.solver in ("explicit", "cg") or self.solver == "lissa" and self.lissa.scale is not None):
            values, _ = lanczos_eigenpairs(
                self.hessian_, self.flat_.n_params, self.damping_lanczos_iter, seed=self.seed, device=self.flat_.vector.device
            )
            self._raise_damping(values)
        if self.solver in ("ekfac", "astra"):
            self.ekfac_ = fit_ekfac(
                self.task_, self.model_, data, sampled=self.ekfac.sampled, seed=self.seed, chunk_size=self.chunk_size,
                tracked=self.tracked_, owner=f"Attributor {self.display_name!r} with solver={self.solver!r}",
            )
        elif self.solver == "explicit":
            if self.flat_.n_params > self.explicit.max_params:
                raise ConfigError(
                    f"Influence(solver='explicit') builds a {self.flat_.n_params} x {self.flat_.n_params} Hessian; "
                    f"the model has more than max_explicit_params={self.explicit.max_params} (tracked) parameters. "
                    "Use solver='cg', 'lissa' or 'arnoldi', or track fewer parameters ('params')."
                )
            hessian = self.hessian_.dense().double()
            eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
            self.inverse_ = torch.linalg.inv(hessian + self.damping_ * eye)
        elif self.solver == "arnoldi":
            values, vectors = lanczos_eigenpairs(
                self.hessian_, self.flat_.n_params, self.arnoldi.n_iter, seed=self.seed, device=self.flat_.vector.device
            )
            if self.damping is None:
                self._raise_damping(values)
            self.eigenvalues_ = values[: self.arnoldi.rank]
            self.eigenvectors_ = vectors[: self.arnoldi.rank]
        elif self.solver == "lissa" and self.lissa.scale is None:
            values, _ = lanczos_eigenpairs(self.hessian_, self.flat_.n_params, 20, seed=self.seed, device=self.flat_.vector.device)
            if self.damping is None:
                self._raise_damping(values)
            self.scale_ = 2.0 * float(values.abs().max() + self.damping_)
        else:
            self.scale_ = self.lissa.scale

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
            if self.cg.block:
                max_rows = max(1, self.cg_basis_bytes // (16 * self.flat_.n_params))
                solution, self.converged_, self.cg_products_ = block_conjugate_gradient(
                    self.hessian_, vectors, self.damping_, self.cg.max_iter, self.cg.tol, max_basis_rows=max_rows
                )
            else:
                solution, self.converged_ = conjugate_gradient(
                    self.hessian_, vectors, self.damping_, self.cg.max_iter, self.cg.tol
                )
            if not bool(self.converged_.all()):
                warnings.warn(
                    f"Influence(solver='cg'): {int((~self.converged_).sum())} of {len(self.converged_)} test points did "
                    f"not converge in max_iter={self.cg.max_iter} iterations (negative curvature or too few iterations); "
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
            torch.randperm(n, generator=generator)[: self.lissa.batch_size]
            for _ in range(self.lissa.depth * self.lissa.repeats)
        ]

        def sampled_hvp(x: Tensor, step: int) -> Tensor:
            operator = HessianOperator(self.task_, self.flat_, self.hessian_.data.subset(samples[step]), self.chunk_size)
            return operator(x)

        return lissa(sampled_hvp, vectors, self.damping_, self.scale_, self.lissa.depth, self.lissa.repeats)

    def _astra(self, vectors: Tensor) -> Tensor:
        """EK-FAC-preconditioned heavy-ball SGD on ``½xᵀ(G + λI)x − vᵀx`` (G: Gauss–Newton), started at the EK-FAC solution."""
        damping = self._hessian_damping

        def precondition(x: Tensor) -> Tensor:
            return apply_ekfac_inverse(self.ekfac_, x, damping)

        data = self.hessian_.data
        generator = torch.Generator().manual_seed(self.seed)
        solution = precondition(vectors)
        velocity = torch.zeros_like(solution)
        lr = self.astra.lr
        for step in range(self.astra.n_iter):
            if step and step % self.astra.halve_every == 0:
                lr /= 2
            if self.astra.batch_size < len(data):
                pick = torch.randperm(len(data), generator=generator)[: self.astra.batch_size]
                operator = GaussNewtonOperator(self.task_, self.flat_, data.subset(pick), self.chunk_size)
            else:
                operator = self.gauss_newton_
            gradient = operator(solution) + damping * solution - vectors
            velocity = self.astra.momentum * velocity + precondition(gradient)
            solution = solution - lr * velocity
        return solution

    def _attribute(self, test: Data) -> Tensor:
        test_grads = test_measurement_grads(
            self.task_, self.model_, test, chunk_size=self.chunk_size, device=self.device, tracked=self.tracked_
        )
        preconditioned = self.inverse_hvp(test_grads.to(self.flat_.vector.dtype)).float() / len(self.train_)
        columns = []
        for start in range(0, len(self.train_), self.chunk_size):
            chunk = self.train_.subset(torch.arange(start, min(start + self.chunk_size, len(self.train_))))
            train_grads = train_loss_grads(
                self.task_, self.model_, chunk, chunk_size=self.chunk_size, device=self.device, tracked=self.tracked_
            )
            columns.append(preconditioned @ train_grads.T)
        return torch.cat(columns, dim=1)
