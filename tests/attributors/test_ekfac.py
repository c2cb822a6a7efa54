import pytest
import torch
from torch import nn

from tdaeval.attributors import get
from tdaeval.attributors.ekfac import apply_ekfac_inverse, fit_ekfac
from tdaeval.errors import AttributorError
from tdaeval.tasks import DigitsTask, LinearRegressionTask
from tdaeval.training import train_model


def _dense(factors):
    """The EK-FAC matrix of each layer written out: (Q_S ⊗ Q_A) diag(Λ) (Q_S ⊗ Q_A)ᵀ, in [out, in+1] layout."""
    blocks = []
    for layer in factors.layers:
        basis = torch.kron(layer.q_out, layer.q_in)
        blocks.append(basis @ torch.diag(layer.eigenvalues.flatten()) @ basis.T)
    return blocks


def test_inverse_matches_the_dense_ekfac_matrix():
    task = DigitsTask(n_train=80, n_test=4, hidden=6, recipe=DigitsTask().recipe.__class__(epochs=2))
    model = train_model(task, task.build_model(0), torch.arange(80), 0).model
    factors = fit_ekfac(task, model, task.train_data, sampled=False)
    vectors = torch.randn(3, factors.n_params, dtype=torch.float64)
    solved = apply_ekfac_inverse(factors, vectors, damping=0.01)
    for layer, dense in zip(factors.layers, _dense(factors)):
        w_start, w_shape = factors.offsets[layer.weight]
        b_start, _ = factors.offsets[layer.bias]
        out_dim, in_dim = w_shape
        def block(v):
            w = v[:, w_start : w_start + out_dim * in_dim].reshape(-1, out_dim, in_dim)
            return torch.cat([w, v[:, b_start : b_start + out_dim].unsqueeze(2)], 2).reshape(v.shape[0], -1)
        expected = torch.linalg.solve(dense + 0.01 * torch.eye(dense.shape[0], dtype=dense.dtype), block(vectors).T).T
        torch.testing.assert_close(block(solved), expected, atol=1e-8, rtol=1e-6)


def test_sampled_fisher_of_linear_regression_approaches_the_hessian():
    """For squared loss the Fisher with sampled targets is the Hessian in expectation."""
    task = LinearRegressionTask(n_train=3000, n_test=10, n_features=4, ridge=1e-9)
    model = task.train(task.build_model(0), torch.arange(task.n_train), 0)
    explicit = get("influence", solver="explicit", damping=0.0).fit(task, model, task.train_data)
    ekfac = get("influence", solver="ekfac", damping=0.0).fit(task, model, task.train_data)
    vectors = torch.randn(5, 5, dtype=torch.float64)
    a, b = explicit.inverse_hvp(vectors), ekfac.inverse_hvp(vectors)
    assert ((a - b).norm() / a.norm()).item() < 0.1


def test_ekfac_supports_its_own_copy_and_refuses_other_layers():
    task = DigitsTask(model="logreg", n_train=200, n_test=20)
    model = train_model(task, task.build_model(0), torch.arange(200), 0).model
    copies = torch.arange(0, 40, 4)
    scores = get("influence", solver="ekfac").fit(task, model, task.train_data).attribute(task.train_data.subset(copies))
    assert (scores[torch.arange(10), copies] > 0).all()

    class WithNorm(DigitsTask):
        def build_model(self, seed):
            return nn.Sequential(nn.Linear(64, 8), nn.LayerNorm(8), nn.Linear(8, 10))

    other = WithNorm(n_train=50, n_test=5)
    with pytest.raises(AttributorError, match="solver='ekfac'.*nn.Linear.*1.weight"):
        get("influence", solver="ekfac").fit(other, other.build_model(0), other.train_data)


# --- nn.Conv2d layers ------------------------------------------------------------------------------------------

from tdaeval.attributors.gradient import per_sample_grads  # noqa: E402
from tdaeval.task import TrainRecipe  # noqa: E402


class CNNDigits(DigitsTask):
    """Digits through two small convolutions (one without bias) and a linear read-out; data stays [n, 64]."""

    def build_model(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, 3, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(3, 4, 2, stride=2, bias=False),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(16, 10),
            )


@pytest.fixture(scope="module")
def cnn():
    task = CNNDigits(n_train=150, n_test=6, recipe=TrainRecipe(epochs=4, batch_size=32))
    return task, train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)


def _blocks(factors, vectors):
    """Each layer's slice of flat vectors ``[k, P]`` as ``[k, out·in(+1)]`` (weight as [out, -1], bias last)."""
    out = []
    for layer in factors.layers:
        w_start, w_shape = factors.offsets[layer.weight]
        n_out, n_in = w_shape[0], torch.Size(w_shape).numel() // w_shape[0]
        w = vectors[:, w_start : w_start + n_out * n_in].reshape(-1, n_out, n_in)
        if layer.bias is not None:
            b_start, _ = factors.offsets[layer.bias]
            w = torch.cat([w, vectors[:, b_start : b_start + n_out].unsqueeze(2)], 2)
        out.append(w.reshape(vectors.shape[0], -1))
    return out


