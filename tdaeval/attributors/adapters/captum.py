"""Adapters for ``captum.influence``: TracInCP, TracInCPFast, Arnoldi and naive influence functions, similarity.

Registered names (the class in brackets)::

    captum.tracin_cp         TracInCP                    all parameters (or `layers`), every checkpoint
    captum.tracin_cp_fast    TracInCPFast                weight of the output nn.Linear only, every checkpoint
    captum.arnoldi           ArnoldiInfluenceFunction    influence function, top eigenpairs by Arnoldi iteration
    captum.naive_influence   NaiveInfluenceFunction      influence function, explicit Hessian
    captum.similarity        SimilarityInfluence         cosine of the output layer's input embeddings

What the adapters hand over to captum:

* **Objectives.** The training side differentiates the task's per-example
  loss, the test side the measurement turned into a loss
  (:func:`~tdaeval.attributors.adapters.measurement_badness`: ``-f`` when
  higher is better), captum's ``loss_fn`` and ``test_loss_fn``. Both are
  wrapped in an ``nn.Module`` with the ``reduction`` attribute captum checks:
  ``"none"`` (per-example values) where captum loops over examples,
  ``"sum"`` where it computes per-sample gradients with its batch trick
  (``sample_wise_grads_per_batch``) or, for TracInCPFast, gradients with
  respect to the outputs. Summing is exact because the model is evaluated in
  eval mode, where examples do not interact.
* **Checkpoints.** captum loads checkpoints from files through a load function
  that returns the learning rate used as the TracIn weight. Our
  :class:`~tdaeval.training.Checkpoint` objects are written with
  ``torch.save`` into a temporary directory owned by the attributor, read back
  with ``weights_only=True``, and their ``lr`` is returned, so TracIn weighs
  checkpoints exactly as the built-in ``tracin``. Without checkpoints the
  final model is the only checkpoint, with weight 1 (TracIn is then Grad-Dot).
  The influence functions use the final model alone.
* **Signs and shapes.** Every captum class used here returns
  ``[n_test, n_train]``. TracIn scores ``Σ_c η_c ∇ℓ_test · ∇L_train`` and
  captum's influence functions ``∇ℓ_testᵀ H⁻¹ ∇L_train`` *without* Koh &
  Liang's minus sign, so with ``ℓ_test`` the measurement's badness a positive
  score already means "supports": no conversion is needed. captum's Hessian
  is that of the *summed* training loss, ``n·H``; our ``damping`` λ refers to
  the mean loss's Hessian (as in :class:`~tdaeval.attributors.influence.Influence`)
  and is passed as ``hessian_reg = n·λ``, so that
  ``∇ℓᵀ (nH + nλI)⁻¹ ∇L = (1/n) ∇ℓᵀ (H + λI)⁻¹ ∇L``, our influence scale.
* **Models.** captum loads checkpoints into the model it is given and sets
  attributes on its parameters, so it always gets a deep copy of the fitted
  model, in eval mode. ``fit`` and ``attribute`` run inside
  ``torch.random.fork_rng`` (captum's influence functions call
  ``torch.manual_seed``, and every ``DataLoader`` draws a seed from the global
  generator): the global random state is left as it was.
* **Versions.** The influence functions need captum >= 0.8 (0.7 has neither
  class); ``available()`` says whether the installed captum has them, and
  fitting without them is a :class:`~tdaeval.attributors.adapters.MissingExtraError`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tdaeval.attributors.adapters._base import AdapterAttributor, MissingExtraError, measurement_badness
from tdaeval.attributors.base import register
from tdaeval.attributors.representation import last_linear
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.params import Boolean, Instance, Interval, ListOf
from tdaeval.task import Task

__all__ = [
    "CaptumTracInCP",
    "CaptumTracInCPFast",
    "CaptumArnoldiInfluence",
    "CaptumNaiveInfluence",
    "CaptumSimilarity",
]

#: Modules whose per-sample gradients captum's batch trick computes.
_SAMPLE_WISE_MODULES = (nn.Linear, nn.Conv2d)


class CaptumObjective(nn.Module):
    """A per-example objective in the form captum expects of a loss function.

    Parameters
    ----------
    fn : callable
        ``(outputs [n, ...], targets [n, ...]) -> [n]``.
    reduction : {"none", "sum"}
        ``"none"`` returns the ``[n]`` values, ``"sum"`` their sum; captum reads
        this attribute to decide how to differentiate.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], reduction: str) -> None:
        super().__init__()
        if reduction not in ("none", "sum"):
            raise ConfigError(f"CaptumObjective's 'reduction' must be 'none' or 'sum'. Got {reduction!r} instead.")
        self.fn = fn
        self.reduction = reduction

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        values = self.fn(outputs, targets)
        return values if self.reduction == "none" else values.sum()


