"""Ground truth of the linear datamodeling score: M random subsets × R seeds, retrained from scratch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from tdaeval.errors import ConfigError, check_in_open_interval, check_int_at_least
from tdaeval.groundtruth.executors import Executor, get_executor, plan_batches
from tdaeval.groundtruth.jobs import TrainJob, derive_seed, make_train_job
from tdaeval.groundtruth.sharding import IncompleteGroundTruth, current_mode
from tdaeval.groundtruth.store import ArtifactStore
from tdaeval.task import Task

__all__ = ["LDSSpec", "LDSGroundTruth", "subset_masks", "lds_jobs", "build_lds_groundtruth", "run_jobs"]

#: How often a run waiting for jobs that another live run claimed looks for their results.
CLAIM_POLL_SECONDS = 0.5


def _poll_wait() -> None:
    """Pause between two looks for the results of jobs that another run claimed."""
    time.sleep(CLAIM_POLL_SECONDS)


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
class LDSGroundTruth:
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


def run_jobs(
    task: Task,
    jobs: list[TrainJob],
    store: ArtifactStore,
    *,
    executor: Executor | str | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    kind: str = "jobs",
) -> tuple[dict[str, Tensor], int, int]:
    """Test measurements ``[n_test]`` of ``jobs`` by key: loaded from ``store``, the rest trained and stored.

    Batches are planned over all jobs (stored or not), and a batch with any
    missing job is trained whole, so a job is always trained in the same
    company whether the build is fresh, resumed or sharded. Each result is
    stored as its batch finishes, so an interrupted build resumes. Under
    :func:`~tdaeval.groundtruth.sharding.build_mode` only this shard's jobs
    are trained (or none, when planning), and a build that stays incomplete
    raises :class:`~tdaeval.groundtruth.sharding.IncompleteGroundTruth`.

    Runs on one store share the work: a run claims each missing job just
    before training it (:meth:`~tdaeval.groundtruth.store.ArtifactStore.claim`),
    trains other jobs first when a live run holds one, then waits for the
    claimed jobs' results (polling every ``CLAIM_POLL_SECONDS``) and trains
    them itself when the claim is released without a result or goes stale.

    Returns
    -------
    tuple
        The results by key, the number reused and the number trained (by this run).
    """
    unique = list({job.key: job for job in jobs}.values())
    results: dict[str, Tensor] = {}
    for job in unique:
        stored = store.load(job.key, job.spec)
        if stored is not None and stored.get("outputs") is not None and stored["outputs"].shape == (task.n_test,):
            results[job.key] = stored["outputs"]
    reused = len(results)
    if progress:
        progress(len(results), len(unique))
    mode = current_mode()
    mine = [job for job in unique if mode is None or mode.owns(job.key)]
    runner = get_executor(executor, device=device)
    pending = [b for b in plan_batches(mine, runner.max_models) if any(job.key not in results for job in b)]
    if pending:
        store.check_writable("train missing jobs")  # before any training, not after the first batch
    trained = 0

    def collect(job: TrainJob) -> bool:
        """Load ``job`` if another run stored it meanwhile."""
        if store.has(job.key):
            stored = store.load(job.key, job.spec)
            if stored is not None and stored.get("outputs") is not None and stored["outputs"].shape == (task.n_test,):
                results[job.key] = stored["outputs"]
        return job.key in results

    def claimed(batches: list[list[TrainJob]], blocked: list[list[TrainJob]]) -> Iterator[list[TrainJob]]:
        """The batches this run claimed, each claimed just before the executor takes it (lazily for ``local``)."""
        for batch in batches:
            missing = [job for job in batch if job.key not in results and not collect(job)]
            taken = []
            for job in missing:
                if not store.claim(job.key):
                    break
                taken.append(job)
            if len(taken) < len(missing):  # a live run trains some of it: other batches first, this one later
                for job in taken:
                    store.release(job.key)
                blocked.append(batch)
                continue
            for job in taken:  # stored between our look and our claim
                if collect(job):
                    store.release(job.key)
            if any(job.key not in results for job in batch):
                yield batch  # trained whole, as in a fresh run: same company, same numbers

    try:
        while pending:
            blocked: list[list[TrainJob]] = []
            ran = False
            for batch, measurements in runner.map(task, claimed(pending, blocked)):
                ran = True
                for job, row in zip(batch, measurements):
                    if job.key not in results:
                        store.save(job.key, job.spec, {"outputs": row.clone()})
                        results[job.key] = row.clone()
                        store.release(job.key)
                        trained += 1
                if progress:
                    progress(len(results), len(unique))
            pending = [b for b in blocked if not all(job.key in results or collect(job) for job in b)]
            if pending and not ran:
                _poll_wait()  # every remaining job is claimed by a live run: wait for its results
            if progress and blocked:
                progress(len(results), len(unique))
    finally:
        for job in mine:
            store.release(job.key)
        if not isinstance(executor, Executor):
            runner.shutdown()
    missing = len(unique) - len(results)
    if mode is not None:
        mode.counts.append({"kind": kind, "jobs": len(unique), "stored": reused, "trained": trained, "missing": missing})
        if missing:
            raise IncompleteGroundTruth(kind, missing, len(unique))
    return results, reused, trained


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