def test_conv_inverse_matches_the_dense_ekfac_matrix(cnn):
    task, run = cnn
    factors = fit_ekfac(task, run.model, task.train_data, sampled=True, chunk_size=64)
    assert [tuple(layer.eigenvalues.shape) for layer in factors.layers] == [(3, 10), (4, 12), (10, 17)]
    vectors = torch.randn(3, factors.n_params, dtype=torch.float64)
    solved = apply_ekfac_inverse(factors, vectors, damping=0.01)
    covered = 0
    for dense, v, x in zip(_dense(factors), _blocks(factors, vectors), _blocks(factors, solved)):
        expected = torch.linalg.solve(dense + 0.01 * torch.eye(dense.shape[0], dtype=dense.dtype), v.T).T
        torch.testing.assert_close(x, expected, atol=1e-8, rtol=1e-6)
        covered += v.shape[1]
    assert covered == factors.n_params  # every parameter belongs to one block


def _patch_covariance(x, kernel, padding):
    """``E[a aᵀ]`` of a first conv layer's (bias-augmented) patches, by explicit slicing rather than unfold."""
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    n, c, h, w = padded.shape
    rows = []
    for i in range(h - kernel + 1):
        for j in range(w - kernel + 1):
            rows.append(padded[:, :, i : i + kernel, j : j + kernel].reshape(n, -1))
    a = torch.cat([torch.stack(rows, 1).reshape(-1, c * kernel * kernel), torch.ones(n * len(rows), 1)], 1).double()
    return a.T @ a / a.shape[0]


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_corrected_eigenvalues_are_the_gradient_second_moments_in_the_eigenbasis(cnn, model):
    """Λ = diag((Q_S ⊗ Q_A)ᵀ E[vec G_i vec G_iᵀ] (Q_S ⊗ Q_A)), G_i from vmap(grad), not from the factors."""
    if model == "cnn":
        task, run = cnn
        trained = run.model
    else:
        task = DigitsTask(n_train=100, n_test=4, hidden=5, recipe=TrainRecipe(epochs=2))
        trained = train_model(task, task.build_model(0), torch.arange(100), 0).model
    factors = fit_ekfac(task, trained, task.train_data, sampled=False, chunk_size=40)
    grads = per_sample_grads(trained.eval(), task.loss, task.train_data).double()  # [n, P]
    for layer, g in zip(factors.layers, _blocks(factors, grads)):
        basis = torch.kron(layer.q_out, layer.q_in)
        moments = (g @ basis) ** 2  # rows: (Q_S ⊗ Q_A)ᵀ vec G_i, squared
        torch.testing.assert_close(layer.eigenvalues.flatten(), moments.mean(0), atol=1e-9, rtol=1e-5)
    if model == "cnn":  # the input-side basis diagonalises the patch covariance of the first conv layer
        first = factors.layers[0]
        a_cov = _patch_covariance(task.train_data.inputs.reshape(-1, 1, 8, 8), 3, 1)
        rotated = first.q_in.T @ a_cov @ first.q_in
        off_diagonal = rotated - torch.diag(torch.diagonal(rotated))
        assert off_diagonal.abs().max() < 1e-8 * rotated.abs().max()


@pytest.mark.slow
def test_ekfac_on_a_cnn_supports_its_own_copy_and_source_runs(cnn):
    task, run = cnn
    copies = torch.arange(0, 40, 4)
    for solver in ("ekfac", "astra"):
        influence = get("influence", solver=solver, astra_iter=5).fit(task, run.model, task.train_data)
        scores = influence.attribute(task.train_data.subset(copies))
        assert scores.shape == (10, task.n_train) and torch.isfinite(scores).all()
        assert (scores[torch.arange(10), copies] > 0).all()
    for name in ("source", "fast_source"):
        source = get(name, n_segments=2).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
        scores = source.attribute(task.train_data.subset(copies))
        assert torch.isfinite(scores).all() and (scores[torch.arange(10), copies] > 0).all()


@pytest.mark.parametrize(
    "layer, match",
    [
        (nn.BatchNorm2d(2), r"solver='ekfac'.*nn.Linear or nn.Conv2d.*'2.weight', '2.bias'"),
        (nn.Conv2d(2, 2, 3, padding=1, groups=2), r"solver='ekfac': nn.Conv2d layer '2' has groups=2"),
    ],
)
def test_ekfac_refuses_other_layers_in_a_cnn(layer, match):
    class Other(DigitsTask):
        def build_model(self, seed):
            return nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 3, padding=1), layer, nn.Flatten(), nn.Linear(128, 10)
            )

    other = Other(n_train=30, n_test=3)
    with pytest.raises(AttributorError, match=match):
        get("influence", solver="ekfac").fit(other, other.build_model(0), other.train_data)
