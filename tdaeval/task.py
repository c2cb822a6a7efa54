"""The ``Task`` contract: what is being explained.

A task owns its data, builds a model from a seed, trains it on a subset of the
training indices with a seed, and defines the measurement ``f(z; θ)`` whose
changes attributors explain (docs: Methods §0).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tdaeval.datasets import Data
from tdaeval.errors import ConfigError, check_int_at_least

__all__ = ["Task", "TrainRecipe", "canonical_json", "sha256_json"]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of every cache key."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(obj: Any) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


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
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            check_int_at_least(name, "TrainRecipe", value, 1)
        if not self.lr > 0:
            raise ConfigError(f"The 'lr' parameter of TrainRecipe must be > 0. Got {self.lr!r} instead.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"The 'momentum' parameter of TrainRecipe must be in [0, 1). Got {self.momentum!r} instead.")
        if self.weight_decay < 0:
            raise ConfigError(
                f"The 'weight_decay' parameter of TrainRecipe must be >= 0. Got {self.weight_decay!r} instead."
            )


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
    """

    name: ClassVar[str] = "task"
    higher_is_better: ClassVar[bool] = True
    measurement_name: ClassVar[str] = "measurement"

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
        from tdaeval.training import train_model

        return train_model(self, model, train_indices, seed).model

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
