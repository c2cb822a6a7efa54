"""The random baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.attributors.base import Attributor, register
from tdaeval.datasets import Data

__all__ = ["RandomAttributor"]


@register
class RandomAttributor(Attributor):
    """Independent standard-normal scores; the chance level of every metric.

    Parameters
    ----------
    seed : int
        Seed of the score generator (global RNG state is not touched).
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _attribute(self, test: Data) -> Tensor:
        generator = torch.Generator().manual_seed(int(self.seed))
        return torch.randn(len(test), len(self.train_), generator=generator)
