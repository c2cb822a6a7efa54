"""Embedded data: scikit-learn's bundled digits, synthetic regression, and the generated fact corpus (:mod:`tdaeval.facts`).

Nothing here downloads anything.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.facts import FactCorpus, HallucinationSplit, make_fact_corpus, make_hallucination_split
from tdaeval.params import check_int_at_least

__all__ = ["Data", "FactCorpus", "HallucinationSplit", "add_trigger", "flip_labels", "foreign_images", "group_labels", "load_digits",
           "make_fact_corpus", "make_hallucination_split", "make_regression"]


def _split_sizes(n_total: int, n_train: int, n_test: int, owner: str) -> None:
    check_int_at_least("n_train", owner, n_train, 2)
    check_int_at_least("n_test", owner, n_test, 1)
    if n_train + n_test > n_total:
        raise ConfigError(
            f"The 'n_train' + 'n_test' parameters of {owner} must be at most {n_total}. "
            f"Got {n_train} + {n_test} = {n_train + n_test} instead."
        )


def load_digits(n_train: int = 1400, n_test: int = 100, seed: int = 0) -> tuple[Data, Data]:
    """scikit-learn's bundled 8x8 digits, shuffled with ``seed`` and split.

    Returns
    -------
    tuple of Data
        ``(train, test)``; inputs ``[n, 64]`` float32 scaled to [0, 1],
        targets ``[n]`` int64 in 0..9.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    _split_sizes(len(bunch.target), n_train, n_test, "load_digits")
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train_idx, test_idx = order[:n_train], order[n_train : n_train + n_test]
    return Data(x[train_idx], y[train_idx]), Data(x[test_idx], y[test_idx])


def make_regression(
    n_train: int = 60, n_test: int = 20, n_features: int = 5, noise: float = 0.5, seed: int = 0
) -> tuple[Data, Data]:
    """Synthetic linear regression data ``y = x w + noise``.

    Returns
    -------
    tuple of Data
        ``(train, test)``; inputs ``[n, n_features]`` float64, targets ``[n]`` float64.
    """
    _split_sizes(10**12, n_train, n_test, "make_regression")
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    x = torch.randn(n, n_features, generator=g, dtype=torch.float64)
    w = torch.randn(n_features, generator=g, dtype=torch.float64)
    y = x @ w + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return Data(x[:n_train], y[:n_train]), Data(x[n_train:], y[n_train:])


def flip_labels(data: Data, fraction: float, n_classes: int, seed: int) -> tuple[Data, Tensor]:
    """A copy of ``data`` with the labels of a seeded ``fraction`` of examples changed to another class.

    Each chosen example gets a label drawn uniformly from the ``n_classes − 1``
    others. The draw uses its own ``torch.Generator`` seeded with ``seed``
    (the global RNG is untouched).

    Returns
    -------
    tuple
        The new :class:`Data` and the ``[n]`` bool mask of flipped examples.
    """
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0.0 < fraction < 1.0):
        raise ConfigError(f"The 'fraction' parameter of flip_labels must be in (0, 1). Got {fraction!r} instead.")
    check_int_at_least("n_classes", "flip_labels", n_classes, 2)
    if data.targets.dtype not in (torch.int64, torch.int32) or data.targets.ndim != 1:
        raise ConfigError("flip_labels needs integer class labels [n].")
    n = len(data)
    generator = torch.Generator().manual_seed(int(seed))
    chosen = torch.randperm(n, generator=generator)[: max(1, round(fraction * n))]
    shift = torch.randint(1, n_classes, (chosen.numel(),), generator=generator)
    targets = data.targets.clone()
    targets[chosen] = (targets[chosen] + shift) % n_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    return Data(data.inputs.clone(), targets), mask


def group_labels(data: Data, groups: Tensor) -> Data:
    """A copy of ``data`` with each label ``y`` replaced by ``groups[y]`` (its superclass)."""
    return Data(data.inputs.clone(), groups[data.targets].clone())


def add_trigger(inputs: Tensor, size: int = 2, value: float | None = None) -> Tensor:
    """Inputs ``[n, 64]`` (8×8 images) with a ``size × size`` patch in the bottom-right corner set to ``value``.

    ``value`` defaults to the inputs' maximum (a bright patch).
    """
    if inputs.ndim != 2 or inputs.shape[1] != 64:
        raise ConfigError(f"add_trigger expects flattened 8x8 images [n, 64]. Got {tuple(inputs.shape)}.")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 8:
        raise ConfigError(f"The 'size' parameter of add_trigger must be an integer in [1, 8]. Got {size!r} instead.")
    images = inputs.clone().view(-1, 8, 8)
    images[:, 8 - size :, 8 - size :] = float(inputs.max()) if value is None else float(value)
    return images.view(-1, 64)


def foreign_images(n: int, seed: int, like: Tensor) -> Tensor:
    """``[n, 64]`` synthetic images that are not digits: smooth random blobs in the value range of ``like``.

    A seeded sum of three Gaussian bumps per 8×8 image (no download).
    """
    generator = torch.Generator().manual_seed(int(seed))
    grid = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1).view(1, 1, 64, 2)
    centres = torch.rand(n, 3, 1, 2, generator=generator) * 7
    widths = 0.8 + 1.5 * torch.rand(n, 3, 1, 1, generator=generator)
    images = torch.exp(-((grid - centres) ** 2).sum(-1, keepdim=True) / (2 * widths**2)).sum(1).view(n, 64)
    images = images / images.amax(1, keepdim=True)
    return (images * float(like.max())).to(like.dtype)
