"""Detection math: ROC-AUC ranks and the detection curve against sklearn and a brute-force expectation over tie orders."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from tdaeval.errors import ConfigError
from tdaeval.functional import detection_curve, positive_ranks
from tdaeval.metrics import MislabelDetection


def _problem(seed: int, n: int, levels: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[n]`` (``levels`` distinct values, so many ties; continuous when None) and a mask with both classes."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64) if levels is None else torch.randint(0, levels, (n,), generator=g).double()
    positives = torch.rand(n, generator=g) < 0.3
    positives[0], positives[1] = True, False
    return scores, positives


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [None, 2, 5])
def test_mean_positive_rank_is_sklearn_roc_auc(seed, levels):
    scores, positives = _problem(seed, 150, levels)
    ranks = positive_ranks(scores, positives)
    assert ranks.shape == (int(positives.sum()),) and ranks.dtype == torch.float64
    assert float(ranks.mean()) == pytest.approx(roc_auc_score(positives.numpy(), scores.numpy()), abs=1e-12)


def test_each_positive_rank_counts_the_negatives_below_it_and_half_the_ties():
    scores, positives = _problem(7, 60, 4)
    negatives = scores[~positives]
    expected = [float(((negatives < s).sum() + 0.5 * (negatives == s).sum()) / negatives.numel()) for s in scores[positives]]
    torch.testing.assert_close(positive_ranks(scores, positives), torch.tensor(expected, dtype=torch.float64))


def _curve_for_order(scores: torch.Tensor, positives: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """The curve when ties are broken by ``order``: a stable sort by descending score of the points laid out in that order."""
    order_t = torch.tensor(order)
    ranked = order_t[torch.sort(scores[order_t], descending=True, stable=True).indices]
    return torch.cumsum(positives[ranked].double(), 0) / positives.sum()


@pytest.mark.parametrize(
    "scores,positives",
    [
        ([3.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0], [0, 1, 0, 1, 1, 0, 0]),
        ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1, 0, 0, 1, 0, 0]),  # one group: the curve is the straight line
        ([5.0, 4.0, 3.0, 2.0, 1.0, 0.0], [0, 1, 0, 0, 1, 1]),  # no ties: a plain cumulative count
    ],
)
def test_curve_is_the_expectation_over_every_order_of_the_tied_points(scores, positives):
    scores, positives = torch.tensor(scores, dtype=torch.float64), torch.tensor(positives, dtype=torch.bool)
    orders = list(itertools.permutations(range(scores.numel())))
    expected = torch.stack([_curve_for_order(scores, positives, order) for order in orders]).mean(0)
    curve = detection_curve(scores, positives)
    assert curve.shape == scores.shape
    torch.testing.assert_close(curve, expected)
    assert float(curve[-1]) == pytest.approx(1.0)  # every positive is found once every point is inspected


@pytest.mark.parametrize("seed", range(3))
def test_curve_without_ties_is_the_cumulative_share_of_positives(seed):
    scores, positives = _problem(seed, 200, None)
    found = positives[torch.argsort(scores, descending=True)].double()
    torch.testing.assert_close(detection_curve(scores, positives), torch.cumsum(found, 0) / positives.sum())


def test_all_positive_and_no_positive_edge_cases():
    scores = torch.tensor([0.3, 0.1, 0.5, 0.5])
    everything, nothing = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    # all positive: no negative to rank against (NaN), and the curve is j / n
    assert torch.isnan(positive_ranks(scores, everything)).all()
    torch.testing.assert_close(detection_curve(scores, everything), torch.arange(1, 5, dtype=torch.float64) / 4)
    # no positive: no ranks, and a curve of 0 / 0
    assert positive_ranks(scores, nothing).numel() == 0
    assert torch.isnan(detection_curve(scores, nothing)).all()
    # the metric refuses both rather than report NaN
    for mask in (everything, nothing):
        with pytest.raises(ConfigError, match="both flipped and clean"):
            MislabelDetection(n_bootstrap=10).from_self_influence(scores, mask)


def test_a_single_tied_negative_counts_half():
    ranks = positive_ranks(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([True, False, False]))
    assert ranks.tolist() == [0.75]
    assert math.isclose(float(positive_ranks(torch.tensor([2.0, 1.0]), torch.tensor([False, True]))[0]), 0.0)
