"""The ``Attributor`` plug-in point, the registry, and result validation."""

from __future__ import annotations

import copy
import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError, check_int_at_least
from tdaeval.task import Task

__all__ = [
    "Attribution",
    "Attributor",
    "FunctionAttributor",
    "register",
    "get",
    "names",
    "resolve",
    "validate_scores",
]

_REGISTRY: dict[str, type["Attributor"]] = {}


@dataclass(frozen=True)
class Attribution:
    """Scores with their spread over training noise (what :class:`~tdaeval.attributors.seeds.SeedPosterior` returns).

    Metrics given an ``Attribution`` use its ``mean``.

    Attributes
    ----------
    mean : Tensor
        ``[n_test, n_train]`` mean score over samples (seeds).
    std : Tensor
        ``[n_test, n_train]`` sample standard deviation (ddof = 1).
    n_samples : int
        Number of samples (seeds) behind each entry.
    p_value : Tensor
        ``[n_test, n_train]`` p-value of "the score is zero" for each pair.
    test : str
        How ``p_value`` was computed: ``"t"`` (one-sample t-test of the mean,
        ``S − 1`` degrees of freedom; calibrated) or ``"snr"`` (the paper's
        per-draw signal-to-noise test, ``2(1 − Φ(|μ/σ|))``; not calibrated
        under the null). See :func:`tdaeval.attributors.seeds.seed_statistics`.
    samples : Tensor, optional
        ``[S, n_test, n_train]``: the scores of each sample (seed), for
        cross-seed stability metrics.
    """

    mean: Tensor
    std: Tensor
    n_samples: int
    p_value: Tensor
    test: str = "t"
    samples: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        """``[n_test, n_train]``."""
        return self.mean.shape

    def reliable(self, alpha: float = 0.05) -> Tensor:
        """``[n_test, n_train]`` bool: pairs whose p-value is below ``alpha``."""
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"The 'alpha' parameter of Attribution.reliable must be in (0, 1). Got {alpha!r} instead.")
        return self.p_value < alpha


