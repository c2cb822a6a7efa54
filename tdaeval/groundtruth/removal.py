"""Counterfactual removal: retrain without the training points an attributor ranks highest (docs: Methods §2).

Unlike LDS and leave-one-out, what is retrained depends on the scores: for a
test point ``z`` and a size ``k``, the ``k`` highest-scored training points of
``z`` (or its ``k`` lowest, or ``k`` random ones) are removed and the model is
retrained from scratch with ``R`` seeds; the measurement of ``z`` is compared
with the full-data models of the same seeds (paired). Every removal is a keyed
job in the store, so attributors that pick the same points share the models,
and an interrupted run resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tdaeval.errors import ConfigError
from tdaeval.groundtruth.executors import Executor
from tdaeval.groundtruth.jobs import TrainJob, derive_seed, make_train_job, run_jobs
from tdaeval.groundtruth.store import ArtifactStore
from tdaeval.groundtruth.truths import GroundTruth
from tdaeval.params import check_int_at_least
from tdaeval.task import Task

__all__ = ["RemovalSpec", "RemovalContext", "RemovalOutcome", "build_removal_context", "removal_outcome", "SELECTIONS"]

SELECTIONS = ("top", "bottom", "random")


@dataclass(frozen=True)
class RemovalSpec:
    """What to remove and retrain.

    Attributes
    ----------
    k_grid : tuple of int
        Numbers of training points removed, increasing.
    n_seeds : int
        R, paired seeds (each removal and the full-data model share them).
    n_test_points : int, optional
        Test points evaluated (a seeded sample; None: all). Each costs
        ``len(k_grid) · R`` trainings per selection.
    seed : int
        Seed of the test-point sample, of random removals and of the training seeds.
    """

    k_grid: tuple[int, ...] = (10, 20, 40)
    n_seeds: int = 2
    n_test_points: int | None = 20
    seed: int = 0

    def __post_init__(self) -> None:
        grid = tuple(self.k_grid)
        if not grid or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in grid) or list(grid) != sorted(set(grid)):
            raise ConfigError(f"The 'k_grid' parameter must be increasing integers >= 1. Got {self.k_grid!r} instead.")
        object.__setattr__(self, "k_grid", grid)
        check_int_at_least("n_seeds", "the removal metrics", self.n_seeds, 1)
        if self.n_test_points is not None:
            check_int_at_least("n_test_points", "the removal metrics", self.n_test_points, 1)


@dataclass
class RemovalContext(GroundTruth):
    """Everything a removal metric needs before it sees scores: the task, where to train, the full-data models.

    Attributes
    ----------
    full_outputs : Tensor
        ``[R, n_test]`` measurement of the full-data models, one per seed.
    test_points : Tensor
        ``[t]`` test indices evaluated.
    """

    task: Task
    spec: RemovalSpec
    store: ArtifactStore
    executor: Executor | str | None
    device: str
    seeds: list[int]
    test_points: Tensor
    full_outputs: Tensor
    provenance: dict[str, Any] = field(default_factory=dict)


def _full_jobs(task: Task, seeds: list[int]) -> list[TrainJob]:
    return [make_train_job(task, torch.arange(task.n_train), seed, purpose="removal") for seed in seeds]


def build_removal_context(
    task: Task,
    spec: RemovalSpec,
    store: ArtifactStore,
    *,
    executor: Executor | str | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> RemovalContext:
    """Train (or load) the ``R`` full-data models and pick the test points."""
    if max(spec.k_grid) >= task.n_train:
        raise ConfigError(f"The 'k_grid' parameter removes up to {max(spec.k_grid)} of {task.n_train} training points; keep k < n_train.")
    seeds = [derive_seed("removal", spec.seed, r) for r in range(spec.n_seeds)]
    jobs = _full_jobs(task, seeds)
    results, _, _ = run_jobs(task, jobs, store, executor=executor, device=device, progress=progress, kind="removal base models")
    if spec.n_test_points is None or spec.n_test_points >= task.n_test:
        test_points = torch.arange(task.n_test)
    else:
        generator = torch.Generator().manual_seed(derive_seed("removal-test-points", spec.seed))
        test_points = torch.sort(torch.randperm(task.n_test, generator=generator)[: spec.n_test_points]).values
    provenance = {
        "k_grid": list(spec.k_grid),
        "n_seeds": spec.n_seeds,
        "seed": spec.seed,
        "test_points": test_points.tolist(),
        "training_seeds": seeds,
        "paired_seeds": True,
        "task_fingerprint": task.fingerprint(),
        "measurement": task.measurement_name,
        "higher_is_better": task.higher_is_better,
        "from_scratch": True,
    }
    return RemovalContext(
        task=task, spec=spec, store=store, executor=executor, device=device, seeds=seeds, test_points=test_points,
        full_outputs=torch.stack([results[job.key] for job in jobs]), provenance=provenance,
    )


@dataclass
class RemovalOutcome:
    """Measurements of the evaluated test points after removals.

    Attributes
    ----------
    outputs : Tensor
        ``[t, len(k_grid), R]``: measurement of test point ``test_points[j]``
        after removing its ``k`` selected training points, per seed.
    full : Tensor
        ``[t, R]``: its measurement with all training data, same seeds.
    selection : str
    jobs_trained : int
    """

    outputs: Tensor
    full: Tensor
    selection: str
    jobs_trained: int

    def harm(self, higher_is_better: bool) -> Tensor:
        """``[t, len(k_grid)]``: how much the removal hurt the measurement, averaged over the paired seeds."""
        change = (self.outputs.double() - self.full.double().unsqueeze(1)).mean(dim=2)
        return -change if higher_is_better else change


def _selected(scores_row: Tensor, k: int, selection: str, generator: torch.Generator) -> Tensor:
    if selection == "top":
        return scores_row.topk(k).indices
    if selection == "bottom":
        return (-scores_row).topk(k).indices
    return torch.randperm(scores_row.numel(), generator=generator)[:k]


def removal_outcome(
    context: RemovalContext,
    scores: Tensor,
    selection: str = "top",
    points: Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RemovalOutcome:
    """Retrain without each evaluated test point's ``k`` selected training points, for every ``k`` and seed.

    Parameters
    ----------
    scores : Tensor
        ``[n_test, n_train]``, positive = supports.
    selection : {"top", "bottom", "random"}
        Remove the highest-scored, the lowest-scored or random training points
        (random: seeded per test point and ``k``, independent of the scores).
    points : Tensor, optional
        Test indices to evaluate (default ``context.test_points``).
    """
    if selection not in SELECTIONS:
        raise ConfigError(f"The 'selection' parameter must be one of {SELECTIONS}. Got {selection!r} instead.")
    task = context.task
    if tuple(scores.shape) != (task.n_test, task.n_train):
        raise ConfigError(f"Removal metrics expect scores [n_test={task.n_test}, n_train={task.n_train}]. Got {tuple(scores.shape)}.")
    everything = torch.arange(task.n_train)
    points = context.test_points if points is None else torch.as_tensor(points, dtype=torch.long)
    grid: list[list[list[TrainJob]]] = []
    for z in points.tolist():
        row = []
        for k in context.spec.k_grid:
            generator = torch.Generator().manual_seed(derive_seed("removal-random", context.spec.seed, z, k))
            keep = torch.ones(task.n_train, dtype=torch.bool)
            keep[_selected(scores[z].double(), k, selection, generator)] = False
            row.append([make_train_job(task, everything[keep], seed, purpose="removal") for seed in context.seeds])
        grid.append(row)
    flat = [job for row in grid for cell in row for job in cell]
    results, _, trained = run_jobs(task, flat, context.store, executor=context.executor, device=context.device, progress=progress, kind="removal")
    outputs = torch.tensor(
        [[[float(results[job.key][z]) for job in cell] for cell in row] for z, row in zip(points.tolist(), grid)],
        dtype=torch.float64,
    ).reshape(len(points), len(context.spec.k_grid), len(context.seeds))
    full = context.full_outputs.T[points].double()  # [t, R]
    return RemovalOutcome(outputs=outputs, full=full, selection=selection, jobs_trained=trained)