def load_checkpoint(model: nn.Module, path: str) -> float:
    """captum's ``checkpoints_load_func``: copy saved parameters into ``model`` and return the learning rate.

    Parameters
    ----------
    model : nn.Module
        Receives the parameters in place (buffers are left as they are).
    path : str
        A file written by the adapters: ``{"params": {name: Tensor}, "learning_rate": float}``.

    Returns
    -------
    float
        The checkpoint's learning rate (TracIn's weight).
    """
    device = next(iter(model.parameters())).device
    state = torch.load(path, map_location=device, weights_only=True)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value)
    return float(state["learning_rate"])


@contextlib.contextmanager
def _quiet_captum() -> Iterator[None]:
    """Silence warnings captum raises about its own internals on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*To copy construct from a tensor.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*zero-vector activations.*", category=RuntimeWarning)
        yield


@contextlib.contextmanager
def _own_rng() -> Iterator[None]:
    """Restore the global random state afterwards (captum calls ``torch.manual_seed``; data loaders draw seeds)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


#: Constraints of the parameters the captum adapters share.
_BATCH_SIZE = [Interval(int, 1, None)]
_LAYER = [None, Instance(str)]
_LAYERS = [None, ListOf(str, non_empty=True, description="a non-empty list of module names")]
_SAMPLE_WISE = [None, Boolean()]


class _InputTap(nn.Module):
    """``linear`` preceded by identity modules ``tap`` and ``spare`` whose outputs are the linear layer's input.

    ``spare`` exists because captum 0.9's ``SimilarityInfluence`` fails for a
    single layer (``LayerActivation`` returns a list for a list of one layer,
    which ``influence`` wraps in a list once more); two layers work.
    """

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.tap = nn.Identity()
        self.spare = nn.Identity()
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.spare(self.tap(x)))


class _CaptumAdapter(AdapterAttributor):
    """Shared plumbing: model copies, datasets, checkpoint files in a temporary directory."""

    library = "captum"
    extra = "captum"

    def fit(self, task, model, train, checkpoints=None):  # noqa: D102 - documented on Attributor
        with _quiet_captum(), _own_rng():
            return super().fit(task, model, train, checkpoints)

    def attribute(self, test: Data) -> Tensor:  # noqa: D102 - documented on Attributor
        with _quiet_captum(), _own_rng():
            return super().attribute(test)

    # ---- helpers used by the subclasses -------------------------------------------------------
    def _model_copy(self) -> nn.Module:
        model = copy.deepcopy(self.model_).eval()
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    @staticmethod
    def _device(model: nn.Module) -> torch.device:
        return next(iter(model.parameters())).device

    @staticmethod
    def _on(data: Data, device: torch.device) -> Data:
        return Data(data.inputs.to(device), data.targets.to(device))

    def _write_checkpoints(self, final_only: bool = False) -> list[str]:
        """Checkpoint files: the fit's checkpoints, else (or with ``final_only``) the final model with weight 1."""
        if self.checkpoints_ and not final_only:
            entries = []
            for k, checkpoint in enumerate(self.checkpoints_):
                params = self._checkpoint_params(k, checkpoint)
                if not isinstance(checkpoint.lr, (int, float)):
                    raise AttributorError(
                        f"Attributor {self.display_name!r}: checkpoint {k} needs a numeric learning rate 'lr' (TracIn's weight). "
                        f"Got {checkpoint.lr!r}."
                    )
                entries.append((params, float(checkpoint.lr)))
        else:
            entries = [(dict(self.model_.named_parameters()), 1.0)]
        directory = Path(self._workdir())
        paths = []
        for k, (params, lr) in enumerate(entries):
            path = directory / f"checkpoint-{k:05d}.pt"
            torch.save({"params": {n: p.detach().cpu() for n, p in params.items()}, "learning_rate": lr}, path)
            paths.append(str(path))
        return paths

    def _objectives(self, reduction: str) -> tuple[CaptumObjective, CaptumObjective]:
        """``(train loss, test badness)`` wrapped for captum."""
        return CaptumObjective(self.task_.loss, reduction), CaptumObjective(measurement_badness(self.task_), reduction)

    def _loader(self, data: Data, device: torch.device) -> DataLoader:
        return DataLoader(self._on(data, device), batch_size=self.batch_size, shuffle=False)


