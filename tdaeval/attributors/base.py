"""The ``Attributor`` plug-in point, the registry, and result validation."""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.params import Check, Instance, ValidatedInit, check_int_at_least
from tdaeval.registry import Registry, import_object
from tdaeval.scores import Attribution  # re-exported: the score type lives in a neutral module
from tdaeval.task import Task

__all__ = [
    "ATTRIBUTORS",
    "Attribution",
    "Attributor",
    "FunctionAttributor",
    "register",
    "get",
    "names",
    "resolve",
    "validate_scores",
]

def _is_device_name(value: Any) -> bool:
    return isinstance(value, str) and torch.device(value) is not None


#: The constraint of a ``device`` parameter: None, a torch device or its name ("cpu", "cuda:0").
DEVICE_CONSTRAINT = [
    None,
    Instance(torch.device),
    Check(_is_device_name, "a torch device such as 'cpu' or 'cuda:0'", invalid=["no-such-device", 3]),
]


class Attributor(ValidatedInit, ABC):
    """Scores how much each training example supports each test example.

    Subclasses set ``name``, take every parameter explicitly in ``__init__``,
    declare what each accepts in ``_parameter_constraints`` and implement
    :meth:`_attribute` (and :meth:`_fit` for train-side work worth caching).
    The constructor's arguments are checked against that table before its
    body runs (:class:`tdaeval.params.ValidatedInit`); :meth:`attribute`
    validates what the subclass returns.

    Scores are ``[n_test, n_train]``; a positive score means the training
    example supports the test example's measurement (docs: Methods §0).
    """

    name: ClassVar[str] = "attributor"
    #: Constructor parameter → the forms it accepts (:mod:`tdaeval.params`); checked at construction.
    _parameter_constraints: ClassVar[dict[str, Any]] = {}
    #: The name shown in messages and reports when not :attr:`name` (set by :meth:`renamed`); read it as :attr:`display_name`.
    _display_name: str | None = None
    #: Whether :meth:`fit` needs the checkpoints of the training run (read it through :meth:`needs_checkpoints`).
    requires_checkpoints: ClassVar[bool] = False
    #: Constructor parameters that make the attributor cheap enough for the common tests run over every
    #: registered attributor (e.g. a smaller projection or two ensemble members); empty when its defaults are.
    contract_params: ClassVar[dict[str, Any]] = {}
    #: What the attributor spent beyond its own fit and attribution, for attributors that track it (ensembles,
    #: the seed posterior): ``members``, ``training_seconds`` (extra models trained), ``serving_seconds``
    #: (fitting and attributing with the members, accumulated over calls) and ``storage_bytes`` (what serving
    #: again needs stored). Empty for the others; :meth:`fit` starts each fit with an empty dict of the
    #: instance's own; results record the numbers next to the measured times.
    cost_: dict[str, float] = {}

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
            Checkpoints of the training run; required when
            :meth:`needs_checkpoints` (``tracin``, ``source``…), optional for
            some others.

        Returns
        -------
        Attributor
            ``self``.

        Raises
        ------
        AttributorError
            When :meth:`needs_checkpoints` and none are given, or when :meth:`why_unsupported` gives a reason.
        """
        reason = self.why_unsupported(task, train)
        if reason is not None:
            raise AttributorError(reason)
        self.task_ = task
        self.model_ = model
        self.train_ = train
        self.checkpoints_ = list(checkpoints) if checkpoints is not None else None
        self.cost_ = {}
        if self.needs_checkpoints():
            self._checkpoints()
        self._fit()
        return self

    def why_unsupported(self, task: Task, train: Data) -> str | None:
        """One line saying why this attributor cannot explain ``task`` on ``train``; None when it can (the default).

        :meth:`fit` raises an ``AttributorError`` with this line before doing any work, so an attributor that
        is defined on some tasks only (``bm25`` needs token sequences, ``entailment`` a task with known
        proponents) refuses the others in one line instead of failing deep inside.
        """
        return None

    def needs_checkpoints(self) -> bool:
        """Whether :meth:`fit` needs the checkpoints of the training run.

        :attr:`requires_checkpoints` by default; attributors where a parameter
        decides (``trak`` with ``use_checkpoints=True``) override this.
        """
        return self.requires_checkpoints

    def _checkpoints(self) -> list[Any]:
        """The checkpoints passed to :meth:`fit`, or an ``AttributorError`` naming the attributor when there are none."""
        if not self.checkpoints_:
            raise AttributorError(
                f"Attributor {self.display_name!r} needs checkpoints of the training run: pass checkpoints=[...] to fit() "
                "(tdaeval.training.train_model(..., n_checkpoints=k) records them)."
            )
        return self.checkpoints_

    def _trained_checkpoints(self) -> list[tuple[int, Any]]:
        """``(index, checkpoint)`` of the checkpoints passed to :meth:`fit` other than epoch 0, in the order given.

        An epoch-0 checkpoint (``train_model(..., include_initial=True)``: the initial parameters, a fine-tuning task's
        base model; recorded with lr 0) is where training started, not a point it trained to: attributors over the
        run's trajectory skip it. Only epoch-0 checkpoints is an ``AttributorError`` naming the attributor.
        """
        trained = [(k, c) for k, c in enumerate(self._checkpoints()) if getattr(c, "epoch", None) != 0]
        if not trained:
            raise AttributorError(f"Attributor {self.display_name!r} needs a checkpoint after at least one epoch of training; "
                                  "got only epoch-0 (initial) checkpoints.")
        return trained

    def _checkpoint_params(self, index: int, checkpoint: Any, *, exact: bool = False, bare_dict: bool = False) -> dict[str, Tensor]:
        """The parameters of checkpoint ``index`` passed to :meth:`fit`, checked by name against the fitted model's.

        Parameters
        ----------
        index : int
            The checkpoint's position (named in messages).
        checkpoint : Checkpoint
            A :class:`~tdaeval.training.Checkpoint`, or anything with a ``params`` dict.
        exact : bool
            Require all of the model's parameters (default: some of them, the rest held at the model's values).
        bare_dict : bool
            Also accept the parameters dict itself in place of a checkpoint.

        Returns
        -------
        dict of str to Tensor
            The checkpoint's ``params``, as given.

        Raises
        ------
        AttributorError
            Naming the attributor and the checkpoint: no ``params`` dict, a name the model does not have, or (``exact``) one it lacks.
        """
        params = checkpoint if bare_dict and isinstance(checkpoint, dict) else getattr(checkpoint, "params", None)
        if not isinstance(params, dict):
            accepted = "a tdaeval.training.Checkpoint" + (" or a dict of parameters" if bare_dict else " (with a 'params' dict)")
            raise AttributorError(
                f"Attributor {self.display_name!r}: checkpoint {index} must be {accepted}. Got {type(checkpoint).__name__}."
            )
        names = {name for name, _ in self.model_.named_parameters()}
        unknown = sorted(set(params) - names)
        if unknown:
            raise AttributorError(
                f"Attributor {self.display_name!r}: checkpoint {index} holds parameters the model does not have: {unknown[:5]}."
            )
        missing = sorted(names - set(params)) if exact else []
        if missing:
            raise AttributorError(f"Attributor {self.display_name!r}: checkpoint {index} lacks the model's parameters {missing[:5]}.")
        return params

    def _checkpoint_model(self, index: int, checkpoint: Any, model: nn.Module | None = None) -> nn.Module:
        """A deep copy of ``model`` (default: the fitted model) holding checkpoint ``index``'s parameters.

        The checkpoint is checked by :meth:`_checkpoint_params` with ``exact=True``; the
        caller's model is never changed.
        """
        params = self._checkpoint_params(index, checkpoint, exact=True)
        copied = copy.deepcopy(self.model_ if model is None else model)
        with torch.no_grad():
            for name, param in copied.named_parameters():
                param.copy_(params[name].to(param.device, param.dtype))
        return copied

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
        return self._display_name or self.name

    def renamed(self, name: str) -> "Attributor":
        """A shallow copy shown as ``name`` in messages and reports; ``self`` keeps its own name.

        The copy shares everything else (parameters, fitted state).
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Attributor.renamed expects a non-empty string 'name'. Got {name!r}.")
        twin = copy.copy(self)
        twin._display_name = name
        return twin

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
    _parameter_constraints = {
        "fn": [Check(callable, "a function (model, train, test) -> Tensor", invalid=[42])],
        "name": [None, Instance(str)],
    }

    def __init__(self, fn: Callable[[nn.Module, Data, Data], Tensor], name: str | None = None) -> None:
        self.fn = fn
        self._display_name = name or getattr(fn, "__name__", "function")

    def _attribute(self, test: Data) -> Tensor:
        return self.fn(self.model_, self.train_, test)


