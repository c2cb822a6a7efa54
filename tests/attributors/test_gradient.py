import pytest
import torch

from tdaeval.attributors import get, per_sample_grads
from tdaeval.errors import AttributorError
from tdaeval.training import train_model


@pytest.fixture
def trained(small_digits):
    run = train_model(small_digits, small_digits.build_model(0), torch.arange(small_digits.n_train), 0, n_checkpoints=3)
    return small_digits, run


def _loop_grads(task, model, data, objective):
    rows = []
    for i in range(len(data)):
        model.zero_grad()
        objective(model(data.inputs[i : i + 1]), data.targets[i : i + 1]).sum().backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(rows)


def test_per_sample_grads_match_autograd_loop(trained):
    task, run = trained
    data = task.train_data.subset(torch.arange(15))
    ours = per_sample_grads(run.model, task.loss, data, chunk_size=4)
    torch.testing.assert_close(ours, _loop_grads(task, run.model, data, task.loss), atol=1e-6, rtol=1e-5)


def test_grad_dot_orientation_and_value(trained):
    task, run = trained
    scores = get("grad_dot").fit(task, run.model, task.train_data).attribute(task.test_data)
    test_g = _loop_grads(task, run.model, task.test_data, lambda o, y: -task.measurement(o, y))
    train_g = _loop_grads(task, run.model, task.train_data, task.loss)
    torch.testing.assert_close(scores, test_g @ train_g.T, atol=1e-5, rtol=1e-4)


def test_grad_dot_sign_predicts_a_small_sgd_step(trained):
    """A positive score means one gradient step on the training point raises the test margin."""
    task, run = trained
    scores = get("grad_dot").fit(task, run.model, task.train_data).attribute(task.test_data)
    i = int(scores[0].argmax())
    model = run.model
    before = task.measure(model)[0]
    lr = 1e-3
    model.zero_grad()
    task.loss(model(task.train_data.inputs[i : i + 1]), task.train_data.targets[i : i + 1]).sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    after = task.measure(model)[0]
    assert (after - before).item() == pytest.approx(lr * scores[0, i].item(), rel=0.05)


def test_grad_cos_is_bounded_and_scale_free(trained):
    task, run = trained
    cos = get("grad_cos").fit(task, run.model, task.train_data).attribute(task.test_data)
    dot = get("grad_dot").fit(task, run.model, task.train_data).attribute(task.test_data)
    assert cos.abs().max() <= 1.0 + 1e-5
    assert torch.equal(cos > 0, dot > 0)


def test_tracin_sums_learning_rate_weighted_checkpoint_terms(trained):
    task, run = trained
    tracin = get("tracin").fit(task, run.model, task.train_data, checkpoints=run.checkpoints).attribute(task.test_data)
    expected = torch.zeros_like(tracin)
    model = run.model
    for c in run.checkpoints:
        model.load_state_dict(c.params, strict=False)
        expected += c.lr * get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(tracin, expected, atol=1e-5, rtol=1e-4)


def test_tracin_without_checkpoints_is_a_clear_error(trained):
    task, run = trained
    with pytest.raises(AttributorError, match="tracin.*checkpoints"):
        get("tracin").fit(task, run.model, task.train_data)


def test_grad_dot_on_regression_uses_the_error_directly(linear_task):
    model = linear_task.train(linear_task.build_model(0), torch.arange(linear_task.n_train), 0)
    scores = get("grad_dot").fit(linear_task, model, linear_task.train_data).attribute(linear_task.test_data)
    test_g = _loop_grads(linear_task, model, linear_task.test_data, linear_task.measurement)
    train_g = _loop_grads(linear_task, model, linear_task.train_data, linear_task.loss)
    torch.testing.assert_close(scores, (test_g @ train_g.T).float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["grad_dot", "grad_cos", "tracin"])
def test_layerwise_factorisation_equals_dense_gradients(trained, name):
    task, run = trained
    kwargs = dict(checkpoints=run.checkpoints)
    factored = get(name, factorized=True).fit(task, run.model, task.train_data, **kwargs)
    dense = get(name, factorized=False).fit(task, run.model, task.train_data, **kwargs)
    assert dense.train_grads_ is not None
    torch.testing.assert_close(factored.attribute(task.test_data), dense.attribute(task.test_data), atol=1e-5, rtol=1e-4)
    first = factored.train_grads_[0] if name == "tracin" else factored.train_grads_
    assert first.dense is None and first.factors is not None  # no [n, P] per-example gradients held


class _Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(10))

    def forward(self, x):
        return x * self.scale


def test_models_with_other_parameters_fall_back_to_dense_gradients(small_logreg):
    model = torch.nn.Sequential(small_logreg.build_model(0), _Scaled())
    auto = get("grad_dot").fit(small_logreg, model, small_logreg.train_data)
    assert auto.train_grads_.dense is not None
    with pytest.raises(AttributorError, match="factorized=True"):
        get("grad_dot", factorized=True).fit(small_logreg, model, small_logreg.train_data)