class _CaptumPerExample(_CaptumAdapter):
    """Shared by TracInCP and the influence functions: per-example gradients of all parameters or of ``layers``."""

    batch_size: int
    sample_wise_grads_per_batch: bool | None

    def _check_layer_names(self, model: nn.Module, layers: list[str] | None) -> list[str] | None:
        for name in layers or ():
            try:
                model.get_submodule(name)
            except AttributeError as err:
                raise ConfigError(
                    f"Attributor {self.display_name!r}: the model has no submodule {name!r} (parameter 'layers')."
                ) from err
        return layers

    def _resolve_sample_wise(self, model: nn.Module, layers: list[str] | None) -> bool:
        """captum's batch trick only where every differentiated parameter sits in an nn.Linear / nn.Conv2d."""
        requested = self.sample_wise_grads_per_batch
        roots = [model] if layers is None else [model.get_submodule(name) for name in layers]
        supported = all(
            isinstance(module, _SAMPLE_WISE_MODULES)
            for root in roots
            for module in root.modules()
            if any(True for _ in module.parameters(recurse=False))
        )
        if requested is None:
            return supported
        if requested and not supported:
            raise ConfigError(
                f"The 'sample_wise_grads_per_batch' parameter of {self.display_name!r} is True, but captum's per-sample "
                "gradient trick only covers nn.Linear and nn.Conv2d (it drops other modules' parameters) and the "
                "differentiated parameters include others. Use None or False."
            )
        return bool(requested)

    def _gradient_kwargs(self, model: nn.Module, layers: list[str] | None) -> dict[str, Any]:
        """The keyword arguments TracInCP and the influence functions take alike: data, objectives, layers, batching."""
        sample_wise = self._resolve_sample_wise(model, layers)
        loss, badness = self._objectives("sum" if sample_wise else "none")
        return dict(
            train_dataset=self._on(self.train_, self._device(model)),
            checkpoints_load_func=load_checkpoint,
            layers=layers,
            loss_fn=loss,
            batch_size=self.batch_size,
            test_loss_fn=badness,
            sample_wise_grads_per_batch=sample_wise,
        )

    def _attribute(self, test: Data) -> Tensor:
        return self.captum_.influence(self._loader(test, self._device(self.captum_.model)))


class _CaptumOutputLayer(_CaptumAdapter):
    """Shared by TracInCPFast and SimilarityInfluence: they work on one ``nn.Linear``, the output layer by default."""

    contract_params: ClassVar[dict[str, Any]] = {"batch_size": 128}
    _parameter_constraints = {"layer": _LAYER, "batch_size": _BATCH_SIZE}

    def __init__(self, layer: str | None = None, batch_size: int = 256) -> None:
        self.layer = layer
        self.batch_size = batch_size


