"""Ridge regression with an exact solver and a closed-form leave-one-out."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.datasets import make_regression
from tdaeval.errors import ConfigError
from tdaeval.task import Task, TrainRecipe

__all__ = ["LinearRegressionTask"]


class LinearRegressionTask(Task):
    """Linear regression trained exactly (ridge, closed form); for tests of gold standards.

    Training solves ``min_w Σ_i (x_i w + b - y_i)² / 2 + ridge/2 |w|²`` exactly, so
    retraining is deterministic and leave-one-out has a closed form
    (:meth:`loo_effects`). The measurement is the absolute error (lower is better).

    Parameters
    ----------
    n_train, n_test, n_features : int
        Sizes of the synthetic data.
    noise : float
        Standard deviation of the label noise.
    ridge : float
        L2 penalty on the weights (not the bias), > 0 keeps every subset solvable.
    data_seed : int
        Seed of the synthetic data.
    """

    name = "linear_regression"
    higher_is_better = False
    measurement_name = "absolute_error"

    def __init__(
        self,
        n_train: int = 60,
        n_test: int = 20,
        n_features: int = 5,
        noise: float = 0.5,
        ridge: float = 1e-3,
        data_seed: int = 0,
    ) -> None:
        if not ridge > 0:
            raise ConfigError(f"The 'ridge' parameter of LinearRegressionTask must be > 0. Got {ridge!r} instead.")
        self.n_features = n_features
        self.noise = noise
        self.ridge = float(ridge)
        self.data_seed = data_seed
        self.recipe = TrainRecipe(epochs=1, batch_size=max(n_train, 1))
        self.train_data, self.test_data = make_regression(n_train, n_test, n_features, noise, data_seed)

    def config(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_features": self.n_features,
            "noise": self.noise,
            "ridge": self.ridge,
            "data_seed": self.data_seed,
            "solver": "closed_form",
        }

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return nn.Linear(self.n_features, 1, dtype=torch.float64)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return 0.5 * (outputs.squeeze(-1) - targets) ** 2

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.squeeze(-1) - targets).abs()

    def sample_targets(self, outputs: Tensor, generator: torch.Generator) -> Tensor:
        """Targets ``y ~ N(prediction, 1)``, the model distribution of the squared loss (for the Fisher)."""
        prediction = outputs.detach().squeeze(-1).cpu()
        return prediction + torch.randn(prediction.shape, generator=generator, dtype=prediction.dtype)

    def _design(self, x: Tensor) -> Tensor:
        return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)

    def _penalty(self) -> Tensor:
        reg = torch.full((self.n_features + 1,), self.ridge, dtype=torch.float64)
        reg[-1] = 0.0
        return torch.diag(reg)

    def train(self, model: nn.Module, train_indices: Tensor, seed: int) -> nn.Module:
        """Exact ridge solution on ``train_data[train_indices]`` (the seed is unused)."""
        idx = torch.as_tensor(train_indices, dtype=torch.long)
        a = self._design(self.train_data.inputs[idx])
        y = self.train_data.targets[idx]
        theta = torch.linalg.solve(a.T @ a + self._penalty(), a.T @ y)
        with torch.no_grad():
            model.weight.copy_(theta[:-1].unsqueeze(0))
            model.bias.copy_(theta[-1:])
        return model.eval()

    def loo_effects(self) -> Tensor:
        """Exact change of each test measurement when each training point is left out.

        Uses the Sherman–Morrison update
        ``θ_{-i} = θ + A⁻¹ a_i r_i / (1 - h_ii)`` with ``A = XᵀX + R``,
        ``r_i = a_iᵀθ - y_i`` and ``h_ii = a_iᵀ A⁻¹ a_i``.

        Returns
        -------
        Tensor
            ``[n_test, n_train]``: ``f(z; θ(D∖i)) − f(z; θ(D))`` (absolute error).
        """
        a = self._design(self.train_data.inputs)
        y = self.train_data.targets
        a_inv = torch.linalg.inv(a.T @ a + self._penalty())
        theta = a_inv @ a.T @ y
        residual = a @ theta - y  # [n_train]
        leverage = ((a @ a_inv) * a).sum(dim=1)  # [n_train]
        delta = (a_inv @ a.T) * (residual / (1.0 - leverage))  # [p, n_train]: θ_{-i} − θ
        test_a = self._design(self.test_data.inputs)
        base_pred = test_a @ theta  # [n_test]
        loo_pred = base_pred.unsqueeze(1) + test_a @ delta  # [n_test, n_train]
        target = self.test_data.targets.unsqueeze(1)
        return (loo_pred - target).abs() - (base_pred.unsqueeze(1) - target).abs()
