"""Typed ground truths: what a metric's ``build_truth`` returns and its ``compute`` reads.

Every gold standard is a :class:`GroundTruth`. The retrained ones live next
to their builders (:class:`~tdaeval.groundtruth.LDSGroundTruth`,
:class:`~tdaeval.groundtruth.LOOGroundTruth`,
:class:`~tdaeval.groundtruth.RemovalContext`,
:class:`~tdaeval.groundtruth.FurtherTrainingGroundTruth`); the small ones
that need no retraining are here, frozen dataclasses built directly from
tensors (a test can build one in a line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.errors import ConfigError

__all__ = ["GroundTruth", "NoTruth", "NO_TRUTH", "MaskTruth", "LabelTruth", "ModelTruth"]


class GroundTruth:
    """Base of every gold standard a :class:`~tdaeval.metrics.Metric` compares scores with.

    A metric declares the class it reads as ``truth_type``; its ``compute``
    rejects any other truth with a one-line ``ConfigError``.
    """

    __slots__ = ()


@dataclass(frozen=True)
class NoTruth(GroundTruth):
    """The truth of a metric that needs none (it reads only the scores); use :data:`NO_TRUTH`."""


#: The one :class:`NoTruth` instance (all ``NoTruth()`` compare equal).
NO_TRUTH = NoTruth()


def _transforms(owner: str, transforms: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, dict) for t in transforms):
        raise ConfigError(f"The 'transforms' field of {owner} must be a list of dicts. Got {transforms!r}.")
    return tuple(transforms)


def _labels(name: str, value: Any) -> Tensor:
    """``value`` as an integer Tensor ``[n]`` (a field of :class:`LabelTruth`), else ConfigError naming the field."""
    labels = torch.as_tensor(value)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ConfigError(f"The '{name}' field of LabelTruth must be an integer Tensor [n]. Got {labels.dtype} of shape {tuple(labels.shape)}.")
    return labels


@dataclass(frozen=True, eq=False)
class MaskTruth(GroundTruth):
    """A planted set of training points: flipped labels, triggered images, foreign images.

    Attributes
    ----------
    mask : Tensor
        ``[n_train]`` bool, True for the planted points.
    transforms : tuple of dict
        The controlled setting's records, in order (provenance).
    """

    mask: Tensor
    transforms: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        mask = torch.as_tensor(self.mask)
        if mask.ndim != 1 or mask.dtype != torch.bool:
            raise ConfigError(f"The 'mask' field of MaskTruth must be a bool Tensor [n_train]. Got {mask.dtype} of shape {tuple(mask.shape)}.")
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "transforms", _transforms("MaskTruth", self.transforms))


@dataclass(frozen=True, eq=False)
class LabelTruth(GroundTruth):
    """Class labels of the training and test points (class or subclass detection).

    Attributes
    ----------
    train_labels : Tensor
        ``[n_train]`` integer labels.
    test_labels : Tensor
        ``[n_test]`` integer labels, compared with ``train_labels``.
    transforms : tuple of dict
        The controlled setting's records, in order (provenance).
    """

    train_labels: Tensor
    test_labels: Tensor
    transforms: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_labels", _labels("train_labels", self.train_labels))
        object.__setattr__(self, "test_labels", _labels("test_labels", self.test_labels))
        object.__setattr__(self, "transforms", _transforms("LabelTruth", self.transforms))


@dataclass(frozen=True, eq=False)
class ModelTruth(GroundTruth):
    """The explained model and a freshly initialised one of the same architecture (model randomization).

    Attributes
    ----------
    task : Task
        The task (its test data are re-attributed).
    model : nn.Module
        The explained, trained model.
    reference : nn.Module
        A freshly initialised model whose weights replace the trained ones.
    """

    task: Any
    model: nn.Module
    reference: nn.Module
