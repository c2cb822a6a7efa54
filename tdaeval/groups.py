"""Groups of training examples: class-wise k-means clusters, classes, or user-given groups, and group attribution.

A *grouping* is an int64 tensor ``[n_train]`` of group ids ``0 … K−1``, every id used at least once. Leave-group-out
ground truth retrains without each group; group-level metrics compare an attributor's *group scores*
``[n_test, K]`` with it.

Convention (one for every attributor): the group score of a per-example attributor is the **sum** of its scores over
the group's members (:func:`group_scores`), its first-order prediction of removing the whole group. An attributor
that scores groups natively (``distilled_datamodel``) returns per-example scores equal to its group score divided
equally among the members (:func:`spread_group_scores`), so that summing gives its group score back and every
per-example metric (LDS) still applies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tdaeval.data import Data
from tdaeval.errors import ConfigError

__all__ = ["check_groups", "class_kmeans_groups", "class_groups", "group_scores", "group_sizes", "spread_group_scores"]


def check_groups(groups: Tensor | Sequence[int], n_train: int, name: str = "groups") -> Tensor:
    """``groups`` as int64 ``[n_train]`` on CPU, with ids ``0 … K−1`` each used; else a ``ConfigError`` naming ``name``.

    Parameters
    ----------
    groups : Tensor or sequence of int
        One group id per training example.
    n_train : int
        Number of training examples.
    name : str
        The parameter named in the error.

    Returns
    -------
    Tensor
        int64 ``[n_train]``.
    """
    try:
        ids = torch.as_tensor(groups)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"The {name!r} parameter must be one integer group id per training example. Got {type(groups).__name__}.") from err
    if ids.dim() != 1 or ids.shape[0] != n_train:
        raise ConfigError(f"The {name!r} parameter must have shape [n_train] = [{n_train}]. Got {list(ids.shape)}.")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ConfigError(f"The {name!r} parameter must hold integer group ids. Got dtype {ids.dtype}.")
    ids = ids.to("cpu", torch.long)
    if n_train == 0:
        raise ConfigError(f"The {name!r} parameter needs at least one training example.")
    if int(ids.min()) < 0:
        raise ConfigError(f"The {name!r} parameter must hold ids >= 0. Got {int(ids.min())}.")
    n_groups = int(ids.max()) + 1
    missing = torch.nonzero(torch.bincount(ids, minlength=n_groups) == 0).flatten()
    if len(missing):
        raise ConfigError(f"The {name!r} parameter must use every id 0 … K−1 (K = {n_groups}); ids {missing[:5].tolist()} have no member.")
    return ids


def group_sizes(groups: Tensor) -> Tensor:
    """int64 ``[K]``: members per group of a checked grouping."""
    return torch.bincount(groups, minlength=int(groups.max()) + 1)


def class_groups(data: Data) -> Tensor:
    """One group per class present in ``data.targets`` (int64 ``[n]``), ids in increasing class order."""
    targets = data.targets
    if targets.dim() != 1 or targets.is_floating_point():
        raise ConfigError("Class groups need integer class targets [n]. Got targets of shape "
                          f"{list(targets.shape)}, dtype {targets.dtype}.")
    _, ids = torch.unique(targets, sorted=True, return_inverse=True)
    return ids.to(torch.long)


def class_kmeans_groups(data: Data, k_per_class: int, features: Tensor | None = None, seed: int = 0) -> Tensor:
    """Class-wise k-means clusters: each class split into ``min(k_per_class, class size)`` groups (int64 ``[n]``).

    Parameters
    ----------
    data : Data
        Training data with integer class targets ``[n]``.
    k_per_class : int
        Clusters per class (>= 1).
    features : Tensor, optional
        ``[n, d]`` features to cluster (e.g. penultimate activations); default the flattened inputs.
    seed : int
        ``random_state`` of scikit-learn's ``KMeans`` (``n_init=3``).

    Returns
    -------
    Tensor
        int64 ``[n]``: ids ordered by class, then by cluster (clusters of a class numbered by their smallest member
        index, so the ids do not depend on k-means' label order).
    """
    from sklearn.cluster import KMeans

    if isinstance(k_per_class, bool) or not isinstance(k_per_class, int) or k_per_class < 1:
        raise ConfigError(f"The 'k_per_class' parameter must be an int >= 1. Got {k_per_class!r}.")
    classes = class_groups(data)
    x = (data.inputs if features is None else features).detach().to("cpu", torch.float64).reshape(len(data), -1)
    if x.shape[0] != len(data):
        raise ConfigError(f"The 'features' parameter must have one row per training example ({len(data)}). Got {x.shape[0]}.")
    groups = torch.empty(len(data), dtype=torch.long)
    next_id = 0
    for c in range(int(classes.max()) + 1):
        members = torch.nonzero(classes == c).flatten()
        k = min(k_per_class, len(members))
        if k == 1:
            labels = np.zeros(len(members), dtype=np.int64)
        else:
            labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x[members].numpy())
        first = {}
        for position, label in enumerate(labels.tolist()):
            first.setdefault(label, position)
        order = {label: rank for rank, label in enumerate(sorted(first, key=first.get))}
        groups[members] = torch.tensor([next_id + order[label] for label in labels.tolist()], dtype=torch.long)
        next_id += len(order)
    return groups


def group_scores(scores: Tensor, groups: Tensor, n_groups: int | None = None) -> Tensor:
    """Per-example scores ``[n_test, n_train]`` summed over each group's members: ``[n_test, K]`` (the scores' dtype).

    The first-order prediction of removing a whole group, for any per-example attributor (module docstring).
    """
    if scores.dim() != 2 or scores.shape[1] != groups.shape[0]:
        raise ConfigError(f"group_scores expects scores [n_test, n_train = {groups.shape[0]}]. Got {list(scores.shape)}.")
    k = int(groups.max()) + 1 if n_groups is None else n_groups
    out = torch.zeros(scores.shape[0], k, dtype=scores.dtype, device=scores.device)
    return out.index_add_(1, groups.to(scores.device), scores)


def spread_group_scores(group_values: Tensor, groups: Tensor) -> Tensor:
    """Group scores ``[n_test, K]`` as per-example scores ``[n_test, n_train]``: each member gets its group's score
    divided by the group's size, so :func:`group_scores` returns ``group_values``."""
    sizes = group_sizes(groups).to(group_values.device, group_values.dtype)
    if group_values.dim() != 2 or group_values.shape[1] != sizes.shape[0]:
        raise ConfigError(f"spread_group_scores expects group scores [n_test, K = {sizes.shape[0]}]. Got {list(group_values.shape)}.")
    return (group_values / sizes)[:, groups.to(group_values.device)]