@register
class CaptumTracInCP(_CaptumPerExample):
    """captum's ``TracInCP``: ``Σ_c η_c ∇(-f)_c(z) · ∇L_c(z_i)`` over the checkpoints.

    The same quantity as the built-in ``tracin``; with no checkpoints the final
    model is used alone with weight 1.

    Parameters
    ----------
    batch_size : int
        Training (and test) examples per captum batch (captum's default is 1).
    layers : list of str, optional
        Restrict the gradients to these modules' parameters (default: all).
    sample_wise_grads_per_batch : bool, optional
        captum's per-sample-gradient trick (a ``"sum"`` loss and hooks on
        ``nn.Linear`` / ``nn.Conv2d``) instead of one backward pass per
        example. Default (None): when every parameterised module is one of those.
    """

    name = "captum.tracin_cp"
    contract_params = {"batch_size": 128}
    _parameter_constraints = {"batch_size": _BATCH_SIZE, "layers": _LAYERS, "sample_wise_grads_per_batch": _SAMPLE_WISE}

    def __init__(
        self, batch_size: int = 256, layers: list[str] | None = None, sample_wise_grads_per_batch: bool | None = None
    ) -> None:
        self.batch_size = batch_size
        self.layers = None if layers is None else list(layers)
        self.sample_wise_grads_per_batch = sample_wise_grads_per_batch

    def _fit(self) -> None:
        influence = self._library("captum.influence")
        model = self._model_copy()
        layers = self._check_layer_names(model, self.layers)
        self.captum_ = influence.TracInCP(model, checkpoints=self._write_checkpoints(), **self._gradient_kwargs(model, layers))


@register
class CaptumTracInCPFast(_CaptumOutputLayer):
    """captum's ``TracInCPFast``: TracIn on the weight matrix of the output ``nn.Linear`` only.

    ``Σ_c η_c (∂(-f)/∂o · ∂L/∂o')(a · a')`` with ``o`` the layer's outputs and
    ``a`` its inputs at checkpoint ``c``: the dot product of the weight
    gradients. The bias is not included.

    Parameters
    ----------
    layer : str, optional
        Name of the output ``nn.Linear`` (default: the last one in ``model.modules()``).
    batch_size : int
        Examples per captum batch.
    """

    name = "captum.tracin_cp_fast"

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """A sequence task (``task.positions`` not None) is refused: captum's TracInCPFast needs ``[n, features]`` layer inputs."""
        if task.positions(train) is None:
            return None
        return (f"Attributor {self.display_name!r} needs one output per example (captum's TracInCPFast takes [n, features] "
                f"inputs to the output layer); {type(task).__name__} is a sequence task with an output per position. "
                "Use 'captum.tracin_cp' or 'tracin'.")

    def _fit(self) -> None:
        influence = self._library("captum.influence")
        model = self._model_copy()
        layer_name, layer = last_linear(model, self.layer)
        loss, badness = self._objectives("sum")
        self.captum_ = influence.TracInCPFast(
            model,
            layer,
            self._on(self.train_, self._device(model)),
            self._write_checkpoints(),
            checkpoints_load_func=load_checkpoint,
            loss_fn=loss,
            batch_size=self.batch_size,
            test_loss_fn=badness,
        )
        self.layer_ = layer_name

    def _attribute(self, test: Data) -> Tensor:
        # TracInCPFast takes one test batch at a time.
        rows = [self.captum_.influence(tuple(batch)) for batch in self._loader(test, self._device(self.captum_.model))]
        return torch.cat(rows, dim=0)


