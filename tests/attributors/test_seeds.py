import numpy as np
import pytest
import torch
from scipy import stats

from tdaeval.attributors import Attribution, get
from tdaeval.attributors.seeds import SeedPosterior, seed_posterior
from tdaeval.errors import ConfigError
from tdaeval.functional.reliability import seed_statistics
from tdaeval.training import train_model


@pytest.fixture(scope="module")
def mlp_task():
    from tdaeval.task import TrainRecipe
    from tdaeval.tasks import DigitsTask

    task = DigitsTask(n_train=120, n_test=10, hidden=16, recipe=TrainRecipe(epochs=3, batch_size=32))
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    return task, model


@pytest.mark.parametrize("test", ["snr", "t"])
def test_statistics_equal_numpy_and_scipy(rng, test):
    stack = torch.randn(7, 5, 9, generator=rng, dtype=torch.float64) + 0.8 * torch.randn(1, 5, 9, generator=rng, dtype=torch.float64)
    mean, std, p_value = seed_statistics(stack, test)
    array = stack.numpy()
    np.testing.assert_allclose(mean.numpy(), array.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std.numpy(), array.std(0, ddof=1), rtol=1e-12)
    if test == "snr":
        expected = 2 * stats.norm.sf(np.abs(array.mean(0) / array.std(0, ddof=1)))
    else:
        expected = stats.ttest_1samp(array, 0.0, axis=0).pvalue
    np.testing.assert_allclose(p_value.numpy(), expected, rtol=1e-10, atol=1e-14)


def test_statistics_of_constant_pairs_and_bad_input():
    stack = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0]]])
    _, std, p_value = seed_statistics(stack)
    assert torch.equal(std, torch.zeros(1, 2, dtype=torch.float64))
    assert p_value.tolist() == [[1.0, 1.0]]  # identical samples: no estimate of the noise, never "reliable"
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        seed_statistics(torch.zeros(1, 2, 2))
    with pytest.raises(ConfigError, match="'test'"):
        seed_statistics(torch.zeros(3, 2, 2), test="z")


def test_posterior_equals_statistics_over_independently_trained_seeds(mlp_task):
    task, model = mlp_task
    posterior = seed_posterior("grad_dot", n_seeds=3, seed=4).fit(task, model, task.train_data)
    result = posterior.attribute(task.test_data)
    assert isinstance(result, Attribution) and result.n_samples == 3 and result.shape == (task.n_test, task.n_train)
    # each seed's scores = grad_dot on a model trained alone with that seed (batched training equals sequential)
    rows = []
    for init_seed, order_seed in posterior.training_seeds():
        assert init_seed == order_seed
        alone = train_model(task, task.build_model(init_seed), torch.arange(task.n_train), order_seed).model
        rows.append(get("grad_dot").fit(task, alone, task.train_data).attribute(task.test_data).double())
    stack = torch.stack(rows).numpy()
    np.testing.assert_allclose(result.mean.numpy(), stack.mean(0), rtol=1e-3, atol=1e-4 * np.abs(stack).max())
    np.testing.assert_allclose(result.std.numpy(), stack.std(0, ddof=1), rtol=1e-2, atol=1e-3 * np.abs(stack).max())
    expected = torch.tensor(stats.ttest_1samp(stack, 0.0, axis=0).pvalue, dtype=torch.float32)  # default: t-test
    assert result.test == "t" and (result.p_value - expected).abs().max() < 1e-3
    assert torch.equal(result.reliable(0.05), result.p_value < 0.05)
    assert posterior.cost_["members"] == 3 and posterior.cost_["training_seconds"] > 0
    with pytest.raises(ConfigError, match="'alpha'"):
        result.reliable(1.5)


def test_last_k_averages_checkpoints_and_vary_holds_one_noise_fixed(mlp_task):
    task, model = mlp_task
    posterior = seed_posterior("grad_dot", n_seeds=2, last_k=2, vary="init").fit(task, model, task.train_data)
    assert [len(m) for m in posterior.members_] == [2, 2]
    seeds = posterior.training_seeds()
    assert seeds[0][1] == seeds[1][1] and seeds[0][0] != seeds[1][0]  # batch order fixed, init varies
    stack = posterior.seed_scores(task.test_data)
    first = torch.stack([m.attribute(task.test_data).double() for m in posterior.members_[0]]).mean(0)
    torch.testing.assert_close(stack[0], first)
    order = SeedPosterior(n_seeds=2, vary="order").training_seeds()
    assert order[0][0] == order[1][0] and order[0][1] != order[1][1]
    t_test = seed_posterior("grad_dot", n_seeds=2, test="t").fit(task, model, task.train_data).attribute(task.test_data)
    assert t_test.test == "t"


def test_checkpoint_attributors_get_their_runs_checkpoints(mlp_task):
    task, model = mlp_task
    posterior = seed_posterior("tracin", n_seeds=2, n_checkpoints=2).fit(task, model, task.train_data)
    assert all(len(m[0].checkpoints_) == 2 for m in posterior.members_)
    with pytest.raises(Exception, match="needs checkpoints"):
        seed_posterior("tracin", n_seeds=2).fit(task, model, task.train_data)


def test_metrics_use_the_mean_of_an_attribution(rng):
    from tdaeval.groundtruth import LDSGroundTruth, LDSSpec
    from tdaeval.metrics import LDS

    masks = torch.rand(30, 50, generator=rng) < 0.5
    effects = torch.randn(10, 50, generator=rng)
    outputs = (masks.float() @ effects.T).unsqueeze(1) + 0.3 * torch.randn(30, 2, 10, generator=rng)
    truth = LDSGroundTruth(masks, outputs, LDSSpec(n_subsets=30, n_seeds=2), True, {"kind": "lds"})
    attribution = Attribution(effects, torch.ones_like(effects), 5, torch.full_like(effects, 0.5))
    metric = LDS(n_subsets=30, n_seeds=2)
    assert metric.compute(attribution, truth).value == pytest.approx(metric.compute(effects, truth).value)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"n_seeds": 1}, "'n_seeds'"),
        ({"last_k": 0}, "'last_k'"),
        ({"vary": "data"}, "'vary'"),
        ({"test": "z"}, "'test'"),
        ({"attributor": 2}, "'attributor'"),
        ({"attributor": "naive_ensemble"}, "cannot be an ensemble"),
    ],
)
def test_bad_parameters_name_the_parameter(params, match):
    with pytest.raises(ConfigError, match=match):
        SeedPosterior(**params)
