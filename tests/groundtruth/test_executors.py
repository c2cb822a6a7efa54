"""Executors: the same ground truth from local, process and Ray, bit for bit; clear errors; crash recovery."""


import pytest
import torch

from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, LDSSpec, build_lds_groundtruth, get_executor, plan_batches
from tdaeval.groundtruth.executors import LocalExecutor, ProcessExecutor, RayExecutor
from tdaeval.tasks import DigitsTask

SPEC = LDSSpec(n_subsets=6, seed=3)


@pytest.fixture(scope="module")
def task():
    return DigitsTask(n_train=120, n_test=15)


@pytest.fixture(scope="module")
def local_truth(task, tmp_path_factory):
    return build_lds_groundtruth(task, SPEC, ArtifactStore(tmp_path_factory.mktemp("local")), executor=LocalExecutor(max_models=4))


def test_process_pool_gives_bit_identical_ground_truth(task, local_truth, tmp_path):
    with ProcessExecutor(workers=2, max_models=4) as executor:
        truth = build_lds_groundtruth(task, SPEC, ArtifactStore(tmp_path), executor=executor)
    assert torch.equal(truth.outputs, local_truth.outputs)
    assert truth.provenance["jobs_trained"] == 6


@pytest.mark.slow  # starting ray takes most of its 15-20 s on 2 cores; test_executor_specs builds a RayExecutor fast
def test_ray_gives_bit_identical_ground_truth(task, local_truth, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    executor = RayExecutor(num_cpus=2, max_models=4)
    try:
        truth = build_lds_groundtruth(task, SPEC, ArtifactStore(tmp_path), executor=executor)
        assert ray.is_initialized()
    finally:
        executor.shutdown()
    assert not ray.is_initialized()  # it stopped the instance it started
    assert torch.equal(truth.outputs, local_truth.outputs)


@pytest.mark.slow  # a worker pool that loses a worker and starts another: about 20 s on 2 cores
def test_a_dead_worker_is_replaced_and_the_result_is_unchanged(local_truth, tmp_path, monkeypatch):
    from tests.groundtruth.plugin_tasks import CrashOnceTask

    monkeypatch.setenv("TDAEVAL_TEST_WORKER", "1")  # inherited by the spawned workers
    crashing = CrashOnceTask(str(tmp_path / "marker"), n_train=120, n_test=15)
    with ProcessExecutor(workers=2, max_models=4) as executor:
        truth = build_lds_groundtruth(crashing, SPEC, ArtifactStore(tmp_path / "s"), executor=executor)
    assert (tmp_path / "marker").read_text() == "crashed"
    assert torch.equal(truth.outputs, local_truth.outputs)


def test_batches_are_planned_by_subset_size_and_capacity(task):
    from tdaeval.groundtruth import make_train_job

    jobs = [make_train_job(task, torch.arange(n), seed=i) for i, n in enumerate([5, 5, 7, 5, 7])]
    sizes = [[int(j.indices.numel()) for j in batch] for batch in plan_batches(jobs, 2)]
    assert sizes == [[5, 5], [5], [7, 7]]


@pytest.mark.parametrize(
    "spec,cls",
    [(None, LocalExecutor), ("local", LocalExecutor), ("process:3", ProcessExecutor), ("ray", RayExecutor),
     ({"name": "process", "workers": 2, "max_models": 8}, ProcessExecutor)],
)
def test_executor_specs(spec, cls):
    executor = get_executor(spec)
    assert type(executor) is cls
    executor.shutdown()


@pytest.mark.parametrize(
    "spec,match",
    [("slurm", "Unknown executor 'slurm'"), ("process:0", "'process:N' with N >= 1"), ("process:x", "'process:N'"),
     ({"name": "process", "workers": 0}, "'workers' parameter of ProcessExecutor"), ({"name": "local", "speed": 2}, "Invalid parameters"),
     (3, "must be a name, a mapping or an Executor")],
)
def test_bad_executor_specs_are_named(spec, match):
    with pytest.raises(ConfigError, match=match):
        get_executor(spec)
