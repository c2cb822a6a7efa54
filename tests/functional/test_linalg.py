import pytest
import torch

from tdaeval.functional.linalg import conjugate_gradient, lanczos_eigenpairs, lissa


@pytest.fixture
def spd(rng):
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=rng, dtype=torch.float64))
    values = torch.linspace(0.1, 3.0, 30, dtype=torch.float64)
    return q @ torch.diag(values) @ q.T


def test_cg_solves_batched_systems(spd, rng):
    rhs = torch.randn(5, 30, generator=rng, dtype=torch.float64)
    x, converged = conjugate_gradient(lambda v: v @ spd, rhs, damping=0.2, max_iter=200, tol=1e-10)
    expected = torch.linalg.solve(spd + 0.2 * torch.eye(30, dtype=torch.float64), rhs.T).T
    torch.testing.assert_close(x, expected, atol=1e-8, rtol=1e-8)
    assert converged.all()


def test_cg_reports_negative_curvature(rng):
    indefinite = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    _, converged = conjugate_gradient(lambda v: v @ indefinite, torch.ones(1, 3, dtype=torch.float64), max_iter=50)
    assert not converged.any()


def test_lissa_converges_to_the_damped_inverse(spd, rng):
    rhs = torch.randn(3, 30, generator=rng, dtype=torch.float64)
    x = lissa(lambda v, step: v @ spd, rhs, damping=0.5, scale=4.0, depth=400)
    expected = torch.linalg.solve(spd + 0.5 * torch.eye(30, dtype=torch.float64), rhs.T).T
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=1e-6)


def test_lanczos_finds_the_extreme_eigenpairs(spd):
    values, vectors = lanczos_eigenpairs(lambda v: v @ spd, 30, n_iter=30)
    expected = torch.linalg.eigvalsh(spd)
    torch.testing.assert_close(values.sort().values, expected, atol=1e-8, rtol=1e-8)
    top = vectors[0]
    torch.testing.assert_close(spd @ top, values[0] * top, atol=1e-8, rtol=1e-8)
