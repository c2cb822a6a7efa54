"""Retraining jobs: train from scratch on a subset with a seed, measure the test split; run them.

A :class:`TrainJob` is keyed by the content hash of everything that determines
its result; :func:`run_jobs` loads the stored ones and trains the rest on an
executor, sharing the work with other runs on the same store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tdaeval.groundtruth.executors import Executor, get_executor, plan_batches
from tdaeval.groundtruth.sharding import IncompleteGroundTruth, current_mode
from tdaeval.groundtruth.store import ArtifactStore, job_key
from tdaeval.hashing import derive_seed, sha256_json
from tdaeval.task import Task

__all__ = ["TrainJob", "make_train_job", "derive_seed", "run_jobs", "GROUNDTRUTH_VERSION", "CLAIM_POLL_SECONDS"]

#: Bumped whenever the math of a job changes, so old cache entries are not reused.
GROUNDTRUTH_VERSION = 1

#: How often a run waiting for jobs that another live run claimed looks for their results.
CLAIM_POLL_SECONDS = 0.5


def _poll_wait() -> None:
    """Pause between two looks for the results of jobs that another run claimed."""
    time.sleep(CLAIM_POLL_SECONDS)


@dataclass(frozen=True)
class TrainJob:
    """Train a fresh model on ``indices`` with ``seed``; its result is the test measurement ``[n_test]``.

    Attributes
    ----------
    key : str
        sha256 of ``spec``.
    spec : dict
        Everything that determines the result (task fingerprint, indices digest, seed, version).
    indices : Tensor
        ``[k]`` training indices, sorted.
    seed : int
        Training seed (initialisation, batch order, dropout).
    """

    key: str
    spec: dict[str, Any]
    indices: Tensor
    seed: int


def make_train_job(task: Task, indices: Tensor, seed: int, **labels: Any) -> TrainJob:
    """A :class:`TrainJob` with its content-hash key; ``labels`` are recorded in the spec."""
    indices = torch.sort(torch.as_tensor(indices, dtype=torch.long)).values
    spec = {
        "kind": "train_measure",
        "version": GROUNDTRUTH_VERSION,
        "task": task.fingerprint(),
        "n_indices": int(indices.numel()),
        "indices_sha256": sha256_json(indices.tolist()),
        "seed": int(seed),
        **labels,
    }
    return TrainJob(key=job_key(spec), spec=spec, indices=indices, seed=int(seed))


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