class _CaptumInfluence(_CaptumPerExample):
    """Shared by the two influence-function adapters (captum >= 0.8)."""

    #: Where captum defines the class (captum 0.7 has neither).
    captum_module: ClassVar[str] = ""
    captum_class: ClassVar[str] = ""
    _parameter_constraints = {
        "damping": [Interval(float, 0, None)],
        "hessian_inverse_tol": [Interval(float, None, None)],
        "layers": _LAYERS,
        "last_layer_only": [Boolean()],
        "batch_size": _BATCH_SIZE,
        "sample_wise_grads_per_batch": _SAMPLE_WISE,
    }

    @classmethod
    def available(cls) -> bool:
        """Whether captum is installed and recent enough to have the wrapped class."""
        if not super().available():
            return False
        try:
            return hasattr(importlib.import_module(cls.captum_module), cls.captum_class)
        except ImportError:
            return False

    def _captum_class(self) -> type:
        captum = self._library()
        try:
            return getattr(importlib.import_module(self.captum_module), self.captum_class)
        except (ImportError, AttributeError) as err:
            raise MissingExtraError(
                f"Attributor {self.display_name!r} needs captum >= 0.8 for {self.captum_class}; found captum "
                f"{getattr(captum, '__version__', '?')} ({err}). Upgrade it with: pip install -U 'tdaeval[captum]'."
            ) from err

    def _set_influence_params(self, damping, hessian_inverse_tol, layers, last_layer_only, batch_size, sample_wise_grads_per_batch) -> None:
        """Keep the parameters every captum influence function takes (checked by the table), refusing ``layers`` with ``last_layer_only``."""
        if last_layer_only and layers is not None:
            raise ConfigError(f"{type(self).__name__} takes either the 'layers' or the 'last_layer_only' parameter, not both.")
        self.damping = float(damping)
        self.hessian_inverse_tol = float(hessian_inverse_tol)
        self.layers = None if layers is None else list(layers)
        self.last_layer_only = last_layer_only
        self.batch_size = batch_size
        self.sample_wise_grads_per_batch = sample_wise_grads_per_batch

    def _resolve_layers(self, model: nn.Module) -> list[str] | None:
        """The module names whose parameters enter the Hessian (None: all)."""
        if self.last_layer_only:
            name, _ = last_linear(model)
            return [name] if name else None  # a bare nn.Linear model: all its parameters
        return self._check_layer_names(model, self.layers)

    def _influence_kwargs(self, model: nn.Module, layers: list[str] | None) -> dict[str, Any]:
        return dict(
            self._gradient_kwargs(model, layers),
            checkpoint=self._write_checkpoints(final_only=True)[0],
            # captum adds hessian_reg to the Hessian of the summed loss, n times ours.
            hessian_reg=len(self.train_) * self.damping,
            hessian_inverse_tol=self.hessian_inverse_tol,
        )

    @staticmethod
    def _n_hessian_params(model: nn.Module, layers: list[str] | None) -> int:
        if layers is None:
            return sum(p.numel() for p in model.parameters())
        return sum(p.numel() for name in layers for p in model.get_submodule(name).parameters())


