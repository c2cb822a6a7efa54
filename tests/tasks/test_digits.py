import pytest
import torch

from tdaeval.errors import ConfigError
from tdaeval.tasks import DigitsTask, get_task, margin


def test_margin_matches_direct_formula(rng):
    logits = torch.randn(6, 10, generator=rng)
    targets = torch.tensor([0, 3, 9, 3, 5, 1])
    expected = torch.stack(
        [logits[i, t] - torch.logsumexp(torch.cat([logits[i, :t], logits[i, t + 1 :]]), 0) for i, t in enumerate(targets)]
    )
    torch.testing.assert_close(margin(logits, targets), expected)


def test_split_sizes_and_no_overlap():
    task = DigitsTask(n_train=300, n_test=50)
    assert task.train_data.inputs.shape == (300, 64) and task.test_data.inputs.shape == (50, 64)
    train_rows = {tuple(r.tolist()) for r in task.train_data.inputs}
    overlap = sum(tuple(r.tolist()) in train_rows for r in task.test_data.inputs)
    assert overlap <= 2  # digits holds a few exact duplicate images; the split itself is disjoint
    assert float(task.train_data.inputs.max()) <= 1.0


def test_model_factory_is_seeded():
    task = DigitsTask(n_train=100, n_test=10)
    a, b, c = task.build_model(1), task.build_model(1), task.build_model(2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_trained_mlp_learns_digits():
    task = DigitsTask()
    model = task.train(task.build_model(0), torch.arange(task.n_train), 0)
    accuracy = (task.measure(model) > 0).float().mean().item()
    assert accuracy > 0.9


def test_fingerprint_changes_with_config_and_is_stable():
    assert DigitsTask(n_train=100, n_test=10).fingerprint() == DigitsTask(n_train=100, n_test=10).fingerprint()
    assert DigitsTask(n_train=100, n_test=10).fingerprint() != DigitsTask(n_train=100, n_test=10, dropout=0.2).fingerprint()
    assert DigitsTask(n_train=100, n_test=10).fingerprint() != DigitsTask(n_train=100, n_test=10, model="logreg").fingerprint()


@pytest.mark.parametrize(
    "params,match",
    [({"n_train": 1800}, "n_train"), ({"n_test": 0}, "n_test"), ({"model": "cnn"}, "model"), ({"dropout": 1.0}, "dropout")],
)
def test_bad_parameters(params, match):
    with pytest.raises(ConfigError, match=match):
        DigitsTask(**params)


def test_get_task_by_name():
    assert isinstance(get_task("digits", n_train=50, n_test=5), DigitsTask)
    with pytest.raises(ConfigError, match="Unknown task"):
        get_task("imagenet")
