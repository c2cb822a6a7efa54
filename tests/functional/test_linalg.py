import pytest
import torch

from tdaeval.functional.linalg import block_conjugate_gradient, conjugate_gradient, lanczos_eigenpairs, lissa


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


def test_block_cg_solves_all_rows_exactly_and_shares_its_krylov_space(rng):
    """Against a dense solve; k right-hand sides on a spectrum with k outliers converge in a few block products."""
    n = 200
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=rng, dtype=torch.float64))
    spectrum = torch.cat([torch.linspace(50, 100, 5, dtype=torch.float64), torch.linspace(0.5, 1.5, n - 5, dtype=torch.float64)])
    matrix = basis @ torch.diag(spectrum) @ basis.T
    rhs = torch.randn(5, n, generator=rng, dtype=torch.float64)
    exact = torch.linalg.solve(matrix + 0.1 * torch.eye(n, dtype=torch.float64), rhs.T).T
    x, converged, products = block_conjugate_gradient(lambda v: v @ matrix, rhs, damping=0.1, max_iter=200, tol=1e-10)
    assert bool(converged.all())
    torch.testing.assert_close(x, exact, rtol=1e-8, atol=1e-8)
    rowwise, row_converged = conjugate_gradient(lambda v: v @ matrix, rhs, damping=0.1, max_iter=200, tol=1e-10)
    assert bool(row_converged.all())
    torch.testing.assert_close(rowwise, exact, rtol=1e-8, atol=1e-8)
    assert products < 30


def test_block_cg_basis_cap_and_dependent_rows_fall_back_to_rowwise_cg(rng):
    n = 60
    a = torch.randn(n, n, generator=rng, dtype=torch.float64)
    matrix = a @ a.T / n
    rhs = torch.randn(3, n, generator=rng, dtype=torch.float64)
    rhs = torch.cat([rhs, rhs[:1] * 2.0])  # a dependent row: the first block has rank 3
    exact = torch.linalg.solve(matrix + 0.5 * torch.eye(n, dtype=torch.float64), rhs.T).T
    x, converged, _ = block_conjugate_gradient(lambda v: v @ matrix, rhs, damping=0.5, max_iter=300, tol=1e-10, max_basis_rows=9)
    assert bool(converged.all())
    torch.testing.assert_close(x, exact, rtol=1e-7, atol=1e-7)


def test_block_cg_reports_an_indefinite_system_as_not_converged():
    indefinite = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    _, converged, _ = block_conjugate_gradient(lambda v: v @ indefinite, torch.ones(1, 3, dtype=torch.float64), max_iter=50)
    assert not bool(converged.any())
