"""Ground truth of leave-one-out: retrain without each of a set of training points (docs: Methods §2).

``Δ_i(z) = f(z; θ(D∖z_i)) − f(z; θ(D))`` for every removed point ``i`` and test
point ``z``, each model trained from scratch. With ``R`` seeds the removal and
the full-data model share a seed (paired seeds), and ``Δ`` is averaged over
them: the expected leave-one-out effect. Cost: ``R · (n_removed + 1)`` model
trainings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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

__all__ = ["LOOSpec", "LOOGroundTruth", "removed_indices", "loo_jobs", "build_loo_groundtruth"]


@dataclass(frozen=True)
class LOOSpec:
    """What to retrain for leave-one-out.

    Attributes
    ----------
    n_removed : int
        Training points left out, one at a time (a seeded sample; all of them
        when it is at least ``n_train``).
    n_seeds : int
        R, paired seeds: each removal and the full-data model are trained with
        the same ``R`` seeds and the effect is averaged over them.
    seed : int
        Seed of the sample of removed points and of the training seeds.
    """

    n_removed: int = 100
    n_seeds: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_int_at_least("n_removed", "LOO", self.n_removed, 2)
        check_int_at_least("n_seeds", "LOO", self.n_seeds, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"The 'seed' parameter of LOO must be an integer. Got {self.seed!r} instead.")


def removed_indices(n_train: int, spec: LOOSpec) -> Tensor:
    """``[k]`` sorted training indices to leave out: a seeded sample of ``n_removed`` (or all)."""
    if n_train < 3:
        raise ConfigError(f"Leave-one-out needs at least 3 training points. Got {n_train}.")
    if spec.n_removed >= n_train:
        return torch.arange(n_train)
    generator = torch.Generator().manual_seed(spec.seed)
    return torch.sort(torch.randperm(n_train, generator=generator)[: spec.n_removed]).values


def loo_jobs(task: Task, spec: LOOSpec, removed: Tensor) -> tuple[list[TrainJob], list[list[TrainJob]]]:
    """Jobs: the full-data model ``[R]`` and each removal ``[k][R]``, seed ``r`` shared (paired)."""
    everything = torch.arange(task.n_train)
    seeds = [derive_seed("loo", spec.seed, r) for r in range(spec.n_seeds)]
    full = [make_train_job(task, everything, seed, purpose="loo") for seed in seeds]
    without = [
        [make_train_job(task, everything[everything != int(i)], seed, purpose="loo") for seed in seeds]
        for i in removed
    ]
    return full, without


@dataclass
class LOOGroundTruth(GroundTruth):
    """Retrained outputs for leave-one-out.

    Attributes
    ----------
    removed : Tensor
        ``[k]`` training indices left out.
    full_outputs : Tensor
        ``[R, n_test]`` measurement of the full-data models.
    removed_outputs : Tensor
        ``[k, R, n_test]`` measurement without each removed point (same seeds).
    spec : LOOSpec
    higher_is_better : bool
    provenance : dict
    """

    removed: Tensor
    full_outputs: Tensor
    removed_outputs: Tensor
    spec: LOOSpec
    higher_is_better: bool
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def effects(self) -> Tensor:
        """``[n_test, k]`` float64: ``Δ_i(z)`` averaged over the paired seeds."""
        return (self.removed_outputs.double() - self.full_outputs.double().unsqueeze(0)).mean(dim=1).T

    @property
    def harm(self) -> Tensor:
        """``[n_test, k]``: how much removing ``i`` hurt ``z`` (positive = ``i`` supported ``z``)."""
        return -self.effects if self.higher_is_better else self.effects


def build_loo_groundtruth(
    task: Task,
    spec: LOOSpec,
    store: ArtifactStore,
    *,
    executor: Executor | str | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> LOOGroundTruth:
    """Train (or load from ``store``) the full-data and leave-one-out models and collect their measurements."""
    removed = removed_indices(task.n_train, spec)
    full, without = loo_jobs(task, spec, removed)
    jobs = full + [job for row in without for job in row]
    results, reused, trained = run_jobs(task, jobs, store, executor=executor, device=device, progress=progress, kind="loo")
    full_outputs = torch.stack([results[job.key] for job in full])
    removed_outputs = torch.stack([torch.stack([results[job.key] for job in row]) for row in without])
    provenance = {
        "kind": "loo",
        **asdict(spec),
        "removed": removed.tolist(),
        "task_fingerprint": task.fingerprint(),
        "measurement": task.measurement_name,
        "higher_is_better": task.higher_is_better,
        "training_seeds": [job.seed for job in full],
        "paired_seeds": True,
        "model_trainings": len(jobs),
        "jobs_reused": reused,
        "jobs_trained": trained,
        "store": str(store.root),
        "from_scratch": True,
    }
    return LOOGroundTruth(
        removed=removed, full_outputs=full_outputs, removed_outputs=removed_outputs, spec=spec,
        higher_is_better=task.higher_is_better, provenance=provenance,
    )
