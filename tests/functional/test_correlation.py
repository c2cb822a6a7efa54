import numpy as np
import pytest
import scipy.stats
import torch

from tdaeval.functional import pearson, rankdata, spearman


def _with_ties(shape, generator):
    return torch.randint(0, 5, shape, generator=generator).double()


def test_rankdata_matches_scipy_average_ties(rng):
    x = _with_ties((7, 30), rng)
    expected = scipy.stats.rankdata(x.numpy(), method="average", axis=1)
    np.testing.assert_allclose(rankdata(x, dim=1).numpy(), expected)
    np.testing.assert_allclose(rankdata(x.T, dim=0).numpy(), expected.T)


@pytest.mark.parametrize("dim", [0, 1])
def test_spearman_matches_scipy_with_ties(rng, dim):
    x = _with_ties((40, 25), rng)
    y = torch.randn(40, 25, generator=rng).round(decimals=1)
    ours = spearman(x, y, dim=dim)
    n_pairs = x.shape[1 - dim]
    for k in range(n_pairs):
        xs = x.select(1 - dim, k).numpy()
        ys = y.select(1 - dim, k).numpy()
        assert ours[k].item() == pytest.approx(scipy.stats.spearmanr(xs, ys).statistic, abs=1e-12)


def test_pearson_matches_scipy(rng):
    x = torch.randn(50, 6, generator=rng)
    y = x + torch.randn(50, 6, generator=rng)
    ours = pearson(x, y, dim=0)
    for k in range(6):
        assert ours[k].item() == pytest.approx(scipy.stats.pearsonr(x[:, k], y[:, k]).statistic, abs=1e-6)


def test_constant_column_gives_nan(rng):
    x = torch.randn(20, 3, generator=rng)
    x[:, 1] = 2.5
    y = torch.randn(20, 3, generator=rng)
    r = spearman(x, y, dim=0)
    assert torch.isnan(r[1])
    assert torch.isfinite(r[[0, 2]]).all()
    assert torch.isnan(spearman(y, x, dim=0)[1])


def test_perfect_and_reversed_order():
    x = torch.arange(10.0)
    assert spearman(x, x**3).item() == pytest.approx(1.0)
    assert spearman(x, -x).item() == pytest.approx(-1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.zeros(3), torch.zeros(4))
