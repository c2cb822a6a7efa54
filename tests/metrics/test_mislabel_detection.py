import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import tdaeval
from tdaeval.attributors import get
from tdaeval.datasets import flip_labels
from tdaeval.errors import ConfigError
from tdaeval.functional import detection_curve, positive_ranks
from tdaeval.metrics import MislabelDetection
from tdaeval.tasks import DigitsTask, with_flipped_labels
from tdaeval.training import train_model


def test_auc_and_average_precision_equal_sklearn_with_ties(rng):
    scores = torch.randint(0, 6, (300,), generator=rng).double()  # many ties
    flipped = torch.rand(300, generator=rng) < 0.2
    result = MislabelDetection(n_bootstrap=200).from_self_influence(scores, flipped)
    assert result.value == pytest.approx(roc_auc_score(flipped.numpy(), scores.numpy()), abs=1e-12)
    assert result.provenance["average_precision"] == pytest.approx(average_precision_score(flipped.numpy(), scores.numpy()))
    assert result.n == int(flipped.sum())


def test_rankings_do_not_depend_on_the_order_of_the_training_points(rng):
    scores = torch.randint(0, 4, (200,), generator=rng).double() * 1e-5  # small, tied values: where index offsets bite
    flipped = torch.rand(200, generator=rng) < 0.3
    permutation = torch.randperm(200, generator=rng)
    assert positive_ranks(scores, flipped).mean() == pytest.approx(positive_ranks(scores[permutation], flipped[permutation]).mean())
    torch.testing.assert_close(detection_curve(scores, flipped), detection_curve(scores[permutation], flipped[permutation]))
    # what Quanda 0.5.0 sorts: scores plus arange(n)·1e-4, which depends on where each point sits
    quanda_like = detection_curve(scores + torch.arange(200) * 1e-4, flipped)
    quanda_like_permuted = detection_curve(scores[permutation] + torch.arange(200) * 1e-4, flipped[permutation])
    assert not torch.allclose(quanda_like, quanda_like_permuted)


def test_perfect_and_random_detectors(rng):
    flipped = torch.zeros(500, dtype=torch.bool)
    flipped[:50] = True
    perfect = MislabelDetection().from_self_influence(flipped.double(), flipped)
    assert perfect.value == 1.0 and perfect.provenance["average_precision"] == 1.0
    assert detection_curve(flipped.double(), flipped)[49] == 1.0
    chance = MislabelDetection().from_self_influence(torch.randn(500, generator=rng), flipped)
    assert chance.ci[0] < 0.5 < chance.ci[1]


def test_flip_labels_is_seeded_and_changes_every_chosen_label():
    task = DigitsTask(n_train=200, n_test=10)
    state = torch.random.get_rng_state()
    data, flipped = flip_labels(task.train_data, 0.1, 10, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    assert int(flipped.sum()) == 20
    assert bool((data.targets[flipped] != task.train_data.targets[flipped]).all())
    assert torch.equal(data.targets[~flipped], task.train_data.targets[~flipped])
    again, _ = flip_labels(task.train_data, 0.1, 10, seed=3)
    assert torch.equal(again.targets, data.targets)
    with pytest.raises(ConfigError, match="'fraction'"):
        flip_labels(task.train_data, 1.5, 10, seed=0)


def test_self_influence_is_the_diagonal_of_attribute(small_digits):
    model = train_model(small_digits, small_digits.build_model(0), torch.arange(small_digits.n_train), 0).model
    attributor = get("grad_cos").fit(small_digits, model, small_digits.train_data)
    full = attributor.attribute(small_digits.train_data)
    torch.testing.assert_close(attributor.self_influence(chunk_size=37), torch.diagonal(full))


def test_self_influence_finds_flipped_digits_and_random_does_not(tmp_path):
    task = with_flipped_labels(DigitsTask(n_train=500, n_test=20), fraction=0.1, seed=0)
    assert task.transforms[-1]["n_flipped"] == 50
    result = tdaeval.evaluate(task, attributors=["grad_dot", "tracin", "random"], metrics=["mislabel_detection"],
                              cache_dir=str(tmp_path))
    assert result.get("grad_dot", "mislabel_detection").value > 0.8
    assert result.get("tracin", "mislabel_detection").value > 0.8
    random = result.get("random", "mislabel_detection")
    assert random.ci[0] < 0.5 < random.ci[1]
    with pytest.raises(ConfigError, match="with_flipped_labels"):
        MislabelDetection().build_truth(DigitsTask(n_train=50, n_test=5))


@pytest.mark.parametrize("name,factorized", [("grad_dot", None), ("grad_cos", None), ("grad_dot", False)])
def test_gradient_attributors_have_their_own_linear_time_self_influence(small_digits, name, factorized):
    from tdaeval.attributors.base import Attributor

    model = train_model(small_digits, small_digits.build_model(0), torch.arange(small_digits.n_train), 0).model
    attributor = get(name, factorized=factorized).fit(small_digits, model, small_digits.train_data)
    generic = Attributor.self_influence(attributor, chunk_size=64)  # the chunked diagonal
    torch.testing.assert_close(attributor.self_influence(), generic, rtol=1e-4, atol=1e-5 * float(generic.abs().max()))