@register
class CaptumNaiveInfluence(_CaptumInfluence):
    """captum's ``NaiveInfluenceFunction``: influence functions with the explicit Hessian.

    ``score(z, z_i) = ∇(-f)(z)ᵀ (nH + nλI)⁻¹ ∇L(z_i)`` restricted to the top
    ``projection_dim`` eigenpairs of ``nH + nλI`` whose eigenvalue exceeds
    ``hessian_inverse_tol``; with all of them (the default) this equals the
    built-in ``influence(solver="explicit", damping=λ)``.

    Parameters
    ----------
    damping : float
        λ added to the diagonal of the *mean* training loss's Hessian (passed to
        captum as ``hessian_reg = n_train·λ``). Default 0.1, as ``influence``.
    projection_dim : int, optional
        Eigenpairs kept (default None: all; captum's own default is 50).
    hessian_inverse_tol : float
        Eigenvalues of ``nH + nλI`` at or below this are dropped (captum's default).
    layers : list of str, optional
        Restrict the parameters to these modules' (default: all).
    last_layer_only : bool
        Restrict the parameters to the output ``nn.Linear``'s (the last one).
    batch_size : int
        Examples per captum batch.
    sample_wise_grads_per_batch : bool, optional
        As for ``captum.tracin_cp``.
    max_params : int
        Refuse models (or ``layers``) with more parameters: the Hessian is
        ``P x P`` and captum builds it with ``P`` backward passes per batch.
    """

    name = "captum.naive_influence"
    captum_module = "captum.influence"
    captum_class = "NaiveInfluenceFunction"
    # The explicit Hessian of the whole MLP takes seconds (P backward passes, a general eig).
    contract_params = {"last_layer_only": True, "batch_size": 128}
    _parameter_constraints = {
        **_CaptumInfluence._parameter_constraints,
        "projection_dim": [None, Interval(int, 1, None)],
        "max_params": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        damping: float = 0.1,
        projection_dim: int | None = None,
        hessian_inverse_tol: float = 1e-5,
        layers: list[str] | None = None,
        last_layer_only: bool = False,
        batch_size: int = 256,
        sample_wise_grads_per_batch: bool | None = None,
        max_params: int = 10_000,
    ) -> None:
        self._set_influence_params(damping, hessian_inverse_tol, layers, last_layer_only, batch_size, sample_wise_grads_per_batch)
        self.projection_dim = projection_dim
        self.max_params = max_params

    def _fit(self) -> None:
        naive_influence_function = self._captum_class()
        model = self._model_copy()
        layers = self._resolve_layers(model)
        n_params = self._n_hessian_params(model, layers)
        if n_params > self.max_params:
            raise ConfigError(
                f"Attributor {self.display_name!r} builds a {n_params} x {n_params} Hessian; the model has more than "
                f"max_params={self.max_params} parameters. Restrict 'layers' or use 'captum.arnoldi'."
            )
        self.captum_ = naive_influence_function(
            model, projection_dim=self.projection_dim, **self._influence_kwargs(model, layers)
        )


@register
class CaptumArnoldiInfluence(_CaptumInfluence):
    """captum's ``ArnoldiInfluenceFunction`` (Schioppa et al. 2022).

    ``arnoldi_dim`` Arnoldi steps from a seeded random start build a Krylov
    subspace of the Hessian of the summed training loss; the top
    ``projection_dim`` eigenpairs of its restriction (plus ``n·λ``) above
    ``hessian_inverse_tol`` give ``score(z, z_i) = Σ_k (u_kᵀ∇(-f)(z))(u_kᵀ∇L(z_i)) / (nμ_k + nλ)``,
    the built-in ``influence(solver="arnoldi")`` up to the subspace found.

    Parameters
    ----------
    damping : float
        λ added to the *mean* loss's Hessian (captum's ``hessian_reg = n_train·λ``). Default 0.1.
    projection_dim : int
        Eigenpairs kept (captum's default 50).
    arnoldi_dim : int
        Arnoldi iterations, the Krylov subspace's dimension (captum's default 200).
    arnoldi_tol : float
        Stop early when a new basis vector's norm (before normalisation, on the
        summed-loss scale) falls below this (captum's default 0.1).
    hessian_inverse_tol : float
        Eigenvalues at or below this are dropped (captum's default 1e-4).
    layers, last_layer_only, batch_size, sample_wise_grads_per_batch
        As :class:`CaptumNaiveInfluence`.
    seed : int
        Seeds the Arnoldi start vector (inside ``fork_rng``: the global state is untouched).
    """

    name = "captum.arnoldi"
    captum_module = "captum.influence._core.arnoldi_influence_function"  # not exported by captum.influence
    captum_class = "ArnoldiInfluenceFunction"
    contract_params = {"projection_dim": 10, "arnoldi_dim": 20, "batch_size": 128}
    _parameter_constraints = {
        **_CaptumInfluence._parameter_constraints,
        "projection_dim": [Interval(int, 1, None)],
        "arnoldi_dim": [Interval(int, 2, None)],
        "arnoldi_tol": [Interval(float, 0, None, closed="neither")],
        "seed": [Interval(int, 0, None)],
    }

    def __init__(
        self,
        damping: float = 0.1,
        projection_dim: int = 50,
        arnoldi_dim: int = 200,
        arnoldi_tol: float = 1e-1,
        hessian_inverse_tol: float = 1e-4,
        layers: list[str] | None = None,
        last_layer_only: bool = False,
        batch_size: int = 256,
        sample_wise_grads_per_batch: bool | None = None,
        seed: int = 0,
    ) -> None:
        self._set_influence_params(damping, hessian_inverse_tol, layers, last_layer_only, batch_size, sample_wise_grads_per_batch)
        self.projection_dim = projection_dim
        self.arnoldi_dim = arnoldi_dim
        self.arnoldi_tol = float(arnoldi_tol)
        self.seed = seed

    def _fit(self) -> None:
        arnoldi_influence_function = self._captum_class()
        model = self._model_copy()
        try:  # captum seeds the global generator: fit() runs inside fork_rng
            self.captum_ = arnoldi_influence_function(
                model,
                projection_dim=self.projection_dim,
                seed=self.seed,
                arnoldi_dim=self.arnoldi_dim,
                arnoldi_tol=self.arnoldi_tol,
                **self._influence_kwargs(model, self._resolve_layers(model)),
            )
        except Exception as err:
            if "Arnoldi basis is empty" in str(err) or "no positive eigenvalues" in str(err):
                raise AttributorError(
                    f"Attributor {self.display_name!r}: captum's Arnoldi iteration failed ({err}). "
                    "Lower 'arnoldi_tol' or raise 'damping'."
                ) from err
            raise


