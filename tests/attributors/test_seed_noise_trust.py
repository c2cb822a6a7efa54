"""Seed noise must not make chance look reliable, and the default p-value must be a calibrated test of zero effect."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from scipy import stats

from tdaeval.attributors import Attribution, SeedPosterior, get
from tdaeval.attributors.base import FunctionAttributor
from tdaeval.attributors.seeds import TEST_DESCRIPTIONS, TESTS, describe_test, seed_posterior, seed_statistics
from tdaeval.errors import ConfigError
from tdaeval.metrics import SeedRankStability, SeedReliability
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model

ALPHA = 0.05


def _binomial_bounds(n: int, alpha: float = ALPHA, tail: float = 1e-6) -> tuple[float, float]:
    """Fractions of ``n`` independent Bernoulli(alpha) draws outside which a calibrated test fails with odds ``tail``."""
    return stats.binom.ppf(tail, n, alpha) / n, stats.binom.isf(tail, n, alpha) / n


@pytest.fixture(scope="module")
def tiny_task():
    task = DigitsTask(n_train=100, n_test=10, hidden=8, recipe=TrainRecipe(epochs=1, batch_size=50))
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    return task, model


# --- item 3: the random baseline over seeds -------------------------------------------------------------


def test_random_draws_from_the_training_seed_of_the_model_it_explains(tiny_task):
    task, model = tiny_task
    other = train_model(task, task.build_model(1), torch.arange(task.n_train), 1).model
    first = get("random").fit(task, model, task.train_data).attribute(task.test_data)
    again = get("random").fit(task, model, task.train_data).attribute(task.test_data)
    second = get("random").fit(task, other, task.train_data).attribute(task.test_data)
    assert torch.equal(first, again)  # same model, same seed: same draw
    assert abs(stats.pearsonr(first.flatten().numpy(), second.flatten().numpy())[0]) < 0.2  # another run: a new draw
    assert not torch.equal(first, get("random", seed=1).fit(task, model, task.train_data).attribute(task.test_data))


def test_random_baseline_over_seeds_is_noise_not_reliability(tiny_task):
    task, model = tiny_task
    n_seeds = 5
    result = seed_posterior("random", n_seeds=n_seeds).fit(task, model, task.train_data).attribute(task.test_data)
    assert not torch.equal(result.samples[0], result.samples[1])  # every seed its own draw
    n_pairs = task.n_test * task.n_train
    _, high = _binomial_bounds(n_pairs)
    reliability = SeedReliability(alpha=ALPHA).compute(result)
    assert reliability.value <= high, f"{reliability.value:.3f} of chance-level pairs read as reliable"
    assert float(result.reliable(ALPHA).double().mean()) <= high
    # independent draws: the seeds' rankings agree no more than chance (|Spearman| ~ 1/sqrt(n_train) per pair)
    assert abs(SeedRankStability(k=5).compute(result).value) < 0.1


@pytest.mark.parametrize("test", TESTS)
def test_an_attributor_identical_across_seeds_gets_no_reliable_pair(tiny_task, test):
    """Whatever the scores, samples that do not vary over seeds give no evidence: p = 1, nothing reliable."""
    task, model = tiny_task
    constant = FunctionAttributor(lambda model, train, test_data: test_data.inputs @ train.inputs.T + 0.1, name="inputs")
    posterior = SeedPosterior(constant, n_seeds=3, test=test).fit(task, model, task.train_data)
    result = posterior.attribute(task.test_data)
    assert torch.equal(result.samples[0], result.samples[2]) and bool((result.mean != 0).all())
    assert not bool(result.reliable(ALPHA).any()) and bool((result.p_value == 1).all())
    for metric_test in TESTS:
        assert SeedReliability(test=metric_test).compute(result).value == 0.0


@pytest.mark.parametrize("test", TESTS)
@pytest.mark.parametrize("value", [0.0, 0.1, 1 / 3, -7.0, 1e-30, 3e8])
def test_seed_statistics_never_calls_identical_samples_reliable(test, value):
    row = torch.tensor([value, -value, 2.5 * value], dtype=torch.float32).double()
    for n_seeds in (2, 5, 10):
        stack = row.expand(n_seeds, 1, 3).clone()
        _, std, p_value = seed_statistics(stack, test)
        assert bool((p_value == 1).all()), (value, n_seeds, std)


# --- item 4: the default test is calibrated and every result names its test --------------------------------


@pytest.mark.parametrize("n_seeds", [3, 5, 10])
def test_default_p_value_is_a_calibrated_test_of_zero_effect(n_seeds):
    """Under the null (pure noise, zero mean) the default test rejects ~alpha of the pairs, as scipy's t-test."""
    generator = torch.Generator().manual_seed(n_seeds)
    stack = torch.randn(n_seeds, 50, 80, generator=generator, dtype=torch.float64)
    _, _, p_value = seed_statistics(stack)
    np.testing.assert_allclose(p_value.numpy(), stats.ttest_1samp(stack.numpy(), 0.0, axis=0).pvalue, rtol=1e-10, atol=1e-14)
    low, high = _binomial_bounds(p_value.numel())
    rate = float((p_value < ALPHA).double().mean())
    assert low <= rate <= high, f"false-positive rate {rate:.4f} at {n_seeds} seeds, expected about {ALPHA}"


def test_reliability_metric_defaults_to_the_calibrated_test_and_names_it():
    generator = torch.Generator().manual_seed(0)
    n_seeds = 5
    stack = torch.randn(n_seeds, 40, 60, generator=generator, dtype=torch.float64)
    mean, std, snr_p = seed_statistics(stack, "snr")
    # a posterior built with the paper's test: the metric still applies its own (default: t)
    attribution = Attribution(mean.float(), std.float(), n_seeds, snr_p.float(), "snr", stack.float())
    result = SeedReliability(alpha=ALPHA).compute(attribution)
    expected = (stats.ttest_1samp(stack.float().double().numpy(), 0.0, axis=0).pvalue < ALPHA).mean()
    assert result.value == pytest.approx(expected, abs=1e-12)
    low, high = _binomial_bounds(stack[0].numel())
    assert low <= result.value <= high
    assert result.provenance["test"] == "one-sample t-test over seeds (calibrated)" and result.provenance["test_code"] == "t"
    paper = SeedReliability(alpha=ALPHA, test="snr").compute(attribution)
    assert paper.provenance["test"] == "paper's SNR test (not calibrated under the null)"
    assert paper.value < low  # the SNR test is far below alpha under the null: it is not a false-positive rate


def test_every_reliability_entry_point_defaults_to_the_calibrated_test():
    for function in (seed_statistics, SeedPosterior.__init__, SeedReliability.__init__):
        assert inspect.signature(function).parameters["test"].default == "t", function.__qualname__
    assert inspect.signature(seed_posterior).parameters.get("test") is None  # passes **params to SeedPosterior
    assert SeedPosterior().test == "t" and Attribution(torch.zeros(1, 1), torch.zeros(1, 1), 2, torch.ones(1, 1)).test == "t"
    for test in TESTS:  # every selectable test says in words whether it is calibrated
        assert "calibrated" in describe_test(test) and describe_test(test) == TEST_DESCRIPTIONS[test]
    with pytest.raises(ConfigError, match="'test'"):
        SeedReliability(test="z")
    with pytest.raises(ConfigError, match="'test'"):
        describe_test("z")
