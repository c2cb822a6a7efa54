"""Adapter for Quanda 0.5.0: any ``quanda.explainers.Explainer`` subclass as a tdaeval attributor.

Quanda's explainers take ``(model, train_dataset, ...)`` in their constructor
and return ``explain(test_data, targets) -> [n_test, n_train]`` in captum's
orientation (higher = the training example supports / is more relevant to
the test example), which is ours (docs: Methods §0): the adapter converts no
sign and no layout, and checks both.

Quanda is imported when the attributor is fitted. Importing quanda calls
``logging.basicConfig(level=INFO)``; the adapter undoes that (root level and
any handler the import added) so that fitting does not change the caller's
logging.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tdaeval.attributors.adapters._base import AdapterAttributor, extra_available
from tdaeval.attributors.base import register
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.params import Check, Interval, Options

__all__ = ["QuandaExplainer", "restore_root_logging"]

_OWNER = "QuandaExplainer ('quanda.explainer')"
_TARGETS = ("label", "predicted")
#: Constructor parameters the adapter fills in itself and that ``explainer_kwargs`` may not set.
_RESERVED = ("model", "train_dataset")


@contextmanager
def restore_root_logging() -> Iterator[None]:
    """Undo changes to the root logger made inside the block (its level, handlers added).

    Importing quanda configures logging at INFO (``logging.basicConfig``); the
    adapter imports it inside this block.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _check_explainer_spec(explainer: Any) -> bool:
    """True for None, a class or a ``"module:Name"`` string; else a ``ConfigError`` saying what was expected."""
    if explainer is None or isinstance(explainer, type):
        return True
    if isinstance(explainer, str):
        module, sep, name = explainer.partition(":")
        if sep and module and name and ":" not in name:
            return True
        raise ConfigError(
            f"The 'explainer' parameter of {_OWNER} must be a quanda Explainer subclass or a 'module:Name' string "
            f"(e.g. 'quanda.explainers.wrappers:CaptumSimilarity'). Got {explainer!r} instead."
        )
    hint = " Pass the class, not an instance: the adapter builds it at fit time." if hasattr(explainer, "explain") else ""
    raise ConfigError(
        f"The 'explainer' parameter of {_OWNER} must be a quanda Explainer subclass or a 'module:Name' string. "
        f"Got a {type(explainer).__name__} instead.{hint}"
    )


def _check_explainer_kwargs(explainer_kwargs: Any) -> bool:
    """True for None or a dict of string keys that leaves ``model`` and ``train_dataset`` alone; else a ``ConfigError``."""
    if explainer_kwargs is None:
        return True
    if not isinstance(explainer_kwargs, dict) or not all(isinstance(k, str) for k in explainer_kwargs):
        raise ConfigError(
            f"The 'explainer_kwargs' parameter of {_OWNER} must be a dict with string keys. "
            f"Got {explainer_kwargs!r} instead."
        )
    reserved = [k for k in _RESERVED if k in explainer_kwargs]
    if reserved:
        raise ConfigError(
            f"The 'explainer_kwargs' parameter of {_OWNER} may not set {reserved}: the adapter passes the fitted "
            f"model and the training data itself."
        )
    return True


