"""Shared fixtures: small tasks that train in well under a second."""

from __future__ import annotations

import pytest
import torch

from tdaeval import training
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask, LinearRegressionTask


@pytest.fixture
def small_digits() -> DigitsTask:
    """Digits MLP, 200 train / 20 test, 3 epochs."""
    return DigitsTask(n_train=200, n_test=20, hidden=16, recipe=TrainRecipe(epochs=3, batch_size=32))


@pytest.fixture
def small_logreg() -> DigitsTask:
    """Digits logistic regression, 200 train / 20 test, 3 epochs."""
    return DigitsTask(model="logreg", n_train=200, n_test=20, recipe=TrainRecipe(epochs=3, batch_size=32))


@pytest.fixture
def linear_task() -> LinearRegressionTask:
    return LinearRegressionTask(n_train=40, n_test=10, n_features=4)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def stacked_calls(monkeypatch) -> list[int]:
    """Number of models in each call of the batched training path (``training._train_stacked``)."""
    calls: list[int] = []
    original = training._train_stacked

    def spy(task, subsets, seeds, device, **kwargs):
        calls.append(len(subsets))
        return original(task, subsets, seeds, device, **kwargs)

    monkeypatch.setattr(training, "_train_stacked", spy)
    return calls
