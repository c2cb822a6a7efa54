"""One job runner: ``run_jobs`` lives in ``groundtruth.jobs`` (still importable from ``groundtruth.lds``)."""

from __future__ import annotations

import torch

from tdaeval import groundtruth
from tdaeval.groundtruth import executors, jobs, lds
from tdaeval.groundtruth.store import ArtifactStore


def test_run_jobs_has_one_home():
    assert lds.run_jobs is jobs.run_jobs is groundtruth.run_jobs
    assert jobs.run_jobs.__module__ == "tdaeval.groundtruth.jobs"


def test_executors_only_train_batches():
    """The executors' own job loop (``Executor.run``, never called) is gone: ``run_jobs`` is the runner."""
    assert not hasattr(executors.Executor, "run")


def test_run_jobs_trains_missing_jobs_and_reuses_stored_ones(tmp_path, small_logreg):
    store = ArtifactStore(tmp_path)
    batch = [jobs.make_train_job(small_logreg, torch.arange(0, 100 + 10 * i), jobs.derive_seed("t", i)) for i in range(2)]
    first, reused, trained = jobs.run_jobs(small_logreg, batch, store)
    assert (reused, trained) == (0, 2) and all(first[j.key].shape == (small_logreg.n_test,) for j in batch)
    again, reused, trained = jobs.run_jobs(small_logreg, batch, store)
    assert (reused, trained) == (2, 0)
    assert all(torch.equal(first[j.key], again[j.key]) for j in batch)