class Attributor(ABC):
    """Scores how much each training example supports each test example.

    Subclasses set ``name``, take every parameter explicitly in ``__init__``
    and implement :meth:`_attribute` (and :meth:`_fit` for train-side work
    worth caching). :meth:`attribute` validates what they return.

    Scores are ``[n_test, n_train]``; a positive score means the training
    example supports the test example's measurement (docs: Methods §0).
    """

    name: ClassVar[str] = "attributor"

    def fit(
        self,
        task: Task,
        model: nn.Module,
        train: Data,
        checkpoints: Sequence[Any] | None = None,
    ) -> "Attributor":
        """Remember the task, the trained model and the training data; do train-side work.

        Parameters
        ----------
        task : Task
            Supplies the loss and the measurement.
        model : nn.Module
            The trained model to explain (left in eval mode).
        train : Data
            The ``n_train`` training examples scores refer to, in order.
        checkpoints : sequence of Checkpoint, optional
            Checkpoints of the training run (used by ``tracin``).

        Returns
        -------
        Attributor
            ``self``.
        """
        self.task_ = task
        self.model_ = model
        self.train_ = train
        self.checkpoints_ = list(checkpoints) if checkpoints is not None else None
        self._fit()
        return self

    def _fit(self) -> None:
        """Train-side work (per-sample gradients, factorizations); optional."""

    def attribute(self, test: Data) -> Tensor | Attribution:
        """Scores ``[n_test, n_train]`` for the ``test`` examples (or an :class:`Attribution`), validated."""
        self._check_test(test, "attribute")
        scores = self._attribute(test)
        if isinstance(scores, Attribution):
            return validate_attribution(scores, len(test), len(self.train_), self.display_name)
        return validate_scores(scores, len(test), len(self.train_), self.display_name)

    def attribute_chunks(self, test: Data, chunk_size: int = 8192) -> Iterator[tuple[int, Tensor]]:
        """Scores in training-point chunks: ``(start, Tensor[n_test, chunk])`` for ``start = 0, chunk_size, …``.

        Attributors that can score a chunk of training points on its own
        (:attr:`streams`: ``grad_dot``, ``grad_cos``, ``tracin``) never hold more than one
        chunk of scores; the others compute the full matrix once and yield its
        slices (of an :class:`Attribution`, the mean). Each chunk is validated.
        """
        check_int_at_least("chunk_size", f"{self.display_name}.attribute_chunks", chunk_size, 1)
        self._check_test(test, "attribute_chunks")
        return self._stream(test, chunk_size) if self.streams else self._slices(test, chunk_size)

    def _stream(self, test: Data, chunk_size: int) -> Iterator[tuple[int, Tensor]]:
        n_train = len(self.train_)
        prepared = self._prepare_chunks(test)
        for start in range(0, n_train, chunk_size):
            stop = min(start + chunk_size, n_train)
            yield start, validate_scores(self._attribute_chunk(prepared, start, stop), len(test), stop - start, self.display_name)

    def _slices(self, test: Data, chunk_size: int) -> Iterator[tuple[int, Tensor]]:
        full = self.attribute(test)
        full = full.mean if isinstance(full, Attribution) else full
        for start in range(0, full.shape[1], chunk_size):
            yield start, full[:, start : start + chunk_size]

    @property
    def streams(self) -> bool:
        """Whether :meth:`attribute_chunks` scores chunks without the full matrix."""
        return type(self)._attribute_chunk is not Attributor._attribute_chunk

    def _prepare_chunks(self, test: Data) -> Any:
        """Test-side work shared by every chunk (streaming attributors override)."""
        return test

    def _attribute_chunk(self, prepared: Any, start: int, stop: int) -> Tensor:
        """Scores ``[n_test, stop - start]`` for training points ``start:stop`` (streaming attributors override)."""
        raise NotImplementedError

    @abstractmethod
    def _attribute(self, test: Data) -> Tensor:
        """Unvalidated scores ``[n_test, n_train]``."""

    def _check_test(self, test: Data, method: str) -> None:
        """Fitted, and ``test`` has the training inputs' per-example shape."""
        self._require_fitted(method)
        if tuple(test.inputs.shape[1:]) != tuple(self.train_.inputs.shape[1:]):
            raise AttributorError(
                f"Attributor {self.display_name!r} was fitted on inputs of shape [n, {', '.join(map(str, self.train_.inputs.shape[1:]))}] "
                f"but got test inputs of shape {tuple(test.inputs.shape)}."
            )

    def _require_fitted(self, method: str) -> None:
        if not hasattr(self, "model_"):
            raise AttributorError(f"Attributor {self.display_name!r} must be fitted before {method}(); call fit() first.")

    def self_influence(self, chunk_size: int = 256) -> Tensor:
        """``[n_train]``: each training point's score for itself as a test point.

        The diagonal of ``attribute(train)``, computed ``chunk_size`` training
        points at a time, so memory holds ``chunk_size × n_train`` scores, never
        ``n_train²``. Attributors with a cheaper closed form override it.
        """
        self._require_fitted("self_influence")
        check_int_at_least("chunk_size", "self_influence", chunk_size, 1)
        n = len(self.train_)
        out = torch.empty(n, dtype=torch.float32)
        for start in range(0, n, chunk_size):
            index = torch.arange(start, min(start + chunk_size, n))
            scores = self.attribute(self.train_.subset(index))
            scores = scores.mean if isinstance(scores, Attribution) else scores
            out[index] = scores[torch.arange(len(index)), index]
        return out

    @property
    def display_name(self) -> str:
        """Name used in messages and reports."""
        return getattr(self, "_display_name", None) or self.name

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters and their current values (for provenance)."""
        params = {}
        for pname in inspect.signature(type(self).__init__).parameters:
            if pname != "self" and hasattr(self, pname):
                value = getattr(self, pname)
                params[pname] = value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)
        return params

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class FunctionAttributor(Attributor):
    """Wraps a plain function ``fn(model, train, test) -> Tensor[n_test, n_train]``.

    Parameters
    ----------
    fn : callable
        Called as ``fn(model, train_data, test_data)`` with :class:`~tdaeval.datasets.Data` sets.
    name : str, optional
        Display name; defaults to the function's name.
    """

    name = "function"

    def __init__(self, fn: Callable[[nn.Module, Data, Data], Tensor], name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"FunctionAttributor expects a callable 'fn'. Got {type(fn).__name__}.")
        self.fn = fn
        self._display_name = name or getattr(fn, "__name__", "function")

    def _attribute(self, test: Data) -> Tensor:
        return self.fn(self.model_, self.train_, test)


def register(cls: type[Attributor]) -> type[Attributor]:
    """Class decorator adding an attributor to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Attributor)):
        raise ConfigError(f"register expects an Attributor subclass. Got {cls!r}.")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigError(f"An attributor named {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__}).")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Registered attributor names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> Attributor:
    """A registered attributor by name, or a ``"module:Name"`` import path, built with ``params``."""
    if not isinstance(name, str):
        raise ConfigError(f"Attributor names must be strings. Got {type(name).__name__}.")
    if ":" in name:
        return _from_import_path(name, params)
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown attributor {name!r}. Expected one of: {', '.join(names())}, or 'module:Name'.")
    cls = _REGISTRY[name]
    try:
        return cls(**params)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(
            f"Invalid parameters {sorted(params)} for attributor {name!r}: {err}. Accepted: {accepted}."
        ) from err


