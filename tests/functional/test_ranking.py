
import numpy as np
import pytest
import torch
from scipy import stats

from tdaeval.functional import holm_adjust, paired_bootstrap_differences, pareto_front, rank_intervals


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


def test_identical_methods_differ_by_exactly_zero_with_p_one(rng):
    a = torch.randn(50, generator=rng)
    diff, low, high, p = paired_bootstrap_differences(torch.stack([a, a.clone()]))
    assert diff[0, 1] == 0 and low[0, 1] == 0 and high[0, 1] == 0 and p[0, 1] == 1.0


def test_difference_interval_matches_scipy_paired_percentile_bootstrap(rng):
    a = torch.randn(80, generator=rng, dtype=torch.float64)
    b = a + 0.3 + 0.5 * torch.randn(80, generator=rng, dtype=torch.float64)
    diff, low, high, p = paired_bootstrap_differences(torch.stack([a, b]), n_resamples=20000)
    ref = stats.bootstrap(
        (a.numpy(), b.numpy()), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, vectorized=True,
        n_resamples=20000, method="percentile", random_state=1,
    )
    assert diff[0, 1].item() == pytest.approx(float((a - b).mean()))
    assert low[0, 1].item() == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert high[0, 1].item() == pytest.approx(ref.confidence_interval.high, abs=0.01)
    # antisymmetry: the interval of b − a is the negated interval of a − b
    assert low[1, 0] == -high[0, 1] and diff[1, 0] == -diff[0, 1] and p[0, 1] == p[1, 0] < 0.05


def test_pairs_skip_examples_either_method_leaves_undefined():
    a = torch.tensor([1.0, 2.0, float("nan"), 4.0])
    b = torch.tensor([0.0, float("nan"), 5.0, 1.0])
    diff, *_ = paired_bootstrap_differences(torch.stack([a, b]))
    assert diff[0, 1].item() == pytest.approx(((1 - 0) + (4 - 1)) / 2)


def test_holm_adjustment_equals_the_step_down_formula():
    p = torch.tensor([0.01, 0.04, 0.03, float("nan")])
    adjusted = holm_adjust(p)
    # sorted .01 .03 .04 -> 3·.01, max(.03, 2·.03), max(.06, 1·.04)
    assert adjusted[:3].tolist() == pytest.approx([0.03, 0.06, 0.06]) and torch.isnan(adjusted[3])


def test_rank_intervals_follow_significant_differences():
    means = torch.tensor([0.2, 0.9, 0.21, float("nan")])
    significant = torch.tensor(
        [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool
    )
    rank, low, high = rank_intervals(means, significant, higher_is_better=True)
    # 0 and 2 are tied with each other, both significantly below 1: they share the midrank of places 2 and 3;
    # the NaN method counts as worse than every defined one
    assert rank.tolist() == [2.5, 1.0, 2.5, 4.0]
    assert low.tolist() == [2, 1, 2, 1] and high.tolist() == [4, 2, 4, 4]  # the NaN method is not comparable
    rank, _, _ = rank_intervals(torch.tensor([2.0, 1.0]), torch.zeros(2, 2, dtype=torch.bool), higher_is_better=False)
    assert rank.tolist() == [1.5, 1.5]  # not significantly different: a tie, whatever the observed means
    rank, _, _ = rank_intervals(torch.tensor([2.0, 1.0]), torch.ones(2, 2, dtype=torch.bool), higher_is_better=False)
    assert rank.tolist() == [2.0, 1.0]


def test_pareto_front_equals_brute_force(rng):
    quality = torch.rand(12, generator=rng)
    cost = torch.rand(12, generator=rng)
    quality[3] = float("nan")
    front = pareto_front(quality, cost)
    for i in range(12):
        dominated = any(
            quality[j] >= quality[i] and cost[j] <= cost[i] and (quality[j] > quality[i] or cost[j] < cost[i])
            for j in range(12) if j != i
        )
        assert bool(front[i]) == (not dominated and not torch.isnan(quality[i])), i
