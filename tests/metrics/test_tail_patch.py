"""The ``tail_patch`` metric: a lookup of an attributor's top-k into the one-step effect matrix.

Oracles: the top-k of ``Δ`` itself reaches the ceiling (share 1); random
scores land on the random expectation (their CI covers it); the tie rule
equals an enumeration of every tie-breaking order; at small ``η`` with SGD,
Grad-Dot is (first-order) optimal; a truth computed with other settings is refused.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tdaeval.attributors import get
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, MaskTruth
from tdaeval.groundtruth.tail_patch import OneStepEffectSpec, OneStepEffectTruth
from tdaeval.metrics.base import get_metric, metric_class
from tdaeval.metrics.tail_patch import TailPatch, topk_expected_mean
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask, LinearRegressionTask
from tdaeval.training import train_model


@pytest.fixture(scope="module")
def digits():
    task = DigitsTask(model="logreg", n_train=80, n_test=40, recipe=TrainRecipe(epochs=10, batch_size=40, lr=0.5))
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    return task, model


@pytest.fixture(scope="module")
def digits_truth(digits):
    task, model = digits
    return TailPatch(k=5).build_truth(task, model=model)


def _reference(scores: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Tie-free reference: numpy's argsort, the mean of the k values scored highest."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(values, top, axis=1).mean(axis=1)


def test_registered_and_params_round_trip():
    assert metric_class("tail_patch") is TailPatch
    metric = get_metric("tail_patch", k=3, eta=0.01, optimizer="adamw", delta="prob", weight_decay=0.01, n_bootstrap=100)
    assert type(metric)(**metric.get_params()).get_params() == metric.get_params()
    assert TailPatch.needs_model and TailPatch.higher_is_better


@pytest.mark.parametrize("param,value", [("k", 0), ("eta", 0.0), ("eta", -1.0), ("optimizer", "rmsprop"), ("delta", "loss"),
                                         ("weight_decay", -1.0), ("dtype", "float16"), ("chunk_size", 0)])
def test_bad_parameters_are_config_errors(param, value):
    with pytest.raises(ConfigError, match=rf"The '{param}' parameter of TailPatch must be .* instead\."):
        TailPatch(**{param: value})


def test_tie_free_values_equal_a_numpy_reference():
    g = np.random.default_rng(0)
    scores, values = g.normal(size=(7, 30)), g.normal(size=(7, 30))
    np.testing.assert_allclose(topk_expected_mean(torch.tensor(scores), torch.tensor(values), 4).numpy(), _reference(scores, values, 4),
                               rtol=1e-12, atol=1e-12)


def test_ties_give_the_expected_value_over_every_tie_breaking_order():
    g = np.random.default_rng(1)
    scores = g.integers(0, 3, size=(6, 6)).astype(float)  # many ties
    values = g.normal(size=(6, 6))
    orders = list(itertools.permutations(range(6)))  # every tie-breaking: a stable sort after a permutation
    for k in (1, 2, 4, 6):
        expected = np.zeros(6)
        for row in range(6):
            means = [values[row, list(p)][np.argsort(-scores[row, list(p)], kind="stable")[:k]].mean() for p in orders]
            expected[row] = np.mean(means)
        np.testing.assert_allclose(topk_expected_mean(torch.tensor(scores), torch.tensor(values), k).numpy(), expected, rtol=1e-10)


def test_per_query_values_are_the_mean_effect_of_the_top_k(digits_truth):
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(digits_truth.effects.shape, generator=g)
    result = TailPatch(k=5, n_bootstrap=100).compute(scores, digits_truth)
    reference = _reference(scores.numpy(), digits_truth.effects.double().numpy(), 5)
    np.testing.assert_allclose(result.per_example.numpy(), reference, rtol=1e-12, atol=1e-15)
    assert result.value == pytest.approx(reference.mean(), rel=1e-12)
    assert result.per_example.dtype == torch.float64 and result.ci[0] <= result.value <= result.ci[1]


def test_the_top_k_of_the_effects_is_the_ceiling(digits, digits_truth):
    task, _ = digits
    result = TailPatch(k=5, n_bootstrap=100).compute(digits_truth.effects, digits_truth)
    ceiling = np.sort(digits_truth.effects.double().numpy(), axis=1)[:, -5:].mean()
    assert result.provenance["ceiling"] == pytest.approx(ceiling, rel=1e-12)
    assert result.value == pytest.approx(ceiling, rel=1e-12)
    assert result.provenance["share_of_ceiling"] == pytest.approx(1.0, rel=1e-12)
    assert result.provenance["share_of_ceiling_above_random"] == pytest.approx(1.0, rel=1e-12)
    assert result.provenance["eta"] == pytest.approx(task.recipe.lr / 100)  # eta=None: lr / 100, recorded
    assert result.provenance["optimizer"] == "sgd" and result.provenance["delta"] == "measurement"
    worst = TailPatch(k=5, n_bootstrap=100).compute(-digits_truth.effects, digits_truth)
    assert worst.value < result.provenance["random_expectation"] < result.value


def test_random_scores_land_on_the_random_expectation(digits_truth):
    g = torch.Generator().manual_seed(0)
    result = TailPatch(k=5, n_bootstrap=500).compute(torch.rand(digits_truth.effects.shape, generator=g), digits_truth)
    chance = result.provenance["random_expectation"]
    assert chance == pytest.approx(float(digits_truth.effects.double().mean()), rel=1e-12)
    assert result.ci[0] <= chance <= result.ci[1]
    assert abs(result.provenance["share_of_ceiling_above_random"]) < 0.2
    # the expectation over many random draws is the random expectation
    draws = [TailPatch(k=5, n_bootstrap=10).compute(torch.rand(digits_truth.effects.shape, generator=g), digits_truth).value
             for _ in range(200)]
    spread = float(np.std(draws)) / math.sqrt(len(draws))
    assert abs(np.mean(draws) - chance) < 4 * spread


def test_grad_dot_is_first_order_optimal_with_sgd_at_small_eta(digits, digits_truth):
    task, model = digits
    grad_dot = get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data)
    result = TailPatch(k=5, n_bootstrap=100).compute(grad_dot, digits_truth)
    assert result.provenance["share_of_ceiling"] > 0.99
    random = TailPatch(k=5, n_bootstrap=100).compute(torch.rand(grad_dot.shape, generator=torch.Generator().manual_seed(0)), digits_truth)
    assert result.value > random.ci[1]


def test_lower_is_better_measurements_are_oriented():
    task = LinearRegressionTask(n_train=40, n_test=10, n_features=4)
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    truth = TailPatch(k=3, eta=1e-3).build_truth(task, model=model)
    assert truth.higher_is_better is False
    best = TailPatch(k=3, eta=1e-3, n_bootstrap=100).compute(-truth.effects, truth)  # most negative Δ = most helpful
    assert best.value == pytest.approx(best.provenance["ceiling"], rel=1e-12) and best.value > 0
    grad_dot = get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data)
    assert TailPatch(k=3, eta=1e-3, n_bootstrap=100).compute(grad_dot, truth).provenance["share_of_ceiling"] > 0.95


def test_cached_truth_equals_fresh_and_a_changed_eta_recomputes(digits, tmp_path):
    task, model = digits
    store = ArtifactStore(tmp_path)
    first = TailPatch(k=5, eta=0.004).build_truth(task, store, model=model)
    again = TailPatch(k=3, eta=0.004, n_bootstrap=100).build_truth(task, store, model=model)  # k does not change Δ
    assert not first.provenance["reused"] and again.provenance["reused"]
    torch.testing.assert_close(again.effects, first.effects, rtol=0, atol=0)
    fresh = TailPatch(k=5, eta=0.004).build_truth(task, model=model)  # no store: computed afresh
    torch.testing.assert_close(fresh.effects, first.effects, rtol=0, atol=0)
    other = TailPatch(k=5, eta=0.008).build_truth(task, store, model=model)
    assert not other.provenance["reused"] and len(store.keys()) == 2
    assert other.spec.eta == 0.008 and not torch.allclose(other.effects, first.effects)


def test_a_truth_of_other_settings_or_type_is_refused(digits_truth):
    scores = torch.zeros(digits_truth.effects.shape)
    with pytest.raises(ConfigError, match=r"Metric 'tail_patch' has eta=0\.1 but its truth was computed with eta=0\.005"):
        TailPatch(eta=0.1).compute(scores, digits_truth)
    with pytest.raises(ConfigError, match="optimizer='adamw'"):
        TailPatch(optimizer="adamw").compute(scores, digits_truth)
    with pytest.raises(ConfigError, match="Metric 'tail_patch' expects its truth as a OneStepEffectTruth"):
        TailPatch().compute(scores, MaskTruth(torch.zeros(3, dtype=torch.bool)))


def test_bad_scores_and_missing_model_are_clear_errors(digits, digits_truth):
    task, _ = digits
    with pytest.raises(ConfigError, match="k=100 but only 80 training examples"):
        TailPatch(k=100).compute(torch.zeros(digits_truth.effects.shape), digits_truth)
    nan = torch.zeros(digits_truth.effects.shape)
    nan[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="1 NaN values"):
        TailPatch().compute(nan, digits_truth)
    with pytest.raises(ConfigError, match="expects scores of shape"):
        TailPatch().compute(torch.zeros(3, 80), digits_truth)
    with pytest.raises(ConfigError, match="pass model="):
        TailPatch().build_truth(task)


def test_an_undefined_share_is_null_not_nan():
    truth = OneStepEffectTruth(torch.tensor([[-0.2, -0.1, -0.3]]), True, OneStepEffectSpec(eta=0.1))
    result = TailPatch(k=1, n_bootstrap=100).compute(torch.tensor([[0.0, 1.0, 2.0]]), truth)
    assert result.value == pytest.approx(-0.3) and result.provenance["ceiling"] == pytest.approx(-0.1)
    assert result.provenance["share_of_ceiling"] is None
    assert result.to_dict()["value"] == pytest.approx(-0.3)
