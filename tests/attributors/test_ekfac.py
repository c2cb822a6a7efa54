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
