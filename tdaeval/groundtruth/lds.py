"""Ground truth of the linear datamodeling score: M random subsets × R seeds, retrained from scratch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from tdaeval.errors import ConfigError
from tdaeval.groundtruth.executors import Executor
from tdaeval.groundtruth.jobs import TrainJob, derive_seed, make_train_job, run_jobs  # run_jobs: also importable from here
from tdaeval.groundtruth.store import ArtifactStore
from tdaeval.groundtruth.truths import GroundTruth
from tdaeval.params import check_in_open_interval, check_int_at_least
from tdaeval.task import Task

__all__ = ["LDSSpec", "LDSGroundTruth", "subset_masks", "lds_jobs", "build_lds_groundtruth", "run_jobs"]


@dataclass(frozen=True)
class LDSSpec:
    """What to retrain for LDS (docs: Methods §1).

    Attributes
    ----------
    n_subsets : int
        M, the number of random subsets (>= 2).
    alpha : float
        Subset fraction in (0, 1); each subset holds ``floor(alpha * n_train)`` points.
    n_seeds : int
        R, models trained per subset (outputs are averaged over seeds).
    seed : int
        Seed of the subset draw and of the derived training seeds.
    """

    n_subsets: int = 50
    alpha: float = 0.5
    n_seeds: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_int_at_least("n_subsets", "LDS", self.n_subsets, 2)
        check_in_open_interval("alpha", "LDS", self.alpha, 0.0, 1.0)
        check_int_at_least("n_seeds", "LDS", self.n_seeds, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"The 'seed' parameter of LDS must be an integer. Got {self.seed!r} instead.")


def subset_masks(n_train: int, spec: LDSSpec) -> Tensor:
    """``[M, n_train]`` boolean masks of uniformly drawn subsets of size ``floor(alpha * n_train)``."""
    size = int(spec.alpha * n_train)
    if size < 1 or size >= n_train:
        raise ConfigError(
            f"The 'alpha' parameter of LDS gives subsets of {size} of {n_train} training points; "
            "choose alpha so that at least one point is in and one is out."
        )
    generator = torch.Generator().manual_seed(spec.seed)
    masks = torch.zeros(spec.n_subsets, n_train, dtype=torch.bool)
    for j in range(spec.n_subsets):
        masks[j, torch.randperm(n_train, generator=generator)[:size]] = True
    return masks


def lds_jobs(task: Task, spec: LDSSpec, masks: Tensor) -> list[list[TrainJob]]:
    """Jobs ``[M][R]``: subset ``j`` trained from scratch with seed ``r``."""
    return [
        [
            make_train_job(
                task,
                torch.nonzero(masks[j]).flatten(),
                derive_seed("lds", spec.seed, j, r),
                purpose="lds",
            )
            for r in range(spec.n_seeds)
        ]
        for j in range(spec.n_subsets)
    ]


@dataclass
class LDSGroundTruth(GroundTruth):
    """Retrained outputs for LDS.

    Attributes
    ----------
    masks : Tensor
        ``[M, n_train]`` bool.
    outputs : Tensor
        ``[M, R, n_test]`` float32 measurement per subset and seed.
    spec : LDSSpec
    higher_is_better : bool
        Direction of the measurement.
    provenance : dict
    """

    masks: Tensor
    outputs: Tensor
    spec: LDSSpec
    higher_is_better: bool
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_outputs(self) -> Tensor:
        """``[M, n_test]`` outputs averaged over seeds."""
        return self.outputs.mean(dim=1)


def build_lds_groundtruth(
    task: Task,
    spec: LDSSpec,
    store: ArtifactStore,
    *,
    executor: Executor | str | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> LDSGroundTruth:
    """Train (or load from ``store``) every subset model and collect its test measurements.

    Jobs already in the store are reused; the rest run on ``executor`` and are
    stored as each batch finishes, so an interrupted build resumes.

    Parameters
    ----------
    progress : callable, optional
        Called as ``progress(done, total)`` after loading and after each stored job.
    """
    masks = subset_masks(task.n_train, spec)
    jobs = lds_jobs(task, spec, masks)
    results, reused, trained = run_jobs(
        task, [job for row in jobs for job in row], store, executor=executor, device=device, progress=progress, kind="lds"
    )
    outputs = torch.stack([torch.stack([results[job.key] for job in row]) for row in jobs])
    provenance = {
        "kind": "lds",
        **asdict(spec),
        "subset_size": int(masks[0].sum()),
        "task_fingerprint": task.fingerprint(),
        "measurement": task.measurement_name,
        "higher_is_better": task.higher_is_better,
        "training_seeds": [[job.seed for job in row] for row in jobs],
        "jobs_reused": reused,
        "jobs_trained": trained,
        "store": str(store.root),
        "from_scratch": True,
    }
    return LDSGroundTruth(masks=masks, outputs=outputs, spec=spec, higher_is_better=task.higher_is_better, provenance=provenance)
