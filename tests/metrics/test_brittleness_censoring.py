"""Brittleness counts never-flipped test points against the attributor (censoring; #13 item 5).

The flips are given directly (no retraining): a ``Brittleness`` whose
``_flips`` returns a chosen ``[t, len(k_grid)]`` flip matrix, so the value,
the paired ranking and the Pareto set are checked on the exact example of the
issue in milliseconds.
"""

import pytest
import torch

import tdaeval.functional as F
from tdaeval.groundtruth import RemovalContext, RemovalSpec
from tdaeval.metrics import Brittleness
from tdaeval.suites.ranking import pareto_points, rank_results

N = 20


class _GivenFlips(Brittleness):
    """Brittleness with the cumulative flips of the top-scored removals given instead of retrained."""

    def __init__(self, flips, **params):
        super().__init__(**params)
        self.flips = flips

    def _flips(self, truth, scores, selection):
        return torch.arange(self.flips.shape[0]), torch.cummax(self.flips.int(), dim=1).values.bool(), 0


def _flips_at(first_index, grid):
    """``[N, K]`` flips: point z first flips at ``grid[first_index[z]]``; -1 never."""
    out = torch.zeros(len(first_index), len(grid), dtype=torch.bool)
    for z, j in enumerate(first_index):
        if j >= 0:
            out[z, j:] = True
    return out


def _result(flips, grid):
    metric = _GivenFlips(flips, k_grid=grid, n_seeds=1, n_test_points=N, n_bootstrap=500)
    spec = RemovalSpec(k_grid=tuple(grid), n_seeds=1, n_test_points=N)
    truth = RemovalContext(task=None, spec=spec, store=None, executor=None, device="cpu", seeds=[0], test_points=torch.arange(N),
                           full_outputs=torch.ones(1, N), provenance={"k_grid": list(grid)})
    return metric.compute(torch.zeros(N, 300), truth)


@pytest.mark.parametrize("grid", [(20, 40), (20, 40, 60, 80, 100, 120, 140, 160, 180)])
def test_flipping_every_point_at_40_beats_flipping_one_point_at_20(grid):
    everything = _result(_flips_at([1] * N, grid), grid)  # all 20 points flip at k = 40
    one = _result(_flips_at([0] + [-1] * (N - 1), grid), grid)  # 1 of 20 flips at k = 20, 19 never
    censored = F.censoring_value(grid)
    assert one.per_example.tolist() == [20.0] + [censored] * (N - 1) and one.n_nan == 0
    assert everything.value == 40.0 and one.value == pytest.approx((20 + (N - 1) * censored) / N)
    assert everything.value < one.value  # lower is better
    assert everything.provenance["fraction_flipped"] == 1.0 and one.provenance["fraction_flipped"] == 0.05
    assert everything.provenance["median_k"] == 40.0 and one.provenance["median_k"] is None  # past the grid
    assert one.provenance["n_never_flipped"] == N - 1 and one.provenance["censored_at"] == censored
    # the paired ranking and the Pareto set (same cost) agree with the value
    rows = {r.attributor: r for r in rank_results(["everything", "one"], [everything, one])}
    assert rows["everything"].rank == 1.0 and rows["one"].rank == 2.0 and rows["one"].tied_with == ()
    front = {p.attributor: p.on_front for p in pareto_points(["everything", "one"], [everything.value, one.value], [1.0, 1.0], False)}
    assert front == {"everything": True, "one": False}


def test_a_random_attributor_looks_like_random_removals_and_ranks_below_an_informative_one():
    grid = (20, 40, 60, 80, 100, 120, 140, 160, 180)
    generator = torch.Generator().manual_seed(0)
    n = 60

    def random_like(rate):
        # each point flips at each k with a small probability, independently of any score: what removing k
        # random training points does; most points never flip within the grid
        first = []
        for _ in range(n):
            hits = torch.nonzero(torch.rand(len(grid), generator=generator) < rate).flatten()
            first.append(int(hits[0]) if hits.numel() else -1)
        return _flips_at(first, grid)

    informative = _flips_at([int(j) for j in torch.randint(0, 3, (n,), generator=generator)], grid)  # all flip by k = 60
    results = {
        "informative": _result(informative, grid),
        "random_removal": _result(random_like(0.02), grid),
        "random_attributor": _result(random_like(0.02), grid),
    }
    censored = F.censoring_value(grid)
    for name in ("random_removal", "random_attributor"):
        r = results[name]
        assert r.provenance["fraction_flipped"] < 0.4 and r.provenance["median_k"] is None
        assert r.value > 0.7 * censored  # near "never flips", not a few lucky small k's
    rows = {r.attributor: r for r in rank_results(list(results), list(results.values()))}
    assert rows["informative"].rank == 1.0 and rows["informative"].tied_with == ()
    assert rows["random_attributor"].tied_with == ("random_removal",)  # indistinguishable from random removals
    assert rows["random_attributor"].rank == rows["random_removal"].rank == 2.5


def test_censoring_helpers():
    assert F.censoring_value([20, 40, 60]) == 80.0 and F.censoring_value([5]) == 10.0
    flips = torch.tensor([[False, True, True], [False, False, False], [True, True, True]])
    values = F.first_event_k(flips, [20, 40, 60])
    assert values.tolist() == [40.0, 80.0, 20.0]
    assert F.censored_median(values, [20, 40, 60]) == 40.0  # 2 of 3 flipped by 40
    assert F.censored_median(torch.tensor([20.0, 80.0, 80.0]), [20, 40, 60]) is None
    with pytest.raises(ValueError, match=r"\[n, K=2\]"):
        F.first_event_k(flips, [20, 40])