#: The attributors by name (``tdaeval ls``); :func:`register`, :func:`get` and :func:`names` read and write it.
ATTRIBUTORS: Registry[Attributor] = Registry("attributor", Attributor)


def register(cls: type[Attributor] | None = None, *, name: str | None = None) -> Any:
    """Class decorator adding an attributor to the registry under ``cls.name`` (or ``name``; a taken name is an error)."""
    return ATTRIBUTORS.register(cls, name=name)


def names() -> list[str]:
    """Registered attributor names, sorted."""
    return ATTRIBUTORS.names()


def get(name: str, **params: Any) -> Attributor:
    """A registered attributor by name, or a ``"module:Name"`` import path, built with ``params``.

    A path may name an ``Attributor`` subclass (built with ``params``), an
    ``Attributor`` instance or a function ``(model, train, test) -> Tensor``
    (neither takes ``params``; the function is reported under the path).
    """
    if isinstance(name, str) and ":" in name:
        obj = import_object(name, "attributor")
        if isinstance(obj, Attributor):
            if params:
                raise ConfigError(f"Attributor {name!r} is an instance and takes no parameters. Got {sorted(params)}; "
                                  "point at its class to pass parameters.")
            return obj
        if callable(obj) and not ATTRIBUTORS.is_member(obj):
            if params:
                raise ConfigError(f"Attributor {name!r} is a plain function and takes no parameters. Got {sorted(params)}.")
            return FunctionAttributor(obj, name=name)
        if not ATTRIBUTORS.is_member(obj):
            raise ConfigError(f"{name!r} is neither an Attributor subclass nor a function (got {type(obj).__name__}).")
        return ATTRIBUTORS.build(obj, name, params)
    return ATTRIBUTORS.create(name, **params)


def resolve(spec: Attributor | Callable | str, name: str | None = None) -> Attributor:
    """Turn an instance, a plain function or a name/``"module:Name"`` string into an Attributor.

    With ``name``, the result is shown under it: a renamed copy (:meth:`Attributor.renamed`), never the caller's instance renamed.
    """
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
        attributor = attributor.renamed(name)
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
