import pytest
import torch

from tdaeval.errors import ConfigError
from tdaeval.tasks import SyntheticTask, get_task


def test_same_seed_same_data_and_fingerprint_other_seed_other():
    a, b, c = SyntheticTask(n_train=500, n_test=20), get_task("synthetic", n_train=500, n_test=20), SyntheticTask(n_train=500, n_test=20, data_seed=1)
    assert torch.equal(a.train_data.inputs, b.train_data.inputs) and a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.train_data.inputs.shape == (500, 32) and set(a.train_data.targets.tolist()) <= set(range(10))


def test_logistic_regression_learns_separable_clusters():
    from tdaeval.suites.runner import train_reference

    task = SyntheticTask(n_train=2000, n_test=200, separation=3.0)
    model, _ = train_reference(task)
    accuracy = (model(task.test_data.inputs).argmax(1) == task.test_data.targets).float().mean()
    assert accuracy > 0.9


@pytest.mark.parametrize("params,match", [({"n_train": 1}, "'n_train'"), ({"n_classes": 1}, "'n_classes'"), ({"separation": 0}, "'separation'")])
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticTask(**params)
