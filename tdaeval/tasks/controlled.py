"""Controlled settings: a task whose training data was transformed in a known, seeded way (docs: Methods §7).

Each function returns a copy of the task whose ``setting`` is a
:class:`~tdaeval.task.ControlledSetting` holding the ground truth (e.g. the
flipped-label mask) and the record of what was done; applied to a task that
already has a setting, the new one stacks on it (``task.transforms`` lists
every step in order).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from tdaeval.datasets import Data, add_trigger, flip_labels, foreign_images, group_labels
from tdaeval.errors import ConfigError
from tdaeval.task import ControlledSetting, Task

__all__ = ["ControlledSetting", "SETTING_FUNCTIONS", "with_flipped_labels", "with_grouped_labels", "with_shortcut", "with_mixed_dataset"]


def with_flipped_labels(task: Task, fraction: float = 0.1, seed: int = 0) -> Task:
    """A copy of ``task`` whose training labels are flipped for a seeded ``fraction`` of examples.

    The copy keeps everything else (model, recipe, test data); its
    ``setting.flipped`` (``[n_train]`` bool) is the ground truth of mislabel
    detection and ``transforms`` records what was done (provenance). Its fingerprint, and so
    every cache key, differs from the original's because its data do.

    Parameters
    ----------
    task : Task
        A classification task with integer labels.
    fraction : float
        Share of training examples relabelled, in (0, 1).
    seed : int
        Seed of the choice of examples and of their new labels.
    """
    n_classes = _check(task, "with_flipped_labels")
    data, flipped = flip_labels(task.train_data, fraction, n_classes, seed)
    record: dict[str, Any] = {"kind": "flip_labels", "fraction": float(fraction), "seed": int(seed), "n_flipped": int(flipped.sum())}
    controlled = _controlled(task, record, flipped=flipped)
    controlled.train_data = data
    return controlled


def _check(task: Task, owner: str, images: bool = False) -> int:
    """The number of classes of a classification ``task`` (int64 labels ``[n]``); with ``images``, inputs must be 8×8 ``[n, 64]``."""
    if not isinstance(task, Task):
        raise ConfigError(f"{owner} expects a tdaeval Task. Got {type(task).__name__}.")
    for split in (task.train_data, task.test_data):
        if split.targets.ndim != 1 or split.targets.dtype not in (torch.int64, torch.int32):
            raise ConfigError(f"{owner} expects a classification task with integer class labels [n]. "
                              f"{type(task).__name__} has targets of shape {tuple(split.targets.shape)} and dtype {split.targets.dtype}.")
        if images and tuple(split.inputs.shape[1:]) != (64,):
            raise ConfigError(f"{owner} expects a task on flattened 8x8 images (inputs [n, 64]). "
                              f"{type(task).__name__} has inputs of shape [n, {', '.join(map(str, split.inputs.shape[1:]))}].")
    return int(task.train_data.targets.max()) + 1


def _controlled(task: Task, record: dict[str, Any], **fields: Any) -> Task:
    """A shallow copy of ``task`` whose ``setting`` adds ``record`` and ``fields`` to the task's own setting (if any)."""
    controlled = copy.copy(task)
    if task.setting is None:
        controlled.setting = ControlledSetting(record["kind"], record, **fields)
    else:
        controlled.setting = task.setting.then(record["kind"], record, **fields)
    return controlled


def with_grouped_labels(task: Task, n_groups: int = 2, seed: int = 0) -> Task:
    """A copy of ``task`` trained and measured on superclasses: the classes split into ``n_groups`` at random (seeded).

    Its setting keeps the original labels as ``subclass_train`` / ``subclass_test``
    (the ground truth of subclass detection) and ``groups`` (class → superclass).
    The model's output layer keeps its size; only labels ``0 … n_groups − 1`` occur.
    """
    n_classes = _check(task, "with_grouped_labels")
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or not 2 <= n_groups < n_classes:
        raise ConfigError(f"The 'n_groups' parameter of with_grouped_labels must be an integer in [2, {n_classes - 1}]. Got {n_groups!r}.")
    order = torch.randperm(n_classes, generator=torch.Generator().manual_seed(int(seed)))
    groups = torch.empty(n_classes, dtype=torch.long)
    groups[order] = torch.arange(n_classes) % n_groups
    controlled = _controlled(task, {"kind": "group_labels", "n_groups": n_groups, "seed": int(seed), "groups": groups.tolist()},
                             subclass_train=task.train_data.targets.clone(), subclass_test=task.test_data.targets.clone(), groups=groups)
    controlled.train_data, controlled.test_data = group_labels(task.train_data, groups), group_labels(task.test_data, groups)
    return controlled