def _from_import_path(path: str, params: dict[str, Any]) -> Attributor:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        from tdaeval._imports import import_failure

        raise ConfigError(f"Cannot import module {module_name!r} for attributor {path!r}: {import_failure(module_name, err)}.") from err
    try:
        obj = getattr(module, attr)
    except AttributeError as err:
        raise ConfigError(f"Module {module_name!r} has no attribute {attr!r} (attributor {path!r}).") from err
    if isinstance(obj, type) and issubclass(obj, Attributor):
        try:
            return obj(**params)
        except TypeError as err:
            raise ConfigError(f"Invalid parameters {sorted(params)} for attributor {path!r}: {err}.") from err
    if isinstance(obj, Attributor):
        if params:
            raise ConfigError(f"Attributor {path!r} is an instance and takes no parameters. Got {sorted(params)}; point at its class to pass parameters.")
        return obj
    if callable(obj):
        if params:
            raise ConfigError(f"Attributor {path!r} is a plain function and takes no parameters. Got {sorted(params)}.")
        return FunctionAttributor(obj, name=path)
    raise ConfigError(f"{path!r} is neither an Attributor subclass nor a function (got {type(obj).__name__}).")


def resolve(spec: Attributor | Callable | str, name: str | None = None) -> Attributor:
    """Turn an instance, a plain function or a name/``"module:Name"`` string into an Attributor."""
    if isinstance(spec, Attributor):
        attributor = spec
    elif isinstance(spec, str):
        attributor = get(spec)
    elif isinstance(spec, type) and issubclass(spec, Attributor):
        attributor = spec()
    elif callable(spec):
        attributor = FunctionAttributor(spec, name=name)
    else:
        raise ConfigError(
            f"Attributor {name or spec!r} must be an Attributor, a function (model, train, test) -> Tensor, "
            f"or a registered name. Got {type(spec).__name__}."
        )
    if name is not None and name != attributor.display_name:
        attributor = copy.copy(attributor)  # never rename an instance the caller still holds
        attributor._display_name = name
    return attributor


def validate_scores(scores: Any, n_test: int, n_train: int, attributor: str) -> Tensor:
    """Check an attributor's output: a finite floating tensor ``[n_test, n_train]``.

    Returns
    -------
    Tensor
        The scores as float32 on the CPU.
    """
    if not isinstance(scores, Tensor):
        raise AttributorError(
            f"Attributor {attributor!r} must return a torch.Tensor of shape [n_test={n_test}, n_train={n_train}]. "
            f"Got {type(scores).__name__}."
        )
    if tuple(scores.shape) != (n_test, n_train):
        hint = " (it looks transposed: scores are [n_test, n_train])" if tuple(scores.shape) == (n_train, n_test) else ""
        raise AttributorError(
            f"Attributor {attributor!r} returned scores of shape {tuple(scores.shape)}; "
            f"expected [n_test={n_test}, n_train={n_train}]{hint}."
        )
    if not torch.is_floating_point(scores):
        raise AttributorError(f"Attributor {attributor!r} returned scores of dtype {scores.dtype}; expected a floating dtype.")
    original = scores.detach()
    scores = original.to("cpu", torch.float32)  # checked after the cast: finite float64 beyond ±3.4e38 becomes inf
    finite = torch.isfinite(scores)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        overflow = int((~finite & torch.isfinite(original).cpu()).sum()) if original.dtype != torch.float32 else 0
        detail = f"; {overflow} of them finite in {original.dtype} but beyond float32's range (±3.4e38): rescale the scores" if overflow else ""
        raise AttributorError(
            f"Attributor {attributor!r} returned {bad} non-finite score(s) (NaN or inf) out of {scores.numel()}{detail}."
        )
    return scores


def validate_attribution(result: Attribution, n_test: int, n_train: int, attributor: str) -> Attribution:
    """Check an :class:`Attribution`: finite ``mean`` and ``std >= 0`` ``[n_test, n_train]``, p-values in [0, 1]."""
    mean = validate_scores(result.mean, n_test, n_train, attributor)
    std = validate_scores(result.std, n_test, n_train, attributor)
    p_value = validate_scores(result.p_value, n_test, n_train, attributor)
    if bool((std < 0).any()):
        raise AttributorError(f"Attributor {attributor!r} returned a negative standard deviation.")
    if bool(((p_value < 0) | (p_value > 1)).any()):
        raise AttributorError(f"Attributor {attributor!r} returned p-values outside [0, 1].")
    if not (isinstance(result.n_samples, int) and result.n_samples >= 2):
        raise AttributorError(f"Attributor {attributor!r} returned an Attribution of {result.n_samples!r} samples; expected >= 2.")
    samples = result.samples
    if samples is not None:
        if tuple(samples.shape) != (result.n_samples, n_test, n_train):
            raise AttributorError(
                f"Attributor {attributor!r} returned samples of shape {tuple(samples.shape)}; "
                f"expected [n_samples={result.n_samples}, n_test={n_test}, n_train={n_train}]."
            )
        samples = torch.stack([validate_scores(row, n_test, n_train, attributor) for row in samples])
    return Attribution(mean, std, result.n_samples, p_value, result.test, samples)
