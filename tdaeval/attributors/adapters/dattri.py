"""Adapters for dattri 0.3.0 (``pip install 'tdaeval[dattri]'``).

Registered names: ``dattri.influence`` (its influence-function family, one
class with a ``solver`` parameter), ``dattri.tracin``, ``dattri.grad_dot``,
``dattri.grad_cos``, ``dattri.trak`` and ``dattri.rps``.

What the adapters convert (dattri 0.3.0 as installed, read from its source):

* **Layout.** dattri returns ``[n_train, n_test]``; the adapters transpose.
* **Objectives.** dattri differentiates an ``AttributionTask``'s ``loss_func``
  on the training side and its ``target_func`` on the test side, both called
  as ``f(params, (inputs, targets))``. The adapters build them from the task:
  the training side is the mean of ``task.loss``, the test side the mean of
  :func:`~tdaeval.attributors.adapters.measurement_badness` (``-f`` when higher
  is better), as tdaeval's own gradient attributors do. The functions accept
  the three input shapes dattri passes: ``(1, ...)`` per example in the IF
  family, unbatched ``(...)`` in TracIn and TRAK, and ``(N, ...)`` batches in
  the Hessian path (where the mean makes ``H`` the Hessian of the *mean*
  training loss, as in :class:`~tdaeval.attributors.Influence`).
* **Signs.** dattri's inner-product attributors (IF family, TracIn) return
  ``∇L(z_i)ᵀ M ∇target(z)`` without a minus sign: with the badness as target a
  positive score already means "supports". TRAK and RPS return the TRAK and
  representer values, positive for proponents. No adapter flips a sign except
  TRAK for measurements where lower is better (as tdaeval's ``trak``).
* **Scale.** Influence scores are divided by ``n_train`` so that they are in
  the measurement's units, like ``influence`` (first-order effect of including
  one point).
* **Checkpoints.** dattri loads state dicts into a private copy of the model
  (never into the fitted model). TracIn uses the checkpoints passed to
  ``fit`` weighted by their learning rates (the final model with the recipe's
  learning rate when none are given); every other adapter explains the final
  model, as tdaeval's built-ins do.
* **Quirks.** ``TRAKAttributor.attribute`` takes ``(test_loader,
  train_loader)``, reversed; the projector defaults of TracIn and TRAK are a
  module-level dict that the constructors update in place, so the adapters
  pass ``projector_kwargs=None`` and set a fresh dict (or ``None``: no
  projection) on the instance afterwards; TracIn's default 512-dimensional
  projection is off unless ``projection_dim`` is set; ``IFAttributorCG``
  runs exactly ``max_iter`` iterations (dattri's default 10 is far from
  converged; ours is 100); the IF family re-solves the inverse-HVP for every
  (train batch, test batch) pair and sums the solutions over the cache
  loader's batches, so the adapters cache the whole training set as one batch
  and use one training batch by default; LiSSA's ``damping`` multiplies
  ``(1 - damping)`` in the recursion, so the adapter passes
  ``damping / lissa_scale`` to add ``damping · I`` to ``H``; dattri's LiSSA
  collate function casts targets to float (cast back here); Arnoldi reseeds
  the global RNG (every dattri call runs under a forked, seeded RNG); the
  model's parameters require grad, so dattri's CG keeps every iteration on an
  autograd graph (memory grows with ``max_iter``) unless it runs under
  ``torch.no_grad()``, as the adapters run it (its ``torch.func`` transforms
  are unaffected).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader

from tdaeval.attributors.adapters._base import AdapterAttributor, measurement_badness
from tdaeval.attributors.base import DEVICE_CONSTRAINT, register
from tdaeval.attributors.gradient import per_sample_grads
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.params import Boolean, Instance, Interval, Options
from tdaeval.task import Task

__all__ = [
    "DattriInfluence",
    "DattriTracIn",
    "DattriGradDot",
    "DattriGradCos",
    "DattriTRAK",
    "DattriRPS",
    "dattri_objective",
]

SOLVERS = ("explicit", "cg", "lissa", "arnoldi", "datainf", "ekfac")
FLOAT32_ONLY = ("arnoldi", "datainf")


def dattri_objective(
    model: nn.Module,
    per_example: Callable[[Tensor, Tensor], Tensor],
    sample_shape: Sequence[int],
    input_dtype: torch.dtype,
    target_dtype: torch.dtype,
) -> Callable[[dict[str, Tensor], tuple[Tensor, Tensor]], Tensor]:
    """A dattri ``loss_func`` / ``target_func`` from a per-example objective.

    Parameters
    ----------
    model : nn.Module
        Evaluated with ``torch.func.functional_call`` at the parameters dattri passes.
    per_example : callable
        ``(outputs [n, ...], targets [n, ...]) -> [n]``, e.g. ``task.loss``.
    sample_shape : sequence of int
        Shape of one input without the batch dimension (``train.inputs.shape[1:]``).
    input_dtype, target_dtype : torch.dtype
        Dtypes the inputs and targets are cast back to (dattri's LiSSA casts them to float).

    Returns
    -------
    callable
        ``f(params, (inputs, targets)) -> scalar``: the mean of ``per_example``
        over the batch. Unbatched inputs ``[*sample_shape]`` (TracIn, TRAK) are
        treated as a batch of one; ``(1, ...)`` (IF family) and ``(N, ...)``
        (Hessian) batches are averaged.
    """
    sample_ndim = len(sample_shape)

    def objective(params: dict[str, Tensor], data: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = data[0], data[1]
        if inputs.dim() == sample_ndim:
            inputs, targets = inputs.unsqueeze(0), targets.unsqueeze(0)
        inputs, targets = inputs.to(input_dtype), targets.to(target_dtype)
        return per_example(functional_call(model, params, (inputs,)), targets).mean()

    return objective


@contextlib.contextmanager
def _seeded(seed: int, device: str, no_grad: bool = True) -> Iterator[None]:
    """Run dattri under a forked global RNG seeded with ``seed`` (it draws from, and reseeds, the global one).

    With ``no_grad`` (the default) also under ``torch.no_grad()``: dattri's ``torch.func`` transforms
    ignore it, but the model's parameters require grad, so without it every Hessian-vector product
    of its CG stays attached to an autograd graph that grows with the iterations (digits MLP, 20
    test points, 50 iterations: 6.9 GB peak instead of 0.64 GB).
    """
    dev = torch.device(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), (torch.no_grad() if no_grad else contextlib.nullcontext()):
        torch.manual_seed(seed)
        yield


_POSITIVE_INT = [Interval(int, 1, None)]
_OPTIONAL_POSITIVE_INT = [None, Interval(int, 1, None)]
_SEED = [Interval(int, 0, None)]


class _DattriAttributor(AdapterAttributor):
    """Shared plumbing: model copy, checkpoint state dicts, objectives, loaders, the ``AttributionTask``."""

    library: ClassVar[str] = "dattri"
    extra: ClassVar[str] = "dattri"

    device: str | None
    seed: int

    # -- helpers used by the subclasses -------------------------------------------------
    def _device(self) -> str:
        return str(self.device) if self.device is not None else str(next(iter(self.model_.parameters())).device)

    def _objective(
        self, per_example: Callable[[Tensor, Tensor], Tensor], model: nn.Module, dtype: torch.dtype | None = None
    ) -> Callable:
        """dattri objective of ``per_example`` on ``model``; floating inputs/targets cast to ``dtype`` if given."""
        inputs, targets = self.train_.inputs.dtype, self.train_.targets.dtype
        if dtype is not None:
            inputs = dtype if inputs.is_floating_point else inputs
            targets = dtype if targets.is_floating_point else targets
        return dattri_objective(model, per_example, tuple(self.train_.inputs.shape[1:]), inputs, targets)

    def _final_state(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.model_.state_dict().items()}

    def _checkpoint_states(self) -> list[dict[str, Tensor]]:
        """State dicts of the checkpoints passed to ``fit`` (parameters over the final model's buffers)."""
        base = self._final_state()
        states = []
        for index, checkpoint in enumerate(self.checkpoints_ or []):
            params = self._checkpoint_params(index, checkpoint, bare_dict=True)
            states.append({**base, **{k: v.detach().clone().to(base[k].device) for k, v in params.items()}})
        return states

    def _task(self, loss_func: Callable, target_func: Callable, model: nn.Module, states: list[dict[str, Tensor]]):
        task_module = self._library("dattri.task")
        return task_module.AttributionTask(loss_func=loss_func, model=model, checkpoints=states, target_func=target_func)

    def _private_model(self, dtype: torch.dtype | None = None) -> nn.Module:
        """A copy of the fitted model (in ``dtype`` if given) that dattri may load checkpoints into."""
        model = copy.deepcopy(self.model_).eval()
        return model if dtype is None else model.to(dtype)

    @staticmethod
    def _loader(data: Data, batch_size: int | None) -> DataLoader:
        return DataLoader(data, batch_size=batch_size or max(len(data), 1), shuffle=False)

    def _standard_task(self, states: list[dict[str, Tensor]], dtype: torch.dtype | None = None):
        """``AttributionTask`` with the training loss as ``loss_func`` and the badness as ``target_func``."""
        model = self._private_model(dtype)
        return self._task(
            self._objective(self.task_.loss, model, dtype),
            self._objective(measurement_badness(self.task_), model, dtype),
            model,
            states,
        )


@register
class DattriInfluence(_DattriAttributor):
    """dattri's influence functions (``IFAttributor*``), one class with a ``solver`` parameter.

    Score ``(1/n) ∇L(z_i)ᵀ (H + λI)⁻¹ ∇(-f)(z)`` at the final model, ``H`` the
    Hessian of the mean training loss (or dattri's approximation of it), oriented
    and scaled as :class:`~tdaeval.attributors.Influence`: positive = supports.

    Parameters
    ----------
    solver : {"cg", "explicit", "lissa", "arnoldi", "datainf", "ekfac"}
        dattri class: ``IFAttributorCG``, ``IFAttributorExplicit`` (dense
        Hessian), ``IFAttributorLiSSA``, ``IFAttributorArnoldi`` (top
        eigenpairs, Schioppa et al. 2022), ``IFAttributorDataInf`` (layer-wise
        closed form of Kwon et al. 2024) or ``IFAttributorEKFAC`` (EK-FAC of
        the empirical Fisher on ``nn.Linear`` layers, estimated with the
        training loss).
    damping : float
        λ > 0 added to the curvature (0.1, as tdaeval's ``influence``): dattri's
        ``regularization`` (explicit, cg, arnoldi, datainf), ``damping`` (ekfac),
        and ``damping / lissa_scale`` for LiSSA (whose recursion adds
        ``damping · scaling · I``).
    max_iter : int
        CG iterations (100; dattri's default 10 is far from converged and its
        ``tol`` is unused, so exactly this many are run).
    lissa_depth, lissa_repeats, lissa_batch_size : int
        LiSSA ``recursion_depth`` (200), ``num_repeat`` (1) and ``batch_size`` (128).
    lissa_scale : float
        LiSSA ``scaling`` (50, dattri's default); must exceed the largest
        eigenvalue of ``H + λI`` or the recursion diverges.
    arnoldi_iter, arnoldi_rank : int
        Arnoldi iterations (100) and eigenpairs kept (``proj_dim``, 50).
    train_batch_size, test_batch_size : int, optional
        Loader batch sizes (default: all points in one batch). dattri re-solves
        the inverse-HVP for every (train batch, test batch) pair, so smaller
        training batches save memory at the price of repeated solves.
    dtype : {None, "float64", "float32"}
        Precision dattri computes in (a private copy of the model is cast to
        it). Default None: float64 for ``explicit``, ``cg``, ``lissa`` and
        ``ekfac``, float32 for ``arnoldi`` and ``datainf`` (dattri 0.3.0 mixes
        float32 tensors into those and fails in float64). float64 matters for
        CG: dattri's CG has no stopping test, and in float32 its recursively
        updated residual underflows a few dozen iterations after convergence,
        giving 0/0 = NaN (digits logistic regression, damping 0.1: NaN from
        iteration 54 on); in float64 that happens only after several hundred
        iterations.
    seed : int
        Seed of dattri's random draws (LiSSA samples, Arnoldi start vector).
    device : str, optional
        Where dattri computes (default: the model's device).
    """

    name = "dattri.influence"
    contract_params: ClassVar[dict[str, Any]] = {"solver": "cg", "max_iter": 20}
    _parameter_constraints = {
        "solver": [Options(SOLVERS)],
        "damping": [Interval(float, 0, None, closed="neither")],
        "max_iter": _POSITIVE_INT,
        "lissa_depth": _POSITIVE_INT,
        "lissa_repeats": _POSITIVE_INT,
        "lissa_batch_size": _POSITIVE_INT,
        "lissa_scale": [Interval(float, 0, None, closed="neither")],
        "arnoldi_iter": _POSITIVE_INT,
        "arnoldi_rank": _POSITIVE_INT,
        "train_batch_size": _OPTIONAL_POSITIVE_INT,
        "test_batch_size": _OPTIONAL_POSITIVE_INT,
        "dtype": [None, Options(("float32", "float64"))],
        "seed": _SEED,
        "device": DEVICE_CONSTRAINT,
    }

    def __init__(
        self,
        solver: str = "cg",
        damping: float = 0.1,
        max_iter: int = 100,
        lissa_depth: int = 200,
        lissa_repeats: int = 1,
        lissa_batch_size: int = 128,
        lissa_scale: float = 50.0,
        arnoldi_iter: int = 100,
        arnoldi_rank: int = 50,
        train_batch_size: int | None = None,
        test_batch_size: int | None = None,
        dtype: str | None = None,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        owner = "DattriInfluence"
        if not lissa_scale > damping:
            raise ConfigError(
                f"The 'lissa_scale' parameter of {owner} must be a number > damping ({damping}). Got {lissa_scale!r} instead."
            )
        if dtype == "float64" and solver in FLOAT32_ONLY:
            raise ConfigError(
                f"The 'dtype' parameter of {owner} cannot be 'float64' with solver={solver!r}: dattri 0.3.0 mixes in "
                "float32 tensors there. Use dtype=None or 'float32'."
            )
        if arnoldi_rank > arnoldi_iter:
            raise ConfigError(
                f"The 'arnoldi_rank' parameter of {owner} must be <= arnoldi_iter ({arnoldi_iter}). Got {arnoldi_rank!r} instead."
            )
        self.solver = solver
        self.damping = float(damping)
        self.max_iter = max_iter
        self.lissa_depth, self.lissa_repeats, self.lissa_batch_size = lissa_depth, lissa_repeats, lissa_batch_size
        self.lissa_scale = float(lissa_scale)
        self.arnoldi_iter, self.arnoldi_rank = arnoldi_iter, arnoldi_rank
        self.train_batch_size = train_batch_size
        self.test_batch_size = test_batch_size
        self.dtype = dtype
        self.seed = seed
        self.device = device

    def _build(self, task) -> Any:
        algorithm = self._library("dattri.algorithm")
        device = self._device()
        if self.solver == "explicit":
            return algorithm.IFAttributorExplicit(task=task, device=device, regularization=self.damping)
        if self.solver == "cg":
            return algorithm.IFAttributorCG(task=task, device=device, max_iter=self.max_iter, regularization=self.damping)
        if self.solver == "lissa":
            return algorithm.IFAttributorLiSSA(
                task=task, device=device, batch_size=self.lissa_batch_size, num_repeat=self.lissa_repeats,
                recursion_depth=self.lissa_depth, damping=self.damping / self.lissa_scale, scaling=self.lissa_scale,
            )
        if self.solver == "arnoldi":
            return algorithm.IFAttributorArnoldi(
                task=task, device=device, proj_dim=self.arnoldi_rank, max_iter=self.arnoldi_iter,
                regularization=self.damping, seed=self.seed,
            )
        if self.solver == "datainf":
            return algorithm.IFAttributorDataInf(task=task, device=device, regularization=self.damping)
        return algorithm.IFAttributorEKFAC(task=task, device=device, damping=self.damping)

    def _fit(self) -> None:
        self.model_.eval()
        if self.dtype is None:
            self.dtype_ = torch.float32 if self.solver in FLOAT32_ONLY else torch.float64
        else:
            self.dtype_ = getattr(torch, self.dtype)
        states = [self._final_state()]
        if self.solver == "ekfac":
            # dattri estimates the EK-FAC factors on target_func: use the training loss while caching,
            # then the measurement's badness for the test gradients.
            model = self._private_model(self.dtype_)
            loss = self._objective(self.task_.loss, model, self.dtype_)
            badness = self._objective(measurement_badness(self.task_), model, self.dtype_)
            self._target_is_loss = True

            def target(params: dict[str, Tensor], data: tuple[Tensor, Tensor]) -> Tensor:
                return (loss if self._target_is_loss else badness)(params, data)

            task = self._task(loss, target, model, states)
        else:
            task = self._standard_task(states, self.dtype_)
        self.dattri_ = self._build(task)
        # EK-FAC's cache runs loss.backward(): it needs autograd.
        with _seeded(self.seed, self._device(), no_grad=self.solver != "ekfac"):
            self.dattri_.cache(self._loader(self.train_, None))
        self._target_is_loss = False

    def _attribute(self, test: Data) -> Tensor:
        with _seeded(self.seed, self._device()):
            scores = self.dattri_.attribute(
                self._loader(self.train_, self.train_batch_size), self._loader(test, self.test_batch_size)
            )
        return scores.detach().T.cpu() / len(self.train_)


@register
class DattriTracIn(_DattriAttributor):
    """dattri's ``TracInAttributor``: ``Σ_c η_c ∇(-f)_c(z) · ∇L_c(z_i)`` over checkpoints.

    The checkpoints are those passed to ``fit`` (weights: their learning
    rates); without any, the final model weighted by the task's recipe
    learning rate. Equal to tdaeval's ``tracin`` up to floating point when not
    projected.

    Parameters
    ----------
    projection_dim : int, optional
        Random projection of the gradients (dattri's ``proj_dim``). Default
        None: no projection — dattri would project to 512 dimensions, which is
        slower and less accurate for small models.
    batch_size : int
        Examples per per-sample-gradient batch, train and test.
    seed : int
        Seed of the projection.
    device : str, optional
        Where dattri computes (default: the model's device).
    """

    name = "dattri.tracin"
    normalized_grad: ClassVar[bool] = False
    contract_params: ClassVar[dict[str, Any]] = {}
    _parameter_constraints = {
        "projection_dim": _OPTIONAL_POSITIVE_INT,
        "batch_size": _POSITIVE_INT,
        "seed": _SEED,
        "device": DEVICE_CONSTRAINT,
    }

    def __init__(
        self, projection_dim: int | None = None, batch_size: int = 256, seed: int = 0, device: str | None = None
    ) -> None:
        self.projection_dim = projection_dim
        self.batch_size = batch_size
        self.seed = seed
        self.device = device

    def _states_and_weights(self) -> tuple[list[dict[str, Tensor]], list[float]]:
        if self.checkpoints_:
            return self._checkpoint_states(), [float(getattr(c, "lr", 1.0)) for c in self.checkpoints_]
        return [self._final_state()], [float(self.task_.recipe.lr)]

    def _fit(self) -> None:
        self.model_.eval()
        states, weights = self._states_and_weights()
        algorithm = self._library("dattri.algorithm")
        # projector_kwargs=None leaves dattri's module-level default dict untouched; the
        # instance then gets a fresh dict, or None (no projection).
        self.dattri_ = algorithm.TracInAttributor(
            task=self._standard_task(states),
            weight_list=torch.tensor(weights, dtype=torch.float64),
            normalized_grad=self.normalized_grad,
            projector_kwargs=None,
            device=self._device(),
        )
        self.dattri_.projector_kwargs = (
            None
            if self.projection_dim is None
            else {"proj_dim": self.projection_dim, "proj_max_batch_size": 32, "proj_seed": self.seed, "device": self._device()}
        )

    def _attribute(self, test: Data) -> Tensor:
        with _seeded(self.seed, self._device()):
            scores = self.dattri_.attribute(self._loader(self.train_, self.batch_size), self._loader(test, self.batch_size))
        return scores.detach().T.cpu()


@register
class DattriGradDot(DattriTracIn):
    """dattri's Grad-Dot: ``TracInAttributor`` on the final model with weight 1.

    ``∇(-f)(z) · ∇L(z_i)``; equal to tdaeval's ``grad_dot`` up to floating point.
    Parameters as :class:`DattriTracIn`.
    """

    name = "dattri.grad_dot"

    def _states_and_weights(self) -> tuple[list[dict[str, Tensor]], list[float]]:
        return [self._final_state()], [1.0]


@register
class DattriGradCos(DattriGradDot):
    """dattri's Grad-Cos: Grad-Dot with normalised gradients (``normalized_grad=True``).

    Parameters as :class:`DattriTracIn`.
    """

    name = "dattri.grad_cos"
    normalized_grad = True


@register
class DattriTRAK(_DattriAttributor):
    """dattri's ``TRAKAttributor`` on the final model (one model, no ensemble).

    ``φ(z)ᵀ(ΦᵀΦ + λI)⁻¹Φᵀ ⊙ Q`` with ``φ`` projected gradients of the
    measurement on both sides (TRAK's model output; dattri's TRAK examples pass
    the margin as ``loss_func``) and ``Q = 1 - p_correct`` for tasks measured
    by the margin (``p = sigmoid(margin)``), else 1 — as tdaeval's ``trak``.
    Signs: positive = supports (flipped when lower is better).

    Parameters
    ----------
    projection_dim : int, optional
        dattri's ``proj_dim`` (512, dattri's default), Gaussian projection;
        None: no projection (dattri's ``proj_type="identity"``).
    regularization : float, optional
        λ added to ``ΦᵀΦ`` where dattri divides gradients by ``sqrt(n_params)``.
        Default: the rule of tdaeval's ``trak``, ``1e-3 · trace(ΦᵀΦ) /
        min(projection_dim, n_train)``, with ``trace(ΦᵀΦ)`` estimated as
        ``Σ_i |∇f(z_i)|² / n_params`` (the projection preserves norms in
        expectation); dattri's own default 0 makes ``ΦᵀΦ`` singular whenever
        ``projection_dim > n_train``.
    batch_size : int
        Examples per per-sample-gradient batch.
    seed : int
        Projection seed.
    device : str, optional
        Where dattri computes (default: the model's device).
    """

    name = "dattri.trak"
    contract_params: ClassVar[dict[str, Any]] = {"projection_dim": 64}
    _parameter_constraints = {
        "projection_dim": _OPTIONAL_POSITIVE_INT,
        "regularization": [None, Interval(float, 0, None)],
        "batch_size": _POSITIVE_INT,
        "seed": _SEED,
        "device": DEVICE_CONSTRAINT,
    }

    def __init__(
        self,
        projection_dim: int | None = 512,
        regularization: float | None = None,
        batch_size: int = 256,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.projection_dim = projection_dim
        self.regularization = None if regularization is None else float(regularization)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device

    def _default_regularization(self) -> float:
        total = 0.0
        for start in range(0, len(self.train_), self.batch_size):
            chunk = self.train_.subset(torch.arange(start, min(start + self.batch_size, len(self.train_))))
            grads = per_sample_grads(self.model_, self.task_.measurement, chunk, chunk_size=self.batch_size)
            total += float(grads.double().square().sum())
        n_params = sum(p.numel() for p in self.model_.parameters() if p.requires_grad)
        return 1e-3 * (total / n_params) / min(self.projection_dim or n_params, len(self.train_))

    def _fit(self) -> None:
        self.model_.eval()
        algorithm = self._library("dattri.algorithm")
        model = self._private_model()
        sign = 1.0 if self.task_.higher_is_better else -1.0
        measurement = self.task_.measurement
        margin_task = self.task_.measurement_name == "margin"
        sample_ndim = self.train_.inputs.dim() - 1

        def correct_probability(params: dict[str, Tensor], data: tuple[Tensor, Tensor]) -> Tensor:
            inputs, targets = data[0], data[1]
            if inputs.dim() == sample_ndim:
                inputs, targets = inputs.unsqueeze(0), targets.unsqueeze(0)
            if not margin_task:
                return torch.zeros_like(inputs.sum())
            return torch.sigmoid(measurement(functional_call(model, params, (inputs,)), targets)).squeeze(0)

        self.regularization_ = self.regularization if self.regularization is not None else self._default_regularization()
        task = self._task(
            self._objective(measurement, model),
            self._objective(lambda out, y: sign * measurement(out, y), model),
            model,
            [self._final_state()],
        )
        self.dattri_ = algorithm.TRAKAttributor(
            task=task, correct_probability_func=correct_probability, projector_kwargs=None,
            device=self._device(), regularization=self.regularization_,
        )
        # A fresh dict: dattri's module-level default is shared and mutated by its constructor.
        self.dattri_.projector_kwargs = {
            "proj_dim": self.projection_dim or 1, "proj_max_batch_size": 32, "proj_seed": self.seed,
            "proj_type": "normal" if self.projection_dim else "identity", "device": self._device(),
        }
        with _seeded(self.seed, self._device()):
            self.dattri_.cache(self._loader(self.train_, self.batch_size))

    def _attribute(self, test: Data) -> Tensor:
        with _seeded(self.seed, self._device()):
            # TRAKAttributor.attribute(test_loader, train_loader=None): test first; the train set is cached.
            scores = self.dattri_.attribute(self._loader(test, self.batch_size))
        return scores.detach().T.cpu()


@register
class DattriRPS(_DattriAttributor):
    """dattri's ``RPSAttributor``: representer points (Yeh et al. 2018) of the final linear layer.

    dattri fine-tunes the last layer's weight with an L2 penalty against the
    model's own softmax predictions, then scores ``α_{i,y} ⟨h_i, h(z)⟩`` with
    ``h`` the last layer's inputs and ``y`` the test label; positive =
    excitatory (supports). Softmax classification only (integer targets, a
    final ``nn.Linear`` with at least two outputs).

    Parameters
    ----------
    final_layer : str, optional
        Name of the final ``nn.Linear``, a direct child of the model (dattri
        looks it up with ``getattr``). Default: the last ``nn.Linear``.
    l2_strength : float
        L2 penalty of the fine-tuning (0.003, dattri's default).
    epochs : int
        Fine-tuning steps, each with a backtracking line search (3000, dattri's default;
        it stops early once the gradient has fallen 200-fold).
    normalize : bool
        Normalise the features before the inner product (``normalize_preactivate``).
    seed : int
        Seed of the global RNG while dattri runs.
    device : str, optional
        Where dattri computes (default: the model's device).
    """

    name = "dattri.rps"
    contract_params: ClassVar[dict[str, Any]] = {"epochs": 30}
    _parameter_constraints = {
        "final_layer": [None, Instance(str)],
        "l2_strength": [Interval(float, 0, None, closed="neither")],
        "epochs": _POSITIVE_INT,
        "normalize": [Boolean()],
        "seed": _SEED,
        "device": DEVICE_CONSTRAINT,
    }

    def __init__(
        self,
        final_layer: str | None = None,
        l2_strength: float = 0.003,
        epochs: int = 3000,
        normalize: bool = False,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.final_layer = final_layer
        self.l2_strength = float(l2_strength)
        self.epochs = epochs
        self.normalize = normalize
        self.seed = seed
        self.device = device

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """A sequence task (``task.positions`` not None) is refused: representer points need one label per example."""
        if task.positions(train) is None:
            return None
        return (f"Attributor {self.display_name!r} supports softmax classification with one label per example; "
                f"{type(task).__name__} is a sequence task with a target per position. Use 'representer'.")

    def _layer_name(self, model: nn.Module) -> str:
        if self.final_layer is not None:
            layer = getattr(model, self.final_layer, None) if "." not in self.final_layer else None
            if not isinstance(layer, nn.Linear):
                raise ConfigError(
                    f"The 'final_layer' parameter of DattriRPS must name an nn.Linear that is a direct child of the "
                    f"model. Got {self.final_layer!r}."
                )
            return self.final_layer
        linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linear or "." in linear[-1] or linear[-1] == "":
            raise AttributorError(
                "Attributor 'dattri.rps' needs a final nn.Linear that is a direct child of the model (dattri looks it "
                f"up with getattr); found {linear[-1:] or 'none'}. Pass final_layer=... or wrap the model."
            )
        return linear[-1]

    def _fit(self) -> None:
        self.model_.eval()
        model = self._private_model()
        name = self._layer_name(model)
        if torch.is_floating_point(self.train_.targets) or getattr(model, name).out_features < 2:
            raise AttributorError(
                "Attributor 'dattri.rps' supports softmax classification only (integer targets and a final "
                f"nn.Linear with >= 2 outputs); got {self.train_.targets.dtype} targets and "
                f"{getattr(model, name).out_features} output(s)."
            )

        def soft_cross_entropy(pre_activation: Tensor, probabilities: Tensor) -> Tensor:
            # dattri calls the target with the last layer's outputs and the model's softmax predictions.
            return F.cross_entropy(pre_activation, probabilities)

        task = self._task(self._objective(self.task_.loss, model), soft_cross_entropy, model, [self._final_state()])
        algorithm = self._library("dattri.algorithm")
        self.dattri_ = algorithm.RPSAttributor(
            task=task, final_linear_layer_name=name, normalize_preactivate=self.normalize,
            l2_strength=self.l2_strength, epoch=self.epochs, device=self._device(),
        )
        # The fine-tuning runs loss.backward(): it needs autograd.
        with _seeded(self.seed, self._device(), no_grad=False):
            self.dattri_.cache(self._loader(self.train_, None))

    def _attribute(self, test: Data) -> Tensor:
        with _seeded(self.seed, self._device()):
            scores = self.dattri_.attribute(self._loader(self.train_, None), self._loader(test, None))
        return scores.detach().T.cpu()
