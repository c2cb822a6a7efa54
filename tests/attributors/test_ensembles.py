import pytest
import torch

from tdaeval.attributors import get
from tdaeval.attributors.ensembles import (
    CheckpointEnsemble,
    MemberDropout,
    checkpoints,
    dropout,
    naive,
    parameter_bytes,
    with_member_dropout,
)
from tdaeval.errors import ConfigError
from tdaeval.training import Checkpoint, train_model


@pytest.fixture(scope="module")
def mlp():
    from tdaeval.tasks import DigitsTask
    from tdaeval.task import TrainRecipe

    task = DigitsTask(n_train=150, n_test=12, hidden=16, recipe=TrainRecipe(epochs=3, batch_size=32))
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=3)
    return task, run


def test_identical_members_equal_the_single_attributor(mlp):
    task, run = mlp
    single = get("grad_dot").fit(task, run.model, task.train_data).attribute(task.test_data)
    final = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    same = [Checkpoint(epoch=k, lr=0.1, params=final) for k in range(3)]
    ensemble = checkpoints("grad_dot").fit(task, run.model, task.train_data, checkpoints=same)
    torch.testing.assert_close(ensemble.attribute(task.test_data), single, rtol=1e-5, atol=1e-6)
    one = naive("grad_dot", n_models=1).fit(task, run.model, task.train_data)
    torch.testing.assert_close(one.attribute(task.test_data), single)


def test_naive_ensemble_is_the_mean_over_independently_trained_members(mlp):
    task, run = mlp
    ensemble = naive("grad_cos", n_models=3, seed=5).fit(task, run.model, task.train_data)
    models = [member.model_ for member in ensemble.members_]
    assert models[0] is run.model and len(models) == 3
    assert not torch.equal(next(models[1].parameters()), next(models[2].parameters()))
    loop = torch.stack([get("grad_cos").fit(task, m, task.train_data).attribute(task.test_data) for m in models]).mean(0)
    torch.testing.assert_close(ensemble.attribute(task.test_data), loop, rtol=1e-5, atol=1e-6)
    # the same seed gives the same members
    again = naive("grad_cos", n_models=3, seed=5).fit(task, run.model, task.train_data)
    torch.testing.assert_close(again.attribute(task.test_data), ensemble.attribute(task.test_data))
    cost = ensemble.cost_
    assert cost["members"] == 3 and cost["storage_bytes"] == 3 * parameter_bytes(run.model)
    assert cost["training_seconds"] > 0 and cost["serving_seconds"] > 0


def test_checkpoint_ensemble_uses_the_last_checkpoints(mlp):
    task, run = mlp
    ensemble = checkpoints("grad_dot", n_checkpoints=2).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    expected = []
    for checkpoint in run.checkpoints[-2:]:
        model = task.build_model(0)
        model.load_state_dict({**model.state_dict(), **checkpoint.params})
        expected.append(get("grad_dot").fit(task, model.eval(), task.train_data).attribute(task.test_data))
    torch.testing.assert_close(ensemble.attribute(task.test_data), torch.stack(expected).mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="needs checkpoints"):
        CheckpointEnsemble().fit(task, run.model, task.train_data)


@pytest.mark.parametrize("mask_mode", ["member", "example"])
def test_dropout_with_p_zero_equals_the_plain_attributor(mlp, mask_mode):
    task, run = mlp
    plain = get("grad_dot").fit(task, run.model, task.train_data).attribute(task.test_data)
    ensemble = dropout("grad_dot", n_passes=3, p=0.0, mask_mode=mask_mode).fit(task, run.model, task.train_data)
    torch.testing.assert_close(ensemble.attribute(task.test_data), plain)


@pytest.mark.parametrize("mask_mode", ["member", "example"])
def test_dropout_members_are_deterministic_models_that_differ_by_pass(mlp, mask_mode):
    task, run = mlp
    x = task.test_data.inputs
    first = with_member_dropout(run.model, x[:1], 0.3, mask_mode, seed=1)
    second = with_member_dropout(run.model, x[:1], 0.3, mask_mode, seed=2)
    assert sum(isinstance(m, MemberDropout) for m in first.modules()) == 2
    out = first(x)
    torch.testing.assert_close(first(x), out)  # a fixed mask, in eval mode
    assert not torch.allclose(out, second(x))
    assert not torch.allclose(out, run.model(x))
    # one example alone gets the mask it gets inside a batch
    for i in range(3):
        torch.testing.assert_close(first(x[i : i + 1]), out[i : i + 1], rtol=1e-5, atol=1e-6)
    dropped = [m for m in first.modules() if isinstance(m, MemberDropout)][0]
    signs = torch.randint(0, 2, (len(x), 16), generator=torch.Generator().manual_seed(0)).float()
    features = torch.ones(len(x), 16)
    masks = dropped(features * (2 * signs - 1))  # distinct activation patterns
    if mask_mode == "member":
        torch.testing.assert_close(masks, features * (2 * signs - 1) * dropped.mask)
    else:
        kept = masks != 0
        assert not all(torch.equal(kept[0], kept[i]) for i in range(1, len(x)))  # per-example masks
        assert 0.5 < kept.float().mean() < 0.9  # about 1 - p kept


def test_dropout_ensemble_averages_its_members_and_stores_only_the_base_models(mlp):
    task, run = mlp
    ensemble = dropout("grad_dot", n_models=1, n_passes=4, p=0.2, seed=3).fit(task, run.model, task.train_data)
    members = [m.model_ for m in ensemble.members_]
    loop = torch.stack([get("grad_dot").fit(task, m, task.train_data).attribute(task.test_data) for m in members]).mean(0)
    torch.testing.assert_close(ensemble.attribute(task.test_data), loop, rtol=1e-5, atol=1e-6)
    plain = get("grad_dot").fit(task, run.model, task.train_data).attribute(task.test_data)
    assert not torch.allclose(loop, plain)
    assert ensemble.cost_["members"] == 4 and ensemble.cost_["storage_bytes"] == parameter_bytes(run.model)
    assert run.model.training is False and not any(isinstance(m, MemberDropout) for m in run.model.modules())


def test_an_attributor_instance_is_copied_not_fitted(mlp):
    task, run = mlp
    template = get("grad_cos")
    ensemble = checkpoints(template, n_checkpoints=1)
    ensemble.fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    assert ensemble.members_[0] is not template
    assert not hasattr(template, "model_")
    with pytest.raises(ConfigError, match="must be unfitted"):
        naive(get("grad_dot").fit(task, run.model, task.train_data))


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: naive(n_models=0), "'n_models'"),
        (lambda: dropout(n_passes=0), "'n_passes'"),
        (lambda: dropout(p=1.0), "'p'"),
        (lambda: dropout(p=-0.1), "'p'"),
        (lambda: dropout(mask_mode="layer"), "'mask_mode'"),
        (lambda: checkpoints(n_checkpoints=0), "'n_checkpoints'"),
        (lambda: naive(attributor=3), "'attributor'"),
        (lambda: naive(get("grad_dot"), attributor_params={"chunk_size": 3}), "'attributor_params'"),
        (lambda: naive(naive()), "cannot itself be an ensemble"),
        (lambda: naive("no_such_attributor"), "Unknown attributor"),
    ],
)
def test_bad_parameters_name_the_parameter(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_dropout_on_a_model_without_dropout_layers_is_a_clear_error(small_logreg):
    task = small_logreg
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    with pytest.raises(ConfigError, match="needs a 'model' with dropout layers"):
        dropout().fit(task, model, task.train_data)
