"""Digits classification on scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdaeval.datasets import load_digits
from tdaeval.errors import ConfigError, check_int_at_least
from tdaeval.nn import SeededDropout
from tdaeval.task import Task, TrainRecipe

__all__ = ["DigitsTask", "margin"]


def margin(logits: Tensor, targets: Tensor) -> Tensor:
    """Correct-class margin ``logit_y - logsumexp_{k != y} logit_k``.

    Parameters
    ----------
    logits : Tensor
        ``[n, C]``.
    targets : Tensor
        ``[n]`` int64 class ids.

    Returns
    -------
    Tensor
        ``[n]``; higher is better.
    """
    correct = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    is_target = torch.arange(logits.shape[1], device=logits.device) == targets.unsqueeze(1)
    others = logits.masked_fill(is_target, float("-inf"))
    return correct - torch.logsumexp(others, dim=1)


class DigitsTask(Task):
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
    higher_is_better = True
    measurement_name = "margin"

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

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return margin(outputs, targets)

    def sample_targets(self, outputs: Tensor, generator: torch.Generator) -> Tensor:
        """Labels drawn from the model's predictive distribution ``softmax(outputs)`` (for the Fisher)."""
        probs = torch.softmax(outputs.detach().double(), dim=1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
