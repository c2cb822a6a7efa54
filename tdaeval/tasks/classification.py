"""What classification tasks share: cross-entropy training, the correct-class margin as measurement."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tdaeval.task import Task

__all__ = ["ClassificationTask", "margin"]


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


class ClassificationTask(Task):
    """A task whose model outputs class logits ``[n, C]``: cross-entropy loss, margin measurement.

    Subclasses provide the data, :meth:`~tdaeval.task.Task.build_model` and
    :meth:`~tdaeval.task.Task.config`.
    """

    higher_is_better = True
    measurement_name = "margin"

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return margin(outputs, targets)

    def sample_targets(self, outputs: Tensor, generator: torch.Generator) -> Tensor:
        """Labels drawn from the model's predictive distribution ``softmax(outputs)`` (for the Fisher)."""
        probs = torch.softmax(outputs.detach().double(), dim=1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
