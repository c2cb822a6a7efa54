"""Built-in tasks: digits classification, linear regression with closed-form LOO, synthetic classification, fact completion with a tiny LM."""

from __future__ import annotations

from typing import Any

from tdaeval.registry import Registry
from tdaeval.task import Task
from tdaeval.tasks.classification import ClassificationTask, margin
from tdaeval.tasks.controlled import with_flipped_labels, with_grouped_labels, with_mixed_dataset, with_shortcut
from tdaeval.tasks.digits import DigitsTask
from tdaeval.tasks.finetune import FineTuneTask
from tdaeval.tasks.language import LanguageModelTask
from tdaeval.tasks.linear import LinearRegressionTask
from tdaeval.tasks.synthetic import SyntheticTask

__all__ = ["ClassificationTask", "DigitsTask", "FineTuneTask", "LanguageModelTask", "LinearRegressionTask", "SyntheticTask", "margin", "get_task",
           "with_flipped_labels", "with_grouped_labels", "with_mixed_dataset", "with_shortcut", "TASKS"]

#: The tasks by name (a read-only mapping ``{name: class}``; add your own with ``TASKS.register``); :func:`get_task` builds them.
TASKS: Registry[Task] = Registry("task", Task)
TASKS.register(DigitsTask)
TASKS.register(LinearRegressionTask)
TASKS.register(SyntheticTask)
TASKS.register(LanguageModelTask)
TASKS.register(FineTuneTask)  # takes a Task and Data: Python-only by name; suites use task.factory tdaeval.tasks.finetune:digits_finetune


def get_task(name: str, **params: Any) -> Task:
    """Build a task by name (``"digits"``, ``"linear_regression"``, ``"synthetic"``, ``"language_model"``) or a
    ``"module:Name"`` path to a ``Task`` subclass."""
    return TASKS.create(name, **params)
