import numpy as np
import pytest
import scipy.stats
import torch

from tdaeval.functional import bootstrap_ci, bootstrap_rank_intervals, nanmean_ci


def test_bootstrap_ci_agrees_with_scipy_percentile(rng):
    values = torch.randn(200, generator=rng, dtype=torch.float64) + 0.3
    low, high = bootstrap_ci(values, n_resamples=4000, seed=0)
    ref = scipy.stats.bootstrap((values.numpy(),), np.mean, n_resamples=4000, method="percentile", random_state=0)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.02)
    assert low < values.mean().item() < high


def test_bootstrap_ci_is_seeded_and_leaves_global_rng_alone(rng):
    values = torch.randn(50, generator=rng)
    state = torch.get_rng_state()
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert torch.equal(state, torch.get_rng_state())


def test_nanmean_ci_skips_and_counts_nans():
    values = torch.tensor([1.0, float("nan"), 3.0, float("nan")])
    mean, (low, high), n_nan = nanmean_ci(values)
    assert mean == 2.0 and n_nan == 2 and 1.0 <= low <= high <= 3.0


def test_rank_intervals_separate_clear_winner_and_tie_the_rest(rng):
    n = 300
    best = 1.0 + 0.1 * torch.randn(n, generator=rng)
    a = 0.2 + 0.5 * torch.randn(n, generator=rng)
    b = a + 0.001 * torch.randn(n, generator=rng)
    rank, low, high = bootstrap_rank_intervals(torch.stack([a, best, b]), higher_is_better=True)
    assert rank[1] == 1 and low[1] == 1 and high[1] == 1
    assert low[0] == 2 and high[0] == 3 and low[2] == 2 and high[2] == 3


def test_rank_direction_lower_is_better(rng):
    values = torch.stack([torch.full((10,), 2.0), torch.full((10,), 1.0)])
    rank, _, _ = bootstrap_rank_intervals(values, higher_is_better=False)
    assert rank.tolist() == [2, 1]
