"""Controlled settings: a task whose training data was transformed in a known, seeded way (METHODS.md §7)."""

from __future__ import annotations

import copy
from typing import Any

from tdaeval.datasets import flip_labels
from tdaeval.errors import ConfigError
from tdaeval.task import Task

__all__ = ["with_flipped_labels"]


def with_flipped_labels(task: Task, fraction: float = 0.1, seed: int = 0) -> Task:
    """A copy of ``task`` whose training labels are flipped for a seeded ``fraction`` of examples.

    The copy keeps everything else (model, recipe, test data); it has
    ``flipped`` (``[n_train]`` bool, the ground truth of mislabel detection)
    and ``transforms`` (what was done, for provenance). Its fingerprint, and so
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
    if not isinstance(task, Task):
        raise ConfigError(f"with_flipped_labels expects a tdaeval Task. Got {type(task).__name__}.")
    n_classes = int(task.train_data.targets.max()) + 1
    data, flipped = flip_labels(task.train_data, fraction, n_classes, seed)
    controlled = copy.copy(task)
    controlled.train_data = data
    controlled.flipped = flipped
    record: dict[str, Any] = {"kind": "flip_labels", "fraction": float(fraction), "seed": int(seed), "n_flipped": int(flipped.sum())}
    controlled.transforms = [*getattr(task, "transforms", []), record]
    return controlled
