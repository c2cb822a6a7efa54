import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from tdaeval.functional import rank_stability, topk_jaccard


def test_rank_stability_is_the_mean_pairwise_scipy_spearman(rng):
    samples = torch.randn(4, 6, 30, generator=rng, dtype=torch.float64) + torch.randn(1, 6, 30, generator=rng, dtype=torch.float64)
    expected = [
        np.mean([stats.spearmanr(samples[s, z], samples[t, z]).statistic for s, t in itertools.combinations(range(4), 2)])
        for z in range(6)
    ]
    np.testing.assert_allclose(rank_stability(samples).numpy(), expected, rtol=1e-10)


def test_topk_jaccard_matches_python_sets(rng):
    samples = torch.randn(3, 5, 20, generator=rng, dtype=torch.float64)
    k = 4
    expected = []
    for z in range(5):
        tops = [set(np.argsort(-samples[s, z].numpy())[:k]) for s in range(3)]
        expected.append(np.mean([len(a & b) / len(a | b) for a, b in itertools.combinations(tops, 2)]))
    np.testing.assert_allclose(topk_jaccard(samples, k).numpy(), expected, rtol=1e-12)
    identical = samples[:1].expand(3, -1, -1)
    assert torch.equal(topk_jaccard(identical, k), torch.ones(5, dtype=torch.float64))


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        rank_stability(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="k must be in"):
        topk_jaccard(torch.zeros(2, 2, 3), 4)
