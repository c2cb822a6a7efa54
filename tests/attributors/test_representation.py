import pytest
import torch

from tdaeval.attributors import get
from tdaeval.training import train_model


def test_representer_on_logistic_regression_matches_the_kernel_formula(small_logreg):
    task = small_logreg
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    scores = get("representer").fit(task, model, task.train_data).attribute(task.test_data)
    x_train, x_test = task.train_data.inputs, task.test_data.inputs  # the features of a single linear layer
    with torch.no_grad():
        p_train = model(x_train).softmax(1)
        logits = model(x_test)
    alpha = torch.nn.functional.one_hot(task.train_data.targets, 10).float() - p_train  # -dL/dlogits
    p_test = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(task.test_data.targets, 10).float()
    # d margin / d logits: +1 at the label, minus the softmax over the other classes elsewhere
    others = torch.where(onehot.bool(), torch.zeros_like(p_test), p_test)
    d_margin = onehot - others / others.sum(1, keepdim=True)
    expected = (x_test @ x_train.T) * (d_margin @ alpha.T)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)


def test_similarity_is_a_cosine(small_digits):
    task = small_digits
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    test = task.train_data.subset(torch.tensor([3, 7]))
    scores = get("similarity").fit(task, model, task.train_data).attribute(test)
    assert scores.max() <= 1 + 1e-5 and scores.min() >= -1 - 1e-5
    assert scores[0, 3].item() > 0.999 and scores[1, 7].item() > 0.999


@pytest.mark.parametrize("name", ["representer", "similarity"])
def test_device_parameter_runs_on_a_copy_and_rejects_nonsense(small_digits, name):
    from tdaeval.errors import ConfigError
    from tdaeval.training import train_model

    task = small_digits
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    default = get(name).fit(task, model, task.train_data).attribute(task.test_data)
    on_cpu = get(name, device="cpu").fit(task, model, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(on_cpu, default)
    with pytest.raises(ConfigError, match="'device'"):
        get(name, device="not-a-device").fit(task, model, task.train_data)
