"""The random baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.attributors.base import Attributor, register
from tdaeval.datasets import Data
from tdaeval.params import Interval
from tdaeval.training import training_seed

__all__ = ["RandomAttributor"]


@register
class RandomAttributor(Attributor):
    """Independent standard-normal scores; the chance level of every metric.

    The generator is seeded with ``seed`` XOR the training seed of the model
    it explains (:func:`tdaeval.training.training_seed`, recorded by
    ``train_model``, ``train_reference`` and ``seed_posterior``): models of
    different training seeds get independent draws, as chance would give
    them, so over a seed posterior the random baseline is noise, not a
    perfectly reproducible score. A model without a recorded seed, or of
    training seed 0 (the suites' default reference run), uses ``seed`` alone,
    as before. The same model and ``seed`` always give the same scores, and a
    copy of the model with other weights (``model_randomization``) keeps its
    training seed, hence the same scores.

    Parameters
    ----------
    seed : int
        Seed of the score generator (global RNG state is not touched).
    """

    name = "random"
    _parameter_constraints = {"seed": [Interval(int, 0, None)]}

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self) -> None:
        run_seed = training_seed(self.model_)
        self.generator_seed_ = int(self.seed) ^ (run_seed or 0)

    def _attribute(self, test: Data) -> Tensor:
        """Scores ``[n_test, n_train]``, standard normal."""
        generator = torch.Generator().manual_seed(self.generator_seed_)
        return torch.randn(len(test), len(self.train_), generator=generator)
