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

__all__ = ["GroundTruth", "NoTruth", "NO_TRUTH", "MaskTruth", "LabelTruth", "ModelTruth", "EntailmentTruth"]


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


@dataclass(frozen=True, eq=False)
class EntailmentTruth(GroundTruth):
    """Known proponents of each test query (fact tracing): which training items entail it, and each pair's category.

    Attributes
    ----------
    entailment : Tensor
        ``[n_test, n_train]`` bool, True where the training item states the
        query's fact (a proponent).
    categories : Tensor or None
        ``[n_test, n_train]`` integer codes into ``category_names`` (int8 in
        the language-model task: proponent, same subject, same object, …);
        None when only the entailment is known.
    category_names : tuple of str
        Name of each category code (empty when ``categories`` is None).

    Examples
    --------
    >>> import torch
    >>> truth = EntailmentTruth(torch.tensor([[True, False, False]]), torch.tensor([[1, 0, 2]], dtype=torch.int8),
    ...                         ("other", "proponent", "same_object"))
    >>> truth.n_test, truth.n_train, truth.category("same_object").tolist()
    (1, 3, [[False, False, True]])
    """

    entailment: Tensor
    categories: Tensor | None = None
    category_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        entailment = torch.as_tensor(self.entailment)
        if entailment.ndim != 2 or entailment.dtype != torch.bool:
            raise ConfigError(f"The 'entailment' field of EntailmentTruth must be a bool Tensor [n_test, n_train]. "
                              f"Got {entailment.dtype} of shape {tuple(entailment.shape)}.")
        names = self.category_names
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"The 'category_names' field of EntailmentTruth must be a tuple of distinct strings. Got {names!r}.")
        object.__setattr__(self, "entailment", entailment)
        object.__setattr__(self, "category_names", tuple(names))
        if self.categories is None:
            return
        categories = torch.as_tensor(self.categories)
        if categories.shape != entailment.shape or categories.dtype.is_floating_point or categories.dtype in (torch.bool, torch.complex64,
                                                                                                              torch.complex128):
            raise ConfigError(f"The 'categories' field of EntailmentTruth must be an integer Tensor of shape {tuple(entailment.shape)} "
                              f"like 'entailment'. Got {categories.dtype} of shape {tuple(categories.shape)}.")
        if categories.numel() and (int(categories.min()) < 0 or int(categories.max()) >= len(names)):
            raise ConfigError(f"The 'categories' field of EntailmentTruth must hold codes in [0, {len(names)}) (one per category name). "
                              f"Got values in [{int(categories.min())}, {int(categories.max())}].")
        object.__setattr__(self, "categories", categories)

    @property
    def n_test(self) -> int:
        """Number of queries (rows)."""
        return int(self.entailment.shape[0])

    @property
    def n_train(self) -> int:
        """Number of training items (columns)."""
        return int(self.entailment.shape[1])

    def category(self, name: str) -> Tensor:
        """``[n_test, n_train]`` bool: the pairs of category ``name`` (a ``ConfigError`` when there are no categories or no such name)."""
        if self.categories is None or name not in self.category_names:
            raise ConfigError(f"EntailmentTruth has no category {name!r}. Its categories: {list(self.category_names)}.")
        return self.categories == self.category_names.index(name)
