import pytest
import torch

from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, LOOSpec, build_loo_groundtruth, loo_jobs, removed_indices
from tdaeval.training import train_model


def test_retrained_leave_one_out_equals_the_closed_form(linear_task, tmp_path):
    truth = build_loo_groundtruth(linear_task, LOOSpec(n_removed=15, seed=2), ArtifactStore(tmp_path))
    assert truth.removed.shape == (15,) and truth.removed_outputs.shape == (15, 1, linear_task.n_test)
    exact = linear_task.loo_effects()[:, truth.removed]  # Sherman–Morrison, [n_test, k]
    torch.testing.assert_close(truth.effects, exact, atol=1e-6, rtol=0)  # measurements are stored in float32
    assert torch.equal(truth.harm, truth.effects)  # absolute error: lower is better
    assert truth.provenance["model_trainings"] == 16 and truth.provenance["paired_seeds"]


def test_removals_are_seeded_paired_and_from_scratch(small_logreg, tmp_path):
    spec = LOOSpec(n_removed=3, n_seeds=2, seed=1)
    truth = build_loo_groundtruth(small_logreg, spec, ArtifactStore(tmp_path))
    full, without = loo_jobs(small_logreg, spec, truth.removed)
    assert [j.seed for j in full] == [j.seed for j in without[0]] == [j.seed for j in without[2]]  # paired seeds
    job = without[1][1]
    assert int(truth.removed[1]) not in job.indices.tolist() and job.indices.numel() == small_logreg.n_train - 1
    fresh = train_model(small_logreg, small_logreg.build_model(job.seed), job.indices, job.seed).model
    torch.testing.assert_close(truth.removed_outputs[1, 1], small_logreg.measure(fresh), atol=1e-4, rtol=1e-4)
    expected = (truth.removed_outputs.double() - truth.full_outputs.double()).mean(1).T
    torch.testing.assert_close(truth.effects, expected)
    assert torch.equal(truth.harm, -truth.effects)  # margin: higher is better
    again = build_loo_groundtruth(small_logreg, spec, ArtifactStore(tmp_path))
    assert again.provenance["jobs_reused"] == 8 and again.provenance["jobs_trained"] == 0
    torch.testing.assert_close(again.removed_outputs, truth.removed_outputs)


def test_removed_points_are_a_seeded_sample_or_everything():
    spec = LOOSpec(n_removed=5, seed=3)
    assert torch.equal(removed_indices(50, spec), removed_indices(50, spec))
    assert not torch.equal(removed_indices(50, spec), removed_indices(50, LOOSpec(n_removed=5, seed=4)))
    assert torch.equal(removed_indices(4, spec), torch.arange(4))


@pytest.mark.parametrize("params,match", [({"n_removed": 1}, "'n_removed'"), ({"n_seeds": 0}, "'n_seeds'"), ({"seed": 1.5}, "'seed'")])
def test_spec_validation(params, match):
    with pytest.raises(ConfigError, match=match):
        LOOSpec(**params)
