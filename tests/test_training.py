import warnings

import pytest
import torch
from torch import nn

from tdaeval.errors import ConfigError
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask
from tdaeval.training import StackedModels, checkpoint_epochs, train_model, train_models


def _subsets(n_train, size, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n_train, generator=g)[:size] for _ in range(count)]


@pytest.mark.parametrize("fixture", ["small_digits", "small_logreg"])
def test_batched_training_equals_sequential(fixture, request):
    task = request.getfixturevalue(fixture)
    subsets = _subsets(task.n_train, 100, 4)
    seeds = [11, 22, 33, 44]
    stacked = train_models(task, subsets, seeds)
    for i, (subset, seed) in enumerate(zip(subsets, seeds)):
        alone = train_model(task, task.build_model(seed), subset, seed).model
        for name, param in alone.named_parameters():
            torch.testing.assert_close(stacked.params[name][i], param.detach(), atol=2e-5, rtol=1e-4)
    measured = stacked.measure(task)
    assert measured.shape == (4, task.n_test)
    torch.testing.assert_close(measured[2], task.measure(stacked.model(2)))


def test_batched_equals_sequential_for_full_default_recipe():
    """The default digits MLP (dropout 0.1, 20 epochs) stays equal, not only for short runs."""
    task = DigitsTask(n_train=300, n_test=30)
    subsets, seeds = _subsets(300, 150, 2, seed=5), [3, 4]
    stacked = train_models(task, subsets, seeds)
    for i, (subset, seed) in enumerate(zip(subsets, seeds)):
        alone = train_model(task, task.build_model(seed), subset, seed).model
        torch.testing.assert_close(stacked.measure(task)[i], task.measure(alone), atol=1e-3, rtol=1e-3)


def test_dropout_masks_differ_between_seeds_and_matter(small_digits):
    subset = torch.arange(100)
    a = train_models(small_digits, [subset, subset], [1, 2]).measure(small_digits)
    b = train_models(small_digits, [subset], [1]).measure(small_digits)
    torch.testing.assert_close(a[0], b[0])  # same seed, same model whatever the batch
    assert not torch.allclose(a[0], a[1])


def test_training_is_reproducible_and_leaves_global_rng_alone(small_digits):
    state = torch.get_rng_state()
    first = train_models(small_digits, [torch.arange(80)], [7]).measure(small_digits)
    second = train_models(small_digits, [torch.arange(80)], [7]).measure(small_digits)
    assert torch.equal(first, second)
    assert torch.equal(state, torch.get_rng_state())


def test_falls_back_for_tasks_that_override_train(linear_task):
    subsets = _subsets(linear_task.n_train, 20, 3)
    stacked = train_models(linear_task, subsets, [0, 1, 2])
    for i, subset in enumerate(subsets):
        exact = linear_task.train(linear_task.build_model(0), subset, 0)
        torch.testing.assert_close(stacked.params["weight"][i], exact.weight.detach())


class _DataDependent(nn.Module):
    """Python control flow on tensor values: vmap cannot run it."""

    def forward(self, x):
        return x if bool(x.sum() > 0) else -x


class _BatchNormTask(DigitsTask):
    def build_model(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10))


class _DataDependentTask(DigitsTask):
    def build_model(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(64, 8), _DataDependent(), nn.Linear(8, 10))


def test_batchnorm_running_stats_are_trained_per_model():
    task = _BatchNormTask(n_train=100, n_test=10, recipe=TrainRecipe(epochs=2, batch_size=25))
    subsets = _subsets(100, 50, 2)
    stacked = train_models(task, subsets, [1, 2])
    alone = train_model(task, task.build_model(2), subsets[1], 2).model
    torch.testing.assert_close(stacked.buffers["1.running_mean"][1], alone[1].running_mean, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stacked.measure(task)[1], task.measure(alone), atol=1e-4, rtol=1e-4)


def test_falls_back_with_warning_when_vmap_cannot_run_the_model():
    task = _DataDependentTask(n_train=100, n_test=10, recipe=TrainRecipe(epochs=1, batch_size=25))
    subsets = _subsets(100, 50, 2)
    with pytest.warns(UserWarning, match="one model at a time"):
        stacked = train_models(task, subsets, [1, 2])
    alone = train_model(task, task.build_model(2), subsets[1], 2).model
    torch.testing.assert_close(stacked.measure(task)[1], task.measure(alone))


def test_unequal_subset_sizes_are_trained_one_at_a_time(small_logreg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stacked = train_models(small_logreg, [torch.arange(50), torch.arange(60)], [1, 2])
    assert len(stacked) == 2


@pytest.mark.parametrize(
    "subsets,seeds,match",
    [([torch.arange(10)], [1, 2], "one seed per subset"), ([torch.tensor([0, 999])], [1], r"\[0, 200\)"), ([], [], "at least one")],
)
def test_bad_inputs_are_clear_errors(small_logreg, subsets, seeds, match):
    with pytest.raises(ConfigError, match=match):
        train_models(small_logreg, subsets, seeds)


def test_checkpoints_are_evenly_spaced_and_end_at_the_final_model(small_logreg):
    assert checkpoint_epochs(20, 5) == [4, 8, 12, 16, 20]
    assert checkpoint_epochs(3, 5) == [1, 2, 3]
    assert checkpoint_epochs(3, 0) == []
    run = train_model(small_logreg, small_logreg.build_model(0), torch.arange(200), 0, n_checkpoints=2)
    assert [c.epoch for c in run.checkpoints] == [2, 3]
    for name, param in run.model.named_parameters():
        assert torch.equal(run.checkpoints[-1].params[name], param.detach())
    assert run.checkpoints[0].lr == small_logreg.recipe.lr


def test_stacked_models_roundtrip(small_logreg):
    models = [small_logreg.build_model(s) for s in range(3)]
    stacked = StackedModels.from_models(models)
    for i, m in enumerate(models):
        torch.testing.assert_close(stacked.model(i)(small_logreg.test_data.inputs), m(small_logreg.test_data.inputs))


def test_batched_training_builds_each_model_once(monkeypatch):
    """Building a model can be costly (a fine-tuning task's base, a user's factory): train_models must not build extra
    ones, e.g. to size its groups of stacked models."""
    from tdaeval import training
    from tdaeval.tasks import DigitsTask

    task = DigitsTask(n_train=60, n_test=5, hidden=8, recipe=TrainRecipe(epochs=1, batch_size=20))
    built: list[int] = []
    original = task.build_model
    monkeypatch.setattr(task, "build_model", lambda seed: built.append(int(seed)) or original(seed))
    monkeypatch.setattr(training, "GROUP_OUTPUT_BYTES", 1)  # one model per group: the sizing model must still be used once
    subsets = [torch.arange(0, 30), torch.arange(30, 60), torch.arange(15, 45)]
    stacked = training.train_models(task, subsets, [5, 6, 7])
    assert sorted(built) == [5, 6, 7] and len(stacked) == 3
    alone = training.train_model(task, DigitsTask(n_train=60, n_test=5, hidden=8).build_model(5), subsets[0], 5).model
    for name, value in alone.named_parameters():
        torch.testing.assert_close(stacked.params[name][0], value.detach(), rtol=1e-5, atol=1e-6)
