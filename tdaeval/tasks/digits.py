"""Digits classification on scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from tdaeval.datasets import load_digits
from tdaeval.errors import ConfigError
from tdaeval.nn import SeededDropout
from tdaeval.params import check_int_at_least
from tdaeval.task import TrainRecipe
from tdaeval.tasks.classification import ClassificationTask

__all__ = ["DigitsTask"]


class DigitsTask(ClassificationTask):
    """10-class digits (scikit-learn's bundled set), an MLP or logistic regression.

    Parameters
    ----------
    model : {"mlp", "logreg"}
        ``mlp``: 64-hidden-hidden-10 with ReLU and :class:`~tdaeval.nn.SeededDropout`;
        ``logreg``: one linear layer.
    n_train, n_test : int
        Split sizes (together at most 1,797).
    hidden : int
        Width of the MLP's two hidden layers.
    dropout : float
        MLP dropout rate during training (0.1 by default).
    split_seed : int
        Seed of the shuffle that splits train and test.
    recipe : TrainRecipe, optional
        Training recipe; default SGD, lr 0.05, momentum 0.9, 20 epochs, batch 64.
    """

    name = "digits"

    def __init__(
        self,
        model: Literal["mlp", "logreg"] = "mlp",
        n_train: int = 1400,
        n_test: int = 100,
        hidden: int = 64,
        dropout: float = 0.1,
        split_seed: int = 0,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if model not in ("mlp", "logreg"):
            raise ConfigError(f"The 'model' parameter of DigitsTask must be 'mlp' or 'logreg'. Got {model!r} instead.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"The 'dropout' parameter of DigitsTask must be in [0, 1). Got {dropout!r} instead.")
        check_int_at_least("hidden", "DigitsTask", hidden, 1)
        self.model = model
        self.hidden = hidden
        self.dropout = float(dropout)
        self.split_seed = split_seed
        self.recipe = recipe if recipe is not None else TrainRecipe()
        self.train_data, self.test_data = load_digits(n_train=n_train, n_test=n_test, seed=split_seed)

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "split_seed": self.split_seed,
        }

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            if self.model == "logreg":
                return nn.Sequential(nn.Linear(64, 10))
            return nn.Sequential(
                nn.Linear(64, self.hidden),
                nn.ReLU(),
                SeededDropout(self.dropout),
                nn.Linear(self.hidden, self.hidden),
                nn.ReLU(),
                SeededDropout(self.dropout),
                nn.Linear(self.hidden, 10),
            )
