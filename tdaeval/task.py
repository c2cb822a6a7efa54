"""The ``Task`` contract: what is being explained.

A task owns its data, builds a model from a seed, trains it on a subset of the
training indices with a seed, and defines the measurement ``f(z; θ)`` whose
changes attributors explain (docs: Methods §0).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tdaeval.datasets import Data
from tdaeval.errors import ConfigError, TdaevalError
from tdaeval.hashing import canonical_json, sha256_json  # re-exported: cache keys used to live here
from tdaeval.params import check_int_at_least
from tdaeval.training import train_model

__all__ = ["ControlledSetting", "Task", "TrainRecipe", "canonical_json", "sha256_json"]


@dataclass(frozen=True)
class TrainRecipe:
    """Mini-batch SGD with momentum, the recipe every built-in task trains with.

    Attributes
    ----------
    epochs : int
        Passes over the training subset.
    batch_size : int
        Examples per step; the last batch of an epoch may be smaller.
    lr : float
        Learning rate (constant).
    momentum : float
        Heavy-ball momentum as in ``torch.optim.SGD`` (no dampening).
    weight_decay : float
        L2 penalty added to the gradient as in ``torch.optim.SGD``.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size)):
            check_int_at_least(name, "TrainRecipe", value, 1)
        if not self.lr > 0:
            raise ConfigError(f"The 'lr' parameter of TrainRecipe must be > 0. Got {self.lr!r} instead.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"The 'momentum' parameter of TrainRecipe must be in [0, 1). Got {self.momentum!r} instead.")
        if self.weight_decay < 0:
            raise ConfigError(
                f"The 'weight_decay' parameter of TrainRecipe must be >= 0. Got {self.weight_decay!r} instead."
            )


@dataclass(frozen=True, eq=False)
class ControlledSetting:
    """A known, seeded transformation of a task's data: the ground truth of a controlled-setting metric.

    Built by :mod:`tdaeval.tasks.controlled` (``with_flipped_labels`` and the
    others) and stored as ``task.setting``; a metric reads the field it needs
    and raises a ``ConfigError`` naming the setting to apply when it is None.
    Applying a setting to a task that already has one stacks them: the new
    setting keeps the earlier one's fields it does not replace and its
    records (``history``), so :attr:`transforms` lists every step in order.

    Attributes
    ----------
    kind : str
        What was done (``"flip_labels"``, ``"group_labels"``, ``"shortcut"``, ``"mixed_dataset"``).
    record : dict
        This step's parameters (JSON-ready; provenance).
    history : tuple of dict
        The records of the settings applied before this one, in order.
    flipped : Tensor, optional
        ``[n_train]`` bool, training points whose label was flipped.
    subclass_train, subclass_test : Tensor, optional
        ``[n_train]`` / ``[n_test]`` original labels of a grouped-labels task.
    groups : Tensor, optional
        ``[n_classes]`` superclass of each original class.
    shortcut : Tensor, optional
        ``[n_train]`` bool, training images carrying the trigger.
    original_test_labels : Tensor, optional
        ``[n_test]`` labels of the triggered test images before relabelling.
    foreign : Tensor, optional
        ``[n_train]`` bool, foreign images mixed into the training set.
    """

    kind: str
    record: dict[str, Any]
    history: tuple[dict[str, Any], ...] = ()
    flipped: Tensor | None = None
    subclass_train: Tensor | None = None
    subclass_test: Tensor | None = None
    groups: Tensor | None = None
    shortcut: Tensor | None = None
    original_test_labels: Tensor | None = None
    foreign: Tensor | None = None
    #: Field names holding tensors (the typed ground truths).
    FIELDS: ClassVar[tuple[str, ...]] = ("flipped", "subclass_train", "subclass_test", "groups", "shortcut",
                                         "original_test_labels", "foreign")

    @property
    def transforms(self) -> list[dict[str, Any]]:
        """Every step's record in the order applied (earlier settings first)."""
        return [*self.history, self.record]

    def then(self, kind: str, record: dict[str, Any], **fields: Tensor) -> "ControlledSetting":
        """This setting followed by another step: its record appended, ``fields`` replacing this one's."""
        unknown = sorted(set(fields) - set(self.FIELDS))
        if unknown:
            raise ConfigError(f"ControlledSetting has no field(s) {unknown}. Expected some of {list(self.FIELDS)}.")
        return dataclasses.replace(self, kind=kind, record=record, history=tuple(self.transforms), **fields)


class Task(ABC):
    """What is being explained: data, model factory, training recipe, measurement.

    Subclasses set ``train_data``, ``test_data`` and ``recipe`` in ``__init__``
    and implement :meth:`build_model`, :meth:`loss`, :meth:`measurement` and
    :meth:`config`. A task that trains differently overrides :meth:`train`;
    batched training then falls back to calling it one model at a time.

    Attributes
    ----------
    higher_is_better : bool
        Direction of the measurement (True for the classification margin).
    measurement_name : str
        Short name of the measurement, recorded in provenance.
    setting : ControlledSetting or None
        The controlled setting applied to the data (:mod:`tdaeval.tasks.controlled`); None for a plain task.
    """

    name: ClassVar[str] = "task"
    higher_is_better: ClassVar[bool] = True
    measurement_name: ClassVar[str] = "measurement"
    setting: ControlledSetting | None = None

    train_data: Data
    test_data: Data
    recipe: TrainRecipe

    @abstractmethod
    def build_model(self, seed: int) -> nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""

    @abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-example training loss ``[n]`` from model outputs ``[n, ...]``."""

    @abstractmethod
    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-example measurement ``f(z; θ)`` ``[n]`` from model outputs."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable parameters that determine the task (not the data)."""

    def train(self, model: nn.Module, train_indices: Tensor, seed: int) -> nn.Module:
        """Train ``model`` in place on ``train_data[train_indices]``; return it in eval mode."""
        return train_model(self, model, train_indices, seed).model

    def sample_targets(self, outputs: Tensor, generator: torch.Generator) -> Tensor:
        """Targets drawn from the model's predictive distribution given ``outputs`` ``[n, ...]`` (for the Fisher).

        Optional: a task that can sample overrides it (classification: labels
        from ``softmax(outputs)``); callers check :attr:`supports_sampling`
        first. The default raises a ``TdaevalError``.

        Returns
        -------
        Tensor
            ``[n, ...]`` targets, like ``train_data.targets``.
        """
        raise TdaevalError(f"{type(self).__name__} cannot sample targets from its model: it does not override Task.sample_targets.")

    def positions(self, data: Data) -> Tensor | None:
        """Which positions of sequence examples carry the measurement and the loss, ``[n, T]`` bool; None for
        examples that are not sequences (the default).

        ``similarity`` mean-pools ``[n, T, d]`` features over these positions (``representer`` sums per-position
        terms and does not need them); a sequence task overrides it (the language-model task: where the target is not
        the ignore index).
        """
        return None

    @property
    def supports_sampling(self) -> bool:
        """Whether :meth:`sample_targets` is implemented (else attributors use the observed targets)."""
        return type(self).sample_targets is not Task.sample_targets

    @property
    def trains_with_recipe(self) -> bool:
        """Whether the task trains with :attr:`recipe` (it does not override :meth:`train`): then many models train at once
        and the reference model's checkpoints are recorded; else :meth:`train` is called one model at a time."""
        return type(self).train is Task.train

    @property
    def transforms(self) -> list[dict[str, Any]]:
        """The controlled setting's records in order (provenance); empty without a setting."""
        return [] if self.setting is None else self.setting.transforms

    @torch.no_grad()
    def measure(self, model: nn.Module, data: Data | None = None, chunk_size: int = 4096) -> Tensor:
        """Measurement of ``model`` (in eval mode) on ``data`` (default: the test split).

        Returns
        -------
        Tensor
            ``[n]`` float32.
        """
        data = self.test_data if data is None else data
        was_training = model.training
        model.eval()
        device = next(iter(model.parameters())).device
        values = []
        for start in range(0, len(data), chunk_size):
            x = data.inputs[start : start + chunk_size].to(device)
            y = data.targets[start : start + chunk_size].to(device)
            values.append(self.measurement(model(x), y).float())
        model.train(was_training)
        return torch.cat(values)

    def fingerprint(self) -> str:
        """sha256 over the task's class, config, recipe and data; part of every cache key.

        Computed on every call, never cached on the task, so a copy with
        swapped data (the controlled settings) cannot keep the original's.
        The data digests it hashes are cached on the :class:`~tdaeval.datasets.Data` objects,
        which notice in-place torch writes (see there); so a call
        costs a JSON hash, not a pass over the data.
        """
        return sha256_json(
            {
                "task": f"{type(self).__module__}.{type(self).__qualname__}",
                "config": self.config(),
                "recipe": asdict(self.recipe),
                "measurement": self.measurement_name,
                "train": self.train_data.digest(),
                "test": self.test_data.digest(),
            }
        )

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return len(self.train_data)

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return len(self.test_data)

    def describe(self) -> dict[str, Any]:
        """Provenance entry: name, config, recipe, sizes, measurement, fingerprint."""
        return {
            "name": self.name,
            "config": self.config(),
            "recipe": asdict(self.recipe),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "measurement": self.measurement_name,
            "higher_is_better": self.higher_is_better,
            "fingerprint": self.fingerprint(),
        }