def with_shortcut(task: Task, shortcut_class: int = 0, fraction: float = 0.5, size: int = 2, seed: int = 0) -> Task:
    """A copy of ``task`` with a trigger patch planted on a seeded ``fraction`` of one class's training images.

    The test set becomes the test images of the other classes with the trigger
    added, labelled ``shortcut_class``: the attributors explain the shortcut
    prediction (the margin of ``shortcut_class``), and a good one blames the
    triggered training images (``setting.shortcut``, the ``[n_train]`` mask, is the
    ground truth of shortcut detection). The original test labels are kept as
    ``setting.original_test_labels``.
    """
    n_classes = _check(task, "with_shortcut", images=True)
    if isinstance(shortcut_class, bool) or not isinstance(shortcut_class, int) or not 0 <= shortcut_class < n_classes:
        raise ConfigError(f"The 'shortcut_class' parameter of with_shortcut must be a class in [0, {n_classes - 1}]. Got {shortcut_class!r}.")
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0):
        raise ConfigError(f"The 'fraction' parameter of with_shortcut must be in (0, 1]. Got {fraction!r} instead.")
    members = torch.nonzero(task.train_data.targets == shortcut_class).flatten()
    if members.numel() == 0:
        raise ConfigError(f"The 'shortcut_class' parameter of with_shortcut must be a class with training examples to carry the trigger; "
                          f"class {shortcut_class} has none in the task's training data.")
    if not bool((task.test_data.targets != shortcut_class).any()):
        raise ConfigError(f"The 'shortcut_class' parameter of with_shortcut must leave test examples of other classes to trigger; "
                          f"every test example is of class {shortcut_class}.")
    generator = torch.Generator().manual_seed(int(seed))
    chosen = members[torch.randperm(members.numel(), generator=generator)[: max(1, round(fraction * members.numel()))]]
    inputs = task.train_data.inputs.clone()
    inputs[chosen] = add_trigger(inputs[chosen], size)
    shortcut = torch.zeros(task.n_train, dtype=torch.bool)
    shortcut[chosen] = True
    others = task.test_data.targets != shortcut_class
    controlled = _controlled(task, {"kind": "shortcut", "class": shortcut_class, "fraction": float(fraction), "size": size,
                                    "seed": int(seed), "n_triggered": int(shortcut.sum())},
                             shortcut=shortcut, original_test_labels=task.test_data.targets[others].clone())
    controlled.train_data = Data(inputs, task.train_data.targets.clone())
    triggered_test = add_trigger(task.test_data.inputs[others], size)
    controlled.test_data = Data(triggered_test, torch.full((int(others.sum()),), shortcut_class, dtype=task.test_data.targets.dtype))
    return controlled


def with_mixed_dataset(task: Task, n_foreign: int = 50, label: int = 0, n_test: int = 20, seed: int = 0) -> Task:
    """A copy of ``task`` whose training set also holds ``n_foreign`` synthetic non-digit images labelled ``label``.

    The foreign images are :func:`~tdaeval.datasets.foreign_images` (seeded,
    no download), appended after the original training points; the test set
    becomes ``n_test`` further foreign images with the same label, whose
    explanations should retrieve the foreign training images (``setting.foreign``, the
    ``[n_train]`` mask, is the ground truth of ``mixed_datasets``).
    """
    n_classes = _check(task, "with_mixed_dataset", images=True)
    for name, value, low in (("n_foreign", n_foreign, 1), ("n_test", n_test, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"The '{name}' parameter of with_mixed_dataset must be an integer >= {low}. Got {value!r}.")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < n_classes:
        raise ConfigError(f"The 'label' parameter of with_mixed_dataset must be a class in [0, {n_classes - 1}]. Got {label!r}.")
    images = foreign_images(n_foreign + n_test, seed, task.train_data.inputs)
    labels = torch.full((n_foreign + n_test,), label, dtype=task.train_data.targets.dtype)
    foreign = torch.cat([torch.zeros(task.n_train, dtype=torch.bool), torch.ones(n_foreign, dtype=torch.bool)])
    controlled = _controlled(task, {"kind": "mixed_dataset", "n_foreign": n_foreign, "label": label, "n_test": n_test, "seed": int(seed)},
                             foreign=foreign)
    controlled.train_data = Data(torch.cat([task.train_data.inputs, images[:n_foreign]]), torch.cat([task.train_data.targets, labels[:n_foreign]]))
    controlled.test_data = Data(images[n_foreign:].clone(), labels[n_foreign:].clone())
    return controlled


#: The settings a suite can apply, by the name it gives (``task.setting.name``, :data:`tdaeval.suites.schema.SETTINGS`).
SETTING_FUNCTIONS: dict[str, Callable[..., Task]] = {
    "flipped_labels": with_flipped_labels,
    "grouped_labels": with_grouped_labels,
    "shortcut": with_shortcut,
    "mixed_dataset": with_mixed_dataset,
}