@register
class QuandaExplainer(AdapterAttributor):
    """Any Quanda 0.5.0 explainer (a quanda.explainers.Explainer subclass) as an attributor.

    At :meth:`fit` the explainer class is built with Quanda's constructor
    conventions; at :meth:`attribute` its ``explain(test_data=..., targets=...)``
    is called on batches of test inputs and the ``[batch, n_train]`` results are
    stacked into ``[n_test, n_train]``. Quanda's explanations are in captum's
    orientation, higher = the training example supports the test example, as
    ours; no sign is changed.

    The constructor receives, for each of these names that its signature
    lists explicitly (not through ``**kwargs``), unless ``explainer_kwargs``
    sets it:

    * ``model``: a deep copy of the fitted model in eval mode (explainers load
      checkpoints into it; the fitted model is never modified);
    * ``train_dataset``: ``torch.utils.data.TensorDataset(train.inputs, train.targets)``,
      items ``(x, y)`` in training order;
    * ``checkpoints``: the checkpoints given to :meth:`fit`, each saved as a
      full ``state_dict`` file (the final model alone, learning rate 1.0, when
      none are given), and ``checkpoints_load_func``: loads one into a model
      and returns its learning rate (the TracIn weight);
    * ``cache_dir``: an absolute temporary directory owned by the attributor,
      new at each fit and deleted with it (Quanda fails on relative ones);
    * ``model_id``: ``"tdaeval"``; ``device``: the model's device;
      ``batch_size``: this attributor's ``batch_size``.

    Everything else (layers, loss functions, ``task``, projection sizes) is
    passed through ``explainer_kwargs``; the explainer's own defaults apply
    otherwise (e.g. cross-entropy losses in the captum wrappers).

    Parameters
    ----------
    explainer : type or str
        A ``quanda.explainers.Explainer`` subclass, or a ``"module:Name"``
        import path resolved at fit time, e.g.
        ``"quanda.explainers.wrappers:CaptumSimilarity"``. Required; ``None``
        (the default, so that the registry can list the class) is an error at fit.
    explainer_kwargs : dict, optional
        Keyword arguments for the explainer's constructor (copied at each fit).
        May not set ``model`` or ``train_dataset``.
    batch_size : int
        Test examples per ``explain`` call; also the constructor's
        ``batch_size`` (train-side batches) when it takes one.
    targets : {"label", "predicted"}
        What is passed as ``targets`` to ``explain``: the test labels, or the
        model's predicted classes (argmax of its outputs; classification only).
    """

    name = "quanda.explainer"
    library = "quanda"
    extra = "quanda"
    #: Cheap settings for the registry-wide contract tests (layer "0" is the first
    #: ``nn.Linear`` of both digits models).
    contract_params: ClassVar[dict[str, Any]] = {
        "explainer": "quanda.explainers.wrappers:CaptumSimilarity",
        "explainer_kwargs": {"layers": "0"},
        "batch_size": 64,
    }
    _parameter_constraints = {
        "explainer": [
            Check(_check_explainer_spec, "None, a quanda Explainer subclass or a 'module:Name' string", invalid=[42, "no.colon", ":Name"])
        ],
        "explainer_kwargs": [
            Check(_check_explainer_kwargs, "None or a dict with string keys", invalid=[[("layers", "0")], {"model": None}])
        ],
        "batch_size": [Interval(int, 1, None)],
        "targets": [Options(_TARGETS)],
    }

    def __init__(
        self,
        explainer: type | str | None = None,
        explainer_kwargs: dict[str, Any] | None = None,
        batch_size: int = 64,
        targets: str = "label",
    ) -> None:
        self.explainer = explainer
        self.explainer_kwargs = dict(explainer_kwargs or {})
        self.batch_size = batch_size
        self.targets = targets

    # -- quanda imports (logging left as the caller had it) ---------------------------------

    @classmethod
    def available(cls) -> bool:
        """Whether quanda can be imported here (importing it leaves logging unchanged)."""
        with restore_root_logging():
            return extra_available(cls.library)

    def _library(self, module: str | None = None) -> ModuleType:
        with restore_root_logging():
            return super()._library(module)

    def _explainer_class(self) -> type:
        """The explainer class: ``explainer`` itself, or its ``"module:Name"`` path imported.

        Raises
        ------
        ConfigError
            If ``explainer`` is unset, does not resolve, or is not a concrete
            ``quanda.explainers.Explainer`` subclass.
        """
        base = self._library("quanda.explainers").Explainer
        spec = self.explainer
        if spec is None:
            raise ConfigError(
                f"The 'explainer' parameter of {_OWNER} is required: pass a quanda Explainer subclass or a "
                f"'module:Name' string, e.g. explainer='quanda.explainers.wrappers:CaptumTracInCP'."
            )
        if isinstance(spec, str):
            module_name, _, attr = spec.partition(":")
            try:
                with restore_root_logging():
                    module = importlib.import_module(module_name)
            except ImportError as err:
                raise ConfigError(
                    f"The 'explainer' parameter of {_OWNER} names module {module_name!r}, which cannot be "
                    f"imported: {err}."
                ) from err
            try:
                cls = getattr(module, attr)
            except AttributeError as err:
                raise ConfigError(
                    f"The 'explainer' parameter of {_OWNER} names {spec!r}, but module {module_name!r} has no "
                    f"attribute {attr!r}."
                ) from err
        else:
            cls = spec
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(
                f"The 'explainer' parameter of {_OWNER} must be a subclass of quanda.explainers.Explainer. "
                f"Got {cls!r} instead."
            )
        if inspect.isabstract(cls):
            raise ConfigError(
                f"The 'explainer' parameter of {_OWNER} is {cls.__name__}, an abstract class; pass a concrete "
                f"Explainer subclass (one that implements explain)."
            )
        return cls

    # -- fit ------------------------------------------------------------------------------

    def _checkpoint_files(self, model: nn.Module, directory: str) -> tuple[list[Any], Any]:
        """Our checkpoints as ``state_dict`` files plus a load function returning the learning rate."""
        base_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        entries = self.checkpoints_ if self.checkpoints_ else [None]
        paths: list[Any] = []
        learning_rates: dict[str, float] = {}
        os.makedirs(directory, exist_ok=True)
        for i, checkpoint in enumerate(entries):
            if isinstance(checkpoint, (str, os.PathLike)):
                paths.append(os.fspath(checkpoint))  # a file the user saved: Quanda's loader reads it
                continue
            if checkpoint is None:
                state, lr = base_state, 1.0
            elif hasattr(checkpoint, "params") and hasattr(checkpoint, "lr"):
                unknown = sorted(set(checkpoint.params) - set(base_state))
                if unknown:
                    raise AttributorError(
                        f"Attributor {self.display_name!r}: checkpoint {i} holds parameters {unknown[:3]} that the "
                        f"model does not have."
                    )
                state = dict(base_state)
                state.update({k: v.detach().to("cpu") for k, v in checkpoint.params.items()})
                lr = float(checkpoint.lr)
            else:
                raise AttributorError(
                    f"Attributor {self.display_name!r} takes checkpoints as tdaeval.training.Checkpoint objects or "
                    f"file paths. Got a {type(checkpoint).__name__} at position {i}."
                )
            path = os.path.join(directory, f"checkpoint_{i:03d}.pt")
            torch.save(state, path)
            paths.append(path)
            learning_rates[path] = lr

        def load_checkpoint(target: nn.Module, path: str) -> float:
            """Load a checkpoint file into ``target``; return its learning rate (the TracIn weight)."""
            first = next(iter(target.parameters()), None)
            device = first.device if first is not None else "cpu"
            target.load_state_dict(torch.load(path, map_location=device, weights_only=True))
            return learning_rates.get(os.fspath(path), 1.0)

        return paths, load_checkpoint

    def _fit(self) -> None:
        cls = self._explainer_class()
        self.explainer_class_ = cls
        first = next(iter(self.model_.parameters()), None)
        self.device_ = first.device if first is not None else torch.device("cpu")
        cache_dir = os.path.abspath(self._workdir())
        model = copy.deepcopy(self.model_).eval()
        params = inspect.signature(cls.__init__).parameters
        named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        kwargs = dict(self.explainer_kwargs)

        supplied: dict[str, Any] = {
            "model": model,
            "train_dataset": torch.utils.data.TensorDataset(self.train_.inputs, self.train_.targets),
            "model_id": "tdaeval",
            "device": str(self.device_),
            "batch_size": self.batch_size,
            "cache_dir": cache_dir,
        }
        if "checkpoints" in named and "checkpoints" not in kwargs:
            paths, load = self._checkpoint_files(self.model_, os.path.join(cache_dir, "checkpoints"))
            supplied["checkpoints"] = paths
            supplied["checkpoints_load_func"] = load
        if isinstance(kwargs.get("cache_dir"), (str, os.PathLike)):
            kwargs["cache_dir"] = os.path.abspath(kwargs["cache_dir"])  # a relative one fails with a doubled path
        for key, value in supplied.items():
            if key in named and key not in kwargs:
                kwargs[key] = value

        missing = [
            n
            for n in named
            if n != "self" and params[n].default is inspect.Parameter.empty and n not in kwargs
        ]
        if missing:
            raise ConfigError(
                f"{cls.__name__} needs the constructor argument(s) {missing}, which {_OWNER} does not supply: "
                f"pass them in its 'explainer_kwargs' parameter."
            )
        try:
            self.explainer_ = cls(**kwargs)
        except Exception as err:
            hint = ""
            if not getattr(cls, "accepted_tasks", None):
                hint = (
                    f" {cls.__name__}.accepted_tasks is empty: a custom Explainer must set it "
                    f"(e.g. accepted_tasks = ['image_classification'])."
                )
            raise AttributorError(
                f"Attributor {self.display_name!r} could not build {cls.__name__} (parameter 'explainer'): "
                f"{type(err).__name__}: {err}.{hint}"
            ) from err

    # -- attribute ------------------------------------------------------------------------

    @torch.no_grad()
    def _predicted(self, inputs: Tensor) -> Tensor:
        self.model_.eval()
        outputs = self.model_(inputs.to(self.device_))
        if outputs.ndim != 2:
            raise AttributorError(
                f"Attributor {self.display_name!r}: targets='predicted' needs class scores of shape [n, k]; the model "
                f"returned {tuple(outputs.shape)}. Use targets='label' (parameter 'targets')."
            )
        return outputs.argmax(dim=1)

    def _attribute(self, test: Data) -> Tensor:
        n_train = len(self.train_)
        blocks = []
        for start in range(0, len(test), self.batch_size):
            inputs = test.inputs[start : start + self.batch_size].to(self.device_)
            if self.targets == "label":
                targets = test.targets[start : start + self.batch_size].to(self.device_)
            else:
                targets = self._predicted(inputs)
            block = self.explainer_.explain(test_data=inputs, targets=targets)
            if not isinstance(block, Tensor):
                raise AttributorError(
                    f"Attributor {self.display_name!r}: {self.explainer_class_.__name__}.explain returned a "
                    f"{type(block).__name__}; expected a torch.Tensor [batch, n_train]."
                )
            if tuple(block.shape) != (len(inputs), n_train):
                hint = " (it looks transposed)" if tuple(block.shape) == (n_train, len(inputs)) else ""
                raise AttributorError(
                    f"Attributor {self.display_name!r}: {self.explainer_class_.__name__}.explain returned shape "
                    f"{tuple(block.shape)} for {len(inputs)} test examples; expected [{len(inputs)}, {n_train}]{hint}."
                )
            blocks.append(block.detach().to("cpu", torch.float32))
        return torch.cat(blocks)
