"""Executors run retraining jobs; ``local`` trains many models at once in-process."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tdaeval.errors import ConfigError
from tdaeval.groundtruth.jobs import TrainJob
from tdaeval.task import Task
from tdaeval.training import train_models

__all__ = ["LocalExecutor", "get_executor"]


class LocalExecutor:
    """Runs jobs in this process, ``max_models`` models at a time with ``torch.func``.

    Parameters
    ----------
    max_models : int
        Models trained together in one ``vmap`` batch (bounds memory).
    device : str
        Where to train.
    """

    name = "local"

    def __init__(self, max_models: int = 32, device: str = "cpu") -> None:
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ConfigError(f"The 'max_models' parameter of LocalExecutor must be an integer >= 1. Got {max_models!r} instead.")
        self.max_models = max_models
        self.device = device

    def run(self, task: Task, jobs: Sequence[TrainJob], on_result: Callable[[TrainJob, Tensor], None]) -> None:
        """Train and measure every job; call ``on_result(job, measurement[n_test])`` as each batch ends."""
        by_size: dict[int, list[TrainJob]] = defaultdict(list)
        for job in jobs:
            by_size[int(job.indices.numel())].append(job)
        for group in by_size.values():
            for start in range(0, len(group), self.max_models):
                batch = group[start : start + self.max_models]
                stacked = train_models(task, [j.indices for j in batch], [j.seed for j in batch], device=self.device)
                measurements = stacked.measure(task).to("cpu", torch.float32)
                for job, row in zip(batch, measurements):
                    on_result(job, row.clone())


def get_executor(spec: str | LocalExecutor | None, device: str = "cpu") -> LocalExecutor:
    """An executor from a name (``"local"``) or an instance."""
    if spec is None or spec == "local":
        return LocalExecutor(device=device)
    if isinstance(spec, LocalExecutor):
        return spec
    raise ConfigError(f"Unknown executor {spec!r}. Expected 'local' (process and ray executors are planned).")
