import pytest
import torch

from tdaeval.attributors import get
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, RemovalSpec, build_removal_context, removal_outcome
from tdaeval.metrics import Brittleness, FlipTest, TopKRemoval
from tdaeval.training import train_model


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from tdaeval.task import TrainRecipe
    from tdaeval.tasks import DigitsTask

    task = DigitsTask(n_train=200, n_test=30, hidden=16, recipe=TrainRecipe(epochs=8, batch_size=32))
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    scores = get("grad_cos").fit(task, model, task.train_data).attribute(task.test_data)
    return task, scores, ArtifactStore(tmp_path_factory.mktemp("store"))


def test_removals_retrain_from_scratch_without_the_selected_points(setting):
    task, scores, store = setting
    context = build_removal_context(task, RemovalSpec(k_grid=(5, 10), n_seeds=2, n_test_points=3), store)
    outcome = removal_outcome(context, scores, "top")
    assert outcome.outputs.shape == (3, 2, 2) and outcome.full.shape == (3, 2)
    z = int(context.test_points[1])
    keep = torch.ones(task.n_train, dtype=torch.bool)
    keep[scores[z].double().topk(10).indices] = False
    seed = context.seeds[1]
    fresh = train_model(task, task.build_model(seed), torch.nonzero(keep).flatten(), seed).model
    assert float(outcome.outputs[1, 1, 1]) == pytest.approx(float(task.measure(fresh)[z]), abs=1e-4)
    full = train_model(task, task.build_model(seed), torch.arange(task.n_train), seed).model
    assert float(outcome.full[1, 1]) == pytest.approx(float(task.measure(full)[z]), abs=1e-4)
    expected = -(outcome.outputs - outcome.full.unsqueeze(1)).mean(2)  # margin: higher is better
    torch.testing.assert_close(outcome.harm(True), expected)


@pytest.mark.slow
def test_removing_the_top_scored_points_hurts_more_than_random_ones(setting):
    task, scores, store = setting
    metric = TopKRemoval(k_grid=(20, 40), n_seeds=2, n_test_points=12)
    context = metric.build_truth(task, store)
    result = metric.compute(scores, context)
    curves = result.provenance["mean_harm_per_k"]
    assert curves["top"][-1] > curves["random"][-1] > curves["bottom"][-1]
    assert result.value == pytest.approx(curves["top"][-1]) and result.n == 12
    again = metric.compute(scores, context)  # every removal is in the store now
    assert again.provenance["jobs_trained"] == 0 and again.value == pytest.approx(result.value)


def test_flip_test_and_brittleness(setting):
    task, scores, store = setting
    flip = FlipTest(k_grid=(20, 40, 60), n_seeds=2, n_test_points=12)
    context = flip.build_truth(task, store)
    result = flip.compute(scores, context)
    per_k = result.provenance["fraction_flipped_per_k"]
    assert per_k["top"] == sorted(per_k["top"])  # cumulative in k
    assert per_k["top"][-1] >= per_k["random"][-1] and 0.0 <= result.value <= 1.0
    brittle = Brittleness(k_grid=(20, 40, 60), n_seeds=2, n_test_points=12)
    b = brittle.compute(scores, brittle.build_truth(task, store))
    assert set(b.per_example.tolist()) <= {20.0, 40.0, 60.0, 80.0} and b.n_nan == 0  # 80: never flipped (censored)
    assert b.provenance["censored_at"] == 80.0
    assert b.provenance["n_never_flipped"] == int((b.per_example == 80.0).sum())
    assert b.provenance["cdf"]["fraction_flipped"][-1] == pytest.approx(result.value)  # same removals, same seeds


def test_bad_settings_are_clear_errors(setting, linear_task, tmp_path):
    task, scores, store = setting
    with pytest.raises(ConfigError, match="'k_grid'"):
        RemovalSpec(k_grid=(20, 10))
    with pytest.raises(ConfigError, match="keep k < n_train"):
        build_removal_context(task, RemovalSpec(k_grid=(500,)), store)
    flip = FlipTest(k_grid=(5,), n_seeds=1, n_test_points=3)
    context = flip.build_truth(linear_task, ArtifactStore(tmp_path))
    with pytest.raises(ConfigError, match="margin"):
        flip.compute(torch.zeros(linear_task.n_test, linear_task.n_train), context)
    with pytest.raises(ConfigError, match="'selection'"):
        removal_outcome(build_removal_context(task, RemovalSpec(k_grid=(5,), n_seeds=1, n_test_points=2), store), scores, "middle")
