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


# --- nn.Conv2d layers ------------------------------------------------------------------------------------------

from torch import nn  # noqa: E402

from tdaeval.attributors import _linear  # noqa: E402
from tdaeval.attributors._linear import (  # noqa: E402
    collect_gradients,
    conv_patches,
    factored_dot,
    factored_layers,
    factored_sq_norms,
    layer_method,
)
from tdaeval.task import TrainRecipe  # noqa: E402
from tdaeval.tasks import DigitsTask  # noqa: E402


class CNNDigits(DigitsTask):
    """Digits through two convolutions (the data stays [n, 64]); parameter-free modules in between."""

    def build_model(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 6, 3, padding=1, bias=False),
                nn.ReLU(),
                nn.Dropout(0.1),
                nn.Flatten(),
                nn.Linear(96, 10),
            )


@pytest.fixture(scope="module")
def cnn_run():
    task = CNNDigits(n_train=120, n_test=12, recipe=TrainRecipe(epochs=3, batch_size=32))
    return task, train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(2, 3), stride=2, padding=(1, 0)),
        dict(kernel_size=3, dilation=2, padding=2, bias=False),
        dict(kernel_size=4, padding="same"),  # asymmetric: the odd unit of padding goes right / bottom
        dict(kernel_size=3, padding="valid", stride=(1, 2)),
    ],
)
def test_conv_patches_reproduce_the_layer_output(conv):
    layer = nn.Conv2d(3, 5, **conv)
    x = torch.randn(2, 3, 9, 8)
    patches = conv_patches(layer, x)  # [b, T, in·kh·kw]
    out = patches @ layer.weight.reshape(5, -1).T + (0 if layer.bias is None else layer.bias)
    expected = layer(x)
    torch.testing.assert_close(out.transpose(1, 2).reshape(expected.shape), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["grad_dot", "grad_cos", "tracin"])
def test_cnn_factorisation_equals_dense_gradients(cnn_run, name):
    task, run = cnn_run
    kwargs = dict(checkpoints=run.checkpoints)
    factored = get(name, factorized=True).fit(task, run.model, task.train_data, **kwargs)
    dense = get(name, factorized=False).fit(task, run.model, task.train_data, **kwargs)
    first = factored.train_grads_[0] if name == "tracin" else factored.train_grads_
    assert first.dense is None and set(first.factors) == {"1", "4", "8"}
    expected = dense.attribute(task.test_data)
    torch.testing.assert_close(factored.attribute(task.test_data), expected, atol=1e-5, rtol=1e-4)
    auto = get(name).fit(task, run.model, task.train_data, **kwargs)
    assert (auto.train_grads_[0] if name == "tracin" else auto.train_grads_).factors is not None


@pytest.mark.parametrize("storage", ["factors", "materialized", None])
@pytest.mark.parametrize("method", ["positions", "materialize", None])
def test_every_storage_and_product_gives_the_dense_products(cnn_run, monkeypatch, storage, method):
    """Both ways of holding a conv layer and both ways of multiplying agree with vmap(grad), chunking included."""
    task, run = cnn_run
    monkeypatch.setattr(_linear, "_BLOCK_ELEMENTS", 1000)  # several chunks on each side of every product
    model = run.model.eval()
    layers = factored_layers(model)
    objective = lambda o, y: -task.measurement(o, y)  # noqa: E731
    test = collect_gradients(model, layers, objective, task.test_data, chunk_size=5, storage=storage)
    train = collect_gradients(model, layers, task.loss, task.train_data, chunk_size=50, storage=storage)
    assert (train["1"].g is None) == (storage == "factors") and train["8"].g is None  # Linear stays rank one
    dense_test = per_sample_grads(model, objective, task.test_data)
    dense_train = per_sample_grads(model, task.loss, task.train_data)
    torch.testing.assert_close(factored_dot(test, train, method), dense_test @ dense_train.T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(factored_sq_norms(train, method), (dense_train**2).sum(1), atol=1e-5, rtol=1e-4)


def test_layer_method_picks_the_cheaper_product():
    # first conv of the digits CNN: T = 64 positions, 10 inputs (with bias), 4 outputs -> materialise G
    assert layer_method(64, 10, 4) == "materialize"
    # a late conv layer of a CIFAR net: 2x2 map, 4,609 inputs, 512 outputs -> sum over position pairs
    assert layer_method(4, 4609, 512) == "positions"


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(10, 10)

    def forward(self, x):
        return self.linear(torch.relu(self.linear(x)))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: nn.Sequential(nn.Unflatten(1, (4, 4, 4)), nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(),
                               nn.Linear(16, 10)),
         r"factorized=True: nn.Conv2d layer '1' has groups=2"),
        (lambda: nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),
                               nn.Flatten(), nn.Linear(128, 10)),
         r"nn.Conv2d layer '1' has padding_mode='reflect'"),
        (lambda: nn.Sequential(nn.Linear(64, 10), _Twice()), r"layer '1.linear' runs 2 times"),
    ],
)
def test_unsupported_convolutions_and_shared_layers_fall_back_to_vmap(small_logreg, build, match):
    task = small_logreg
    model = build()
    auto = get("grad_dot").fit(task, model, task.train_data)
    assert auto.train_grads_.dense is not None
    dense = get("grad_dot", factorized=False).fit(task, model, task.train_data)
    torch.testing.assert_close(auto.attribute(task.test_data), dense.attribute(task.test_data))
    with pytest.raises(AttributorError, match=match):
        get("grad_dot", factorized=True).fit(task, model, task.train_data)


def test_factorisation_sees_output_gradients_before_in_place_activations(small_logreg):
    """An in-place ReLU after a layer must not replace that layer's output gradient by the ReLU's."""
    task = small_logreg
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(48, 12), nn.ReLU(inplace=True), nn.Linear(12, 10),
    )
    factored = get("grad_dot", factorized=True).fit(task, model, task.train_data).attribute(task.test_data)
    dense = get("grad_dot", factorized=False).fit(task, model, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(factored, dense, atol=1e-5, rtol=1e-4)
