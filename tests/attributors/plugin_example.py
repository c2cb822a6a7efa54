"""A user's own attributors, importable as ``tests.attributors.plugin_example:Name``."""

import torch

from tdaeval.attributors import Attributor


class InputSimilarity(Attributor):
    name = "input_similarity"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def _attribute(self, test):
        return self.scale * (test.inputs @ self.train_.inputs.T)


def input_dot(model, train, test):
    return test.inputs @ train.inputs.T


NOT_CALLABLE = 3


def nan_scores(model, train, test):
    return torch.full((len(test), len(train)), float("nan"))


def crashes(model, train, test):
    raise RuntimeError("boom")
