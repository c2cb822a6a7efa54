"""The two-way (subsets × test points) bootstrap CI of the LDS (#13 item 7)."""

import numpy as np
import pytest
import scipy.stats
import torch

import tdaeval.functional as F

N_TRAIN, M, N_TEST = 40, 20, 30


def _draw(generator, reps, shared):
    """``reps`` independent LDS experiments on one task: fresh subsets, test points and training noise.

    Every test point's true effects share the component ``shared`` (some training
    points matter for all of them), so a subset draw moves every test point's
    LDS the same way: the variance the test-point bootstrap leaves out.
    Returns predictions and outputs, each ``[reps, M, N_TEST]``.
    """
    masks = (torch.rand(reps, M, N_TRAIN, generator=generator).argsort(-1) < N_TRAIN // 2).double()
    effects = shared + 0.5 * torch.randn(reps, N_TEST, N_TRAIN, generator=generator, dtype=torch.float64)
    scores = effects + torch.randn(reps, N_TEST, N_TRAIN, generator=generator, dtype=torch.float64)
    noise = 2.0 * torch.randn(reps, M, N_TEST, generator=generator, dtype=torch.float64)
    return masks @ scores.transpose(1, 2), masks @ effects.transpose(1, 2) + noise


@pytest.fixture(scope="module")
def shared():
    return torch.randn(N_TRAIN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _numpy_two_way_ci(predictions, outputs, n_resamples, level, seed):
    """The same bootstrap written out: the same index draws, scipy's Spearman on the drawn rows, numpy's percentiles."""
    predictions, outputs = predictions.numpy(), outputs.numpy()
    kept = [z for z in range(predictions.shape[1]) if np.isfinite(scipy.stats.spearmanr(predictions[:, z], outputs[:, z]).statistic)]
    generator = torch.Generator().manual_seed(seed)
    subset_idx = torch.randint(0, predictions.shape[0], (n_resamples, predictions.shape[0]), generator=generator).numpy()
    test_idx = torch.randint(0, len(kept), (n_resamples, len(kept)), generator=generator).numpy()
    stats = []
    for rows, drawn in zip(subset_idx, test_idx):
        values = []
        for position in drawn:
            z = kept[position]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = scipy.stats.spearmanr(predictions[rows, z], outputs[rows, z]).statistic
            if np.isfinite(r):
                values.append(r)
        stats.append(np.mean(values) if values else np.nan)
    tail = (1 - level) / 2
    return tuple(np.nanpercentile(stats, [100 * tail, 100 * (1 - tail)]))


def test_equals_a_hand_written_numpy_scipy_reference_with_ties_and_a_constant_test_point(shared):
    predictions, outputs = (x[0] for x in _draw(torch.Generator().manual_seed(5), 1, shared))
    outputs = outputs.round()  # tied outputs; repeated subsets add more ties
    outputs[:, 3] = 1.0  # a constant test point: NaN LDS, left out of both CIs
    ours = F.lds_two_way_ci(predictions, outputs, n_resamples=200, level=0.9, seed=3)
    reference = _numpy_two_way_ci(predictions, outputs, n_resamples=200, level=0.9, seed=3)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    small_chunks = F.lds_two_way_ci(predictions, outputs, n_resamples=200, level=0.9, seed=3, chunk_elements=1)
    np.testing.assert_allclose(small_chunks, ours, rtol=0, atol=1e-12)


def test_is_wider_than_the_test_point_ci_when_subsets_add_noise_and_covers_the_true_lds(shared):
    # the true LDS: the mean of the estimator over many fresh experiments on the same task
    predictions, outputs = _draw(torch.Generator().manual_seed(1), 2000, shared)
    truth = float(F.spearman(predictions, outputs, dim=1).mean())
    # a small Monte Carlo of both intervals
    predictions, outputs = _draw(torch.Generator().manual_seed(2), 100, shared)
    covered = {"test": 0, "test+subsets": 0}
    wider = 0
    for r in range(100):
        per_test = F.spearman(predictions[r], outputs[r], dim=0)
        _, test_only, _ = F.nanmean_ci(per_test, n_resamples=400, seed=r)
        two_way = F.lds_two_way_ci(predictions[r], outputs[r], n_resamples=400, seed=r)
        covered["test"] += test_only[0] <= truth <= test_only[1]
        covered["test+subsets"] += two_way[0] <= truth <= two_way[1]
        wider += (two_way[1] - two_way[0]) > (test_only[1] - test_only[0])
    assert wider == 100
    assert 0.88 <= covered["test+subsets"] / 100 <= 1.0  # nominal 0.95 (the two-way bootstrap errs on the wide side)
    assert covered["test"] / 100 < 0.8  # what the test-point CI alone claims as 95% covers far less here


def test_without_subset_noise_the_two_way_ci_stays_close_to_the_test_point_ci():
    # independent effects per test point, no shared component, many subsets: little left to add
    generator = torch.Generator().manual_seed(4)
    masks = (torch.rand(200, N_TRAIN, generator=generator).argsort(-1) < N_TRAIN // 2).double()
    effects = torch.randn(N_TEST, N_TRAIN, generator=generator, dtype=torch.float64)
    predictions = masks @ (effects + torch.randn(N_TEST, N_TRAIN, generator=generator, dtype=torch.float64)).T
    outputs = masks @ effects.T
    _, test_only, _ = F.nanmean_ci(F.spearman(predictions, outputs, dim=0), n_resamples=400)
    two_way = F.lds_two_way_ci(predictions, outputs, n_resamples=400)
    assert (two_way[1] - two_way[0]) < 1.6 * (test_only[1] - test_only[0])


def test_degenerate_inputs():
    constant = torch.ones(5, 3, dtype=torch.float64)
    assert all(np.isnan(F.lds_two_way_ci(constant, torch.randn(5, 3, dtype=torch.float64))))
    with pytest.raises(ValueError, match=r"same shape \[M, n_test\]"):
        F.lds_two_way_ci(torch.ones(5, 3), torch.ones(4, 3))
