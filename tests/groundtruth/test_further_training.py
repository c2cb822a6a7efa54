import copy
import json

import pytest
import torch

import tdaeval
from tdaeval.attributors import get
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, FurtherTrainingSpec, build_further_training_groundtruth, further_train
from tdaeval.groundtruth.jobs import derive_seed
from tdaeval.metrics import FurtherTraining, FurtherTrainingSpearman
from tdaeval.training import train_model


@pytest.fixture(scope="module")
def trained():
    from tdaeval.task import TrainRecipe
    from tdaeval.tasks import DigitsTask

    task = DigitsTask(n_train=120, n_test=15, hidden=16, recipe=TrainRecipe(epochs=5, batch_size=32))
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    return task, model


def _reference_run(task, model, order_seed, left_out, epochs, lr, batch_size, epsilon=None):
    """Plain PyTorch: SGD on the same permutations, the left-out point removed (or down-weighted), one run."""
    model = copy.deepcopy(model).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(int(derive_seed("further-order", order_seed, epoch)))
        order = torch.randperm(task.n_train, generator=generator)
        if left_out is not None and epsilon is None:
            order = order[order != left_out]
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            weight = torch.ones(len(batch))
            if epsilon is not None and left_out is not None:
                weight[batch == left_out] = 1.0 - epsilon
            optimizer.zero_grad()
            losses = task.loss(model(task.train_data.inputs[batch]), task.train_data.targets[batch])
            ((losses * weight).sum() / len(batch)).backward()
            optimizer.step()
    with torch.no_grad():
        return task.measure(model)


def test_batched_runs_equal_plain_sgd_runs_one_at_a_time(trained):
    task, model = trained
    runs = [(7, None), (7, 3), (8, 50), (7, None)]
    curves = further_train(task, model, runs, epochs=2, lr=0.05, batch_size=32)
    assert curves.shape == (4, 3, task.n_test)
    start = task.measure(model)
    for row in curves:  # zero further training: the model itself
        torch.testing.assert_close(row[0], start)
    assert torch.equal(curves[0], curves[3])  # the same run twice: bitwise equal, so a no-removal difference is 0
    for (order_seed, left_out), row in zip(runs, curves):
        torch.testing.assert_close(row[-1], _reference_run(task, model, order_seed, left_out, 2, 0.05, 32), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(curves[1, -1], curves[0, -1])


def test_ground_truth_is_zero_before_training_centred_and_stored(trained, tmp_path):
    task, model = trained
    spec = FurtherTrainingSpec(n_left_out=6, n_seeds=2, epochs=2)
    truth = build_further_training_groundtruth(task, model, spec, ArtifactStore(tmp_path))
    assert truth.left_out_outputs.shape == (6, 2, 3, task.n_test) and truth.effects.shape == (3, task.n_test, 6)
    assert torch.equal(truth.effects[0], torch.zeros(task.n_test, 6, dtype=torch.float64))
    torch.testing.assert_close(truth.effects.mean(-1), torch.zeros(3, task.n_test, dtype=torch.float64))
    raw = FurtherTrainingSpec(n_left_out=6, n_seeds=2, epochs=2, subtract_mean=False)
    uncentred = build_further_training_groundtruth(task, model, raw, ArtifactStore(tmp_path))
    assert uncentred.provenance["runs_trained"] == 0  # the same runs, from the store
    expected = (uncentred.left_out_outputs.double() - uncentred.full_outputs.double()).mean(1).permute(1, 2, 0)
    torch.testing.assert_close(uncentred.effects, expected)
    torch.testing.assert_close(truth.harm, -truth.effects)  # margin: higher is better


def test_metric_curve_and_its_maximum(trained, tmp_path):
    task, model = trained
    metric = FurtherTraining(n_left_out=20, n_seeds=3, epochs=3)
    truth = metric.build_truth(task, ArtifactStore(tmp_path), model=model)
    scores = get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data)
    result = metric.compute(scores, truth)
    curve = result.provenance["curve"]
    assert len(curve) == 4 and curve[0] is None  # epoch 0: a = 0, the cosine is undefined
    assert result.value == pytest.approx(max(curve[1:])) and result.provenance["best_epoch"] >= 1
    json.dumps(result.to_dict(), allow_nan=False)  # JSON-ready: raises on NaN
    assert result.value > 0.2  # Grad-Dot agrees with further training of its own model
    spearman = FurtherTrainingSpearman(n_left_out=20, n_seeds=3, epochs=3).compute(scores, truth)
    assert -1 <= spearman.value <= 1 and spearman.provenance["correlation"] == "spearman"
    with pytest.raises(ConfigError, match="model"):
        metric.build_truth(task, ArtifactStore(tmp_path))


def test_further_training_runs_in_evaluate(trained, tmp_path):
    task, _ = trained
    result = tdaeval.evaluate(
        task, attributors=["grad_dot", "random"], metrics={"further_training": {"n_left_out": 10, "n_seeds": 2, "epochs": 2}},
        cache_dir=str(tmp_path),
    )
    assert result.get("grad_dot", "further_training").value > result.get("random", "further_training").value


@pytest.mark.parametrize("params,match", [({"n_left_out": 1}, "'n_left_out'"), ({"epochs": 0}, "'epochs'"), ({"lr": -1.0}, "'lr'")])
def test_spec_validation(params, match):
    with pytest.raises(ConfigError, match=match):
        FurtherTrainingSpec(**params)


def test_downweighting_mode_matches_plain_sgd_and_is_on_the_removal_scale(trained, tmp_path):
    task, model = trained
    runs = [(5, None), (5, 17)]
    curves = further_train(task, model, runs, epochs=2, lr=0.05, batch_size=32, epsilon=0.25)
    for (order_seed, left_out), row in zip(runs, curves):
        expected = _reference_run(task, model, order_seed, left_out, 2, 0.05, 32, epsilon=0.25)
        torch.testing.assert_close(row[-1], expected, atol=1e-4, rtol=1e-4)
    small = build_further_training_groundtruth(
        task, model, FurtherTrainingSpec(n_left_out=5, n_seeds=2, epochs=2, mode="downweight", downweight=0.01, subtract_mean=False),
        ArtifactStore(tmp_path))
    smaller = build_further_training_groundtruth(
        task, model, FurtherTrainingSpec(n_left_out=5, n_seeds=2, epochs=2, mode="downweight", downweight=0.005, subtract_mean=False),
        ArtifactStore(tmp_path))
    # per unit of weight, the effect of a small down-weighting does not depend on its size
    torch.testing.assert_close(small.effects[-1], smaller.effects[-1], rtol=0.1, atol=1e-3 * float(small.effects[-1].abs().max()))
    assert small.provenance["epsilon"] == 0.01
    with pytest.raises(ConfigError, match="'downweight'"):
        FurtherTrainingSpec(mode="downweight", downweight=0.0)
    with pytest.raises(ConfigError, match="'mode'"):
        FurtherTrainingSpec(mode="reweight")
