"""Built-in tasks: digits classification and linear regression with closed-form LOO."""

from __future__ import annotations

from typing import Any

from tdaeval.errors import ConfigError
from tdaeval.task import Task
from tdaeval.tasks.classification import ClassificationTask, margin
from tdaeval.tasks.digits import DigitsTask
from tdaeval.tasks.controlled import with_flipped_labels, with_grouped_labels, with_mixed_dataset, with_shortcut
from tdaeval.tasks.linear import LinearRegressionTask
from tdaeval.tasks.synthetic import SyntheticTask

__all__ = ["ClassificationTask", "DigitsTask", "LinearRegressionTask", "SyntheticTask", "margin", "get_task", "with_flipped_labels", "with_grouped_labels", "with_mixed_dataset", "with_shortcut", "TASKS"]

TASKS: dict[str, type[Task]] = {"digits": DigitsTask, "linear_regression": LinearRegressionTask, "synthetic": SyntheticTask}


def get_task(name: str, **params: Any) -> Task:
    """Build a built-in task by name (``"digits"``, ``"linear_regression"``, ``"synthetic"``)."""
    if name not in TASKS:
        raise ConfigError(f"Unknown task {name!r}. Expected one of: {', '.join(sorted(TASKS))}.")
    return TASKS[name](**params)
