"""Synthetic classification at any size: a Gaussian mixture and logistic regression (for large-n runs)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.params import check_int_at_least
from tdaeval.task import TrainRecipe
from tdaeval.tasks.classification import ClassificationTask

__all__ = ["SyntheticTask"]


class SyntheticTask(ClassificationTask):
    """``n_classes`` Gaussian clusters in ``n_features`` dimensions, explained by logistic regression.

    Class means are drawn from ``N(0, separation² I)``, points from
    ``N(mean_y, I)``; labels are balanced at random. Data are generated from
    ``data_seed`` (nothing is downloaded), so 200,000 training points cost a
    few MB and no disk.

    Parameters
    ----------
    n_train, n_test : int
        Split sizes.
    n_features, n_classes : int
        Input dimension and number of classes.
    separation : float
        Spread of the class means (larger = easier).
    data_seed : int
        Seed of the data.
    recipe : TrainRecipe, optional
        Default: 2 epochs, batch 512, lr 0.1, momentum 0.9.
    """

    name = "synthetic"

    def __init__(
        self,
        n_train: int = 10_000,
        n_test: int = 200,
        n_features: int = 32,
        n_classes: int = 10,
        separation: float = 1.0,
        data_seed: int = 0,
        recipe: TrainRecipe | None = None,
    ) -> None:
        for name, value, low in (("n_train", n_train, 2), ("n_test", n_test, 1), ("n_features", n_features, 1), ("n_classes", n_classes, 2)):
            check_int_at_least(name, "SyntheticTask", value, low)
        if not isinstance(separation, (int, float)) or isinstance(separation, bool) or not separation > 0:
            raise ConfigError(f"The 'separation' parameter of SyntheticTask must be > 0. Got {separation!r} instead.")
        self.n_features, self.n_classes, self.separation, self.data_seed = n_features, n_classes, float(separation), data_seed
        self.recipe = recipe if recipe is not None else TrainRecipe(epochs=2, batch_size=512, lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(data_seed)
        means = self.separation * torch.randn(n_classes, n_features, generator=g)
        n = n_train + n_test
        labels = torch.randint(0, n_classes, (n,), generator=g)
        inputs = means[labels] + torch.randn(n, n_features, generator=g)
        self.train_data = Data(inputs[:n_train], labels[:n_train])
        self.test_data = Data(inputs[n_train:], labels[n_train:])

    def config(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "n_test": self.n_test, "n_features": self.n_features, "n_classes": self.n_classes,
                "separation": self.separation, "data_seed": self.data_seed}

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return nn.Sequential(nn.Linear(self.n_features, self.n_classes))
