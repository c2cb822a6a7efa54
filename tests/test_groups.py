"""Groupings of training examples and the group-score convention (tdaeval.groups)."""

from __future__ import annotations

import pytest
import torch

from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.groups import check_groups, class_groups, class_kmeans_groups, group_scores, group_sizes, spread_group_scores


@pytest.fixture(scope="module")
def blobs() -> Data:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([centers[k % 3] + 0.3 * torch.randn(2, generator=g) for k in range(60)]).view(60, 2)
    y = torch.tensor([0 if k % 3 < 2 else 1 for k in range(60)])  # class 0 = two blobs, class 1 = one blob
    return Data(x, y)


def test_class_kmeans_groups_are_class_pure_deterministic_and_find_the_blobs(blobs):
    groups = class_kmeans_groups(blobs, k_per_class=2, seed=0)
    assert groups.dtype == torch.long and groups.shape == (60,)
    assert torch.equal(groups, class_kmeans_groups(blobs, k_per_class=2, seed=0))
    for k in range(int(groups.max()) + 1):  # every group within one class
        assert len(blobs.targets[groups == k].unique()) == 1
    assert int(groups.max()) + 1 == 4  # two clusters per class
    blob = torch.arange(60) % 3
    class0 = blobs.targets == 0
    # the two clusters of class 0 are its two blobs (k-means on well-separated blobs)
    assert all(len(blob[class0 & (groups == k)].unique()) == 1 for k in groups[class0].unique().tolist())
    # ids: class 0's groups first, numbered by their first member
    assert groups[0] == 0 and set(groups[class0].tolist()) == {0, 1}


def test_class_kmeans_caps_k_at_the_class_size_and_uses_given_features():
    data = Data(torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 1]))
    assert group_sizes(class_kmeans_groups(data, k_per_class=10)).tolist() == [1, 1, 1, 1, 1]
    features = torch.tensor([[0.0], [9.0], [0.0], [5.0], [5.1]])
    assert class_kmeans_groups(data, 2, features=features).tolist() == [0, 1, 2, 3, 3]


def test_class_groups_and_check_groups():
    data = Data(torch.zeros(4, 1), torch.tensor([7, 3, 7, 3]))
    assert class_groups(data).tolist() == [1, 0, 1, 0]
    assert check_groups([0, 1, 1, 0], 4).tolist() == [0, 1, 1, 0]
    for bad, match in (([0, 1], r"shape \[n_train\] = \[4\]"), ([0, 2, 2, 0], "ids \\[1\\] have no member"),
                       ([0.0, 1.0, 1.0, 0.0], "integer group ids"), ([-1, 0, 0, 0], ">= 0"), ("abcd", "one integer group id")):
        with pytest.raises(ConfigError, match=match):
            check_groups(bad, 4, name="groups")
    with pytest.raises(ConfigError, match="k_per_class"):
        class_kmeans_groups(data, 0)


def test_group_scores_sum_members_and_spread_is_its_inverse():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 7, generator=g, dtype=torch.float64)
    groups = torch.tensor([2, 0, 0, 1, 2, 2, 1])
    summed = group_scores(scores, groups)
    literal = torch.stack([torch.stack([scores[q, groups == k].sum() for k in range(3)]) for q in range(3)])
    torch.testing.assert_close(summed, literal)
    spread = spread_group_scores(summed, groups)
    torch.testing.assert_close(group_scores(spread, groups), summed)
    assert torch.allclose(spread[:, 1], spread[:, 2])  # members of a group share its score equally
    with pytest.raises(ConfigError, match="n_train = 7"):
        group_scores(scores[:, :5], groups)