@register
class CaptumSimilarity(_CaptumOutputLayer):
    """captum's ``SimilarityInfluence``: cosine similarity of the output layer's input embeddings.

    captum records a layer's *outputs*; to use the input of the output
    ``nn.Linear`` (as the built-in ``similarity``) the model copy handed to
    captum gets an identity module in front of that layer, whose output captum
    records. captum returns the top-k similar training points per test point;
    asking for all of them and scattering them back gives ``[n_test, n_train]``.
    Embeddings that are all zeros score 0 (captum's ``replace_nan=0``; its
    warning about them is silenced).

    Parameters
    ----------
    layer : str, optional
        Name of the output ``nn.Linear`` whose input is the embedding (default: the last one).
    batch_size : int
        Training examples per captum batch (activations are cached on disk per batch).
    """

    name = "captum.similarity"

    def _fit(self) -> None:
        influence = self._library("captum.influence")
        model = self._model_copy()
        layer_name, linear = last_linear(model, self.layer)
        tapped = _InputTap(linear)
        if layer_name:
            parent_name, _, child = layer_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, tapped)
            prefix = f"{layer_name}."
        else:  # the model is the linear layer itself
            model, prefix = tapped, ""
        tap_name = f"{prefix}tap"
        self.layer_ = layer_name
        # captum takes min(top_k, batch_size) from every training batch, which fails on a
        # shorter last batch: pad the training set with copies of its first example to a
        # multiple of batch_size; their scores are dropped.
        train = self._on(self.train_, self._device(model))
        pad = -len(train) % self.batch_size
        if pad:
            first = torch.zeros(pad, dtype=torch.long, device=train.inputs.device)
            train = Data(torch.cat([train.inputs, train.inputs[first]]), torch.cat([train.targets, train.targets[first]]))
        self._n_padded = len(train)
        self.captum_ = influence.SimilarityInfluence(
            model,
            [tap_name, f"{prefix}spare"],
            train,
            self._workdir(),
            batch_size=self.batch_size,
            replace_nan=0,
        )
        self._tap_name = tap_name

    def _attribute(self, test: Data) -> Tensor:
        model = self.captum_.module
        rows = []
        for start in range(0, len(test), self.batch_size):
            inputs = test.inputs[start : start + self.batch_size].to(self._device(model))
            result = self.captum_.influence(inputs, top_k=self._n_padded, load_src_from_disk=True)
            indices, values = result[self._tap_name]
            full = torch.zeros(len(inputs), self._n_padded, dtype=values.dtype)
            rows.append(full.scatter_(1, indices.cpu(), values.cpu())[:, : len(self.train_)])
        return torch.cat(rows, dim=0)
