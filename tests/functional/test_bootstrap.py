import numpy as np
import pytest
import scipy.stats
import torch

from tdaeval.functional import bootstrap_ci, nanmean_ci


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
