import pytest
import torch

from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, LDSSpec, LocalExecutor, build_lds_groundtruth, lds_jobs, subset_masks
from tdaeval.training import train_model


def test_masks_have_fixed_size_and_are_seeded():
    spec = LDSSpec(n_subsets=6, alpha=0.25, seed=3)
    masks = subset_masks(40, spec)
    assert masks.shape == (6, 40) and masks.dtype == torch.bool
    assert (masks.sum(1) == 10).all()
    assert torch.equal(masks, subset_masks(40, spec))
    assert not torch.equal(masks, subset_masks(40, LDSSpec(n_subsets=6, alpha=0.25, seed=4)))


@pytest.mark.parametrize(
    "params,match",
    [
        ({"alpha": 1.5}, "'alpha' parameter of LDS must be in \\(0, 1\\). Got 1.5"),
        ({"alpha": 0.0}, "'alpha'"),
        ({"n_subsets": 1}, "'n_subsets' parameter of LDS must be an integer >= 2"),
        ({"n_seeds": 0}, "'n_seeds'"),
    ],
)
def test_spec_validation(params, match):
    with pytest.raises(ConfigError, match=match):
        LDSSpec(**params)


def test_ground_truth_models_are_trained_from_scratch(small_logreg, tmp_path):
    spec = LDSSpec(n_subsets=3, n_seeds=2)
    truth = build_lds_groundtruth(small_logreg, spec, ArtifactStore(tmp_path))
    assert truth.outputs.shape == (3, 2, small_logreg.n_test)
    jobs = lds_jobs(small_logreg, spec, truth.masks)
    job = jobs[1][1]
    fresh = train_model(small_logreg, small_logreg.build_model(job.seed), job.indices, job.seed).model
    torch.testing.assert_close(truth.outputs[1, 1], small_logreg.measure(fresh), atol=1e-4, rtol=1e-4)
    assert torch.equal(job.indices, torch.nonzero(truth.masks[1]).flatten())
    assert jobs[1][0].seed != jobs[1][1].seed
    assert truth.provenance["from_scratch"] and truth.provenance["jobs_trained"] == 6


def test_rerun_reuses_every_stored_job(small_logreg, tmp_path):
    spec = LDSSpec(n_subsets=4)
    first = build_lds_groundtruth(small_logreg, spec, ArtifactStore(tmp_path))
    second = build_lds_groundtruth(small_logreg, spec, ArtifactStore(tmp_path))
    assert second.provenance["jobs_reused"] == 4 and second.provenance["jobs_trained"] == 0
    assert torch.equal(first.outputs, second.outputs)


class _Interrupted(Exception):
    pass


def test_interrupted_build_resumes_with_identical_results(small_digits, tmp_path):
    spec = LDSSpec(n_subsets=6, n_seeds=1)
    reference = build_lds_groundtruth(small_digits, spec, ArtifactStore(tmp_path / "reference"))

    store = ArtifactStore(tmp_path / "resumed")
    original_save = store.save
    calls = {"n": 0}

    def save_then_die(key, job_spec, tensors):
        if calls["n"] == 4:
            raise _Interrupted()
        calls["n"] += 1
        original_save(key, job_spec, tensors)

    store.save = save_then_die
    with pytest.raises(_Interrupted):
        build_lds_groundtruth(small_digits, spec, store, executor=LocalExecutor(max_models=2))
    del store.save
    assert len(store.keys()) == 4
    resumed = build_lds_groundtruth(small_digits, spec, store)
    assert resumed.provenance["jobs_reused"] == 4 and resumed.provenance["jobs_trained"] == 2
    assert torch.equal(resumed.outputs, reference.outputs)


def test_executor_batch_size_does_not_change_results(small_digits, tmp_path):
    spec = LDSSpec(n_subsets=5)
    a = build_lds_groundtruth(small_digits, spec, ArtifactStore(tmp_path / "a"), executor=LocalExecutor(max_models=5))
    b = build_lds_groundtruth(small_digits, spec, ArtifactStore(tmp_path / "b"), executor=LocalExecutor(max_models=2))
    torch.testing.assert_close(a.outputs, b.outputs, atol=1e-5, rtol=1e-5)


def test_changed_task_does_not_reuse_jobs(small_logreg, tmp_path):
    from tdaeval.tasks import DigitsTask

    store = ArtifactStore(tmp_path)
    build_lds_groundtruth(small_logreg, LDSSpec(n_subsets=2), store)
    other = DigitsTask(model="logreg", n_train=200, n_test=20, split_seed=1, recipe=small_logreg.recipe)
    truth = build_lds_groundtruth(other, LDSSpec(n_subsets=2), store)
    assert truth.provenance["jobs_reused"] == 0
