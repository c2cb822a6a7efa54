import copy

import pytest
import torch

from tdaeval.attributors import get
from tdaeval.attributors.ensembles import (
    CheckpointEnsemble,
    MemberDropout,
    checkpoints,
    dropout,
    lora,
    naive,
    parameter_bytes,
    with_member_dropout,
)
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.training import Checkpoint, train_model


@pytest.fixture(scope="module")
def mlp():
    from tdaeval.task import TrainRecipe
    from tdaeval.tasks import DigitsTask

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
    models = ensemble.member_models_
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
    with pytest.raises(AttributorError, match=r"'checkpoint_ensemble\(grad_dot\)' needs checkpoints"):
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
    members = ensemble.member_models_
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


# --- LoRA ---------------------------------------------------------------------------------------------------


def _weight_grads(model, fn, data):
    """Per-example gradients of ``fn(model(x), y)`` w.r.t. each nn.Linear weight: {name: [n, out, in]}."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, x, y):
        return fn(functional_call(model, p, (x[None],)), y[None]).sum()

    grads = vmap(grad(one), in_dims=(None, 0, 0))(params, data.inputs, data.targets)
    return {k[: -len(".weight")]: v for k, v in grads.items() if k.endswith(".weight")}


def test_fresh_adapters_give_the_base_gradients_projected_on_a(mlp):
    """B = 0: ∂L/∂A = 0 and ∂L/∂B = (∂L/∂W) Aᵀ, so Grad-Dot over the adapters is Σ_l <G_l Aᵀ, G'_l Aᵀ>."""
    from tdaeval.nn import LoRALinear

    task, run = mlp
    ensemble = lora("grad_dot", n_adapters=1, rank=3, steps=0).fit(task, run.model, task.train_data)
    member = ensemble.member_models_[0]
    x = task.test_data.inputs
    torch.testing.assert_close(member(x), run.model(x))
    assert all(name.endswith(("lora_A", "lora_B")) for name, _ in member.named_parameters())
    loss_grads = _weight_grads(run.model, task.loss, task.train_data)
    sign = -1.0 if task.higher_is_better else 1.0
    test_grads = _weight_grads(run.model, lambda o, y: sign * task.measurement(o, y), task.test_data)
    expected = torch.zeros(task.n_test, task.n_train)
    for name, module in member.named_modules():
        if isinstance(module, LoRALinear):
            a = module.lora_A.detach()
            expected += torch.einsum("tor,nor->tn", test_grads[name] @ a.T, loss_grads[name] @ a.T)
    scores = ensemble.attribute(task.test_data)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    # gradients over all parameters add the base model's own Grad-Dot
    everything = lora("grad_dot", n_adapters=1, rank=3, steps=0, grad_params="all").fit(task, run.model, task.train_data)
    base = get("grad_dot").fit(task, run.model, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(everything.attribute(task.test_data), base + expected, rtol=1e-4, atol=1e-5 * float(base.abs().max()))


@pytest.mark.slow
def test_adapters_fine_tuned_together_equal_each_fine_tuned_alone(mlp):
    from tdaeval.attributors.ensembles import finetune_adapters
    from tdaeval.nn import add_lora, lora_parameters

    task, run = mlp
    seeds = [11, 12, 13]
    together = finetune_adapters(task, [add_lora(run.model, 2, s) for s in seeds], task.train_data, seeds, 15, 0.05, 32, 0.9)
    for seed, model in zip(seeds, together):
        alone = finetune_adapters(task, [add_lora(run.model, 2, seed)], task.train_data, [seed], 15, 0.05, 32, 0.9)[0]
        for name, value in lora_parameters(model).items():
            torch.testing.assert_close(value, lora_parameters(alone)[name], rtol=1e-5, atol=1e-6)
    before = task.loss(run.model(task.train_data.inputs), task.train_data.targets).mean()
    after = task.loss(together[0](task.train_data.inputs), task.train_data.targets).mean()
    assert after < before  # fine-tuning lowers the training loss
    assert not torch.equal(lora_parameters(together[0])["0.lora_B"], lora_parameters(together[1])["0.lora_B"])


def test_lora_ensemble_averages_fine_tuned_members_and_counts_adapter_storage(mlp):
    from tdaeval.nn import lora_parameters

    task, run = mlp
    ensemble = lora("grad_cos", n_adapters=3, rank=2, steps=10, targets=["3"]).fit(task, run.model, task.train_data)
    members = ensemble.member_models_
    assert all(set(lora_parameters(m)) == {"3.lora_A", "3.lora_B"} for m in members)
    loop = torch.stack([get("grad_cos").fit(task, m, task.train_data).attribute(task.test_data) for m in members]).mean(0)
    torch.testing.assert_close(ensemble.attribute(task.test_data), loop, rtol=1e-5, atol=1e-6)
    adapter_bytes = sum(p.numel() * 4 for p in lora_parameters(members[0]).values())
    assert ensemble.cost_["storage_bytes"] == parameter_bytes(run.model) + 3 * adapter_bytes


@pytest.mark.parametrize(
    "params,match",
    [
        ({"rank": 0}, "'rank'"),
        ({"n_adapters": 0}, "'n_adapters'"),
        ({"steps": -1}, "'steps'"),
        ({"grad_params": "some"}, "'grad_params'"),
        ({"lr": 0.0}, "'lr'"),
        ({"targets": "3"}, "'targets'"),
    ],
)
def test_lora_bad_parameters_name_the_parameter(params, match):
    from tdaeval.attributors.ensembles import LoRAEnsemble

    with pytest.raises(ConfigError, match=match):
        LoRAEnsemble(**params)


def test_lora_targets_must_be_layers_of_the_model(mlp):
    task, run = mlp
    with pytest.raises(ConfigError, match="'targets'.*\\['9'\\]"):
        lora(targets=["9"], steps=0).fit(task, run.model, task.train_data)


def test_trak_q_only_dropout_takes_q_from_masked_passes_and_gradients_from_the_plain_model(mlp):
    task, run = mlp
    params = {"projection_dim": 64}
    plain = get("trak", **params).fit(task, run.model, task.train_data)
    plain_scores = plain.attribute(task.test_data).double()
    same = dropout("trak", attributor_params=params, n_passes=2, p=0.0, trak_q_only=True).fit(task, run.model, task.train_data)
    torch.testing.assert_close(same.attribute(task.test_data).double(), plain_scores, rtol=1e-5, atol=1e-7)
    ensemble = dropout("trak", attributor_params=params, n_passes=3, p=0.3, trak_q_only=True, seed=2)
    scores = ensemble.fit(task, run.model, task.train_data).attribute(task.test_data).double()
    assert ensemble.cost_["members"] == 1
    masked = [with_member_dropout(run.model, task.train_data.inputs[:1], 0.3, "member", s) for s in ensemble._member_seeds()]
    q = torch.stack([torch.sigmoid(-task.measure(m, task.train_data).double()) for m in masked]).mean(0)
    torch.testing.assert_close(scores, plain_scores / plain.q_ * q, rtol=1e-4, atol=1e-7)
    with pytest.raises(ConfigError, match="'trak_q_only'"):
        dropout("grad_dot", trak_q_only=True)


@pytest.mark.parametrize(
    "build",
    [
        lambda batch: naive("grad_dot", n_models=3, batch_members=batch),
        lambda batch: naive("grad_cos", n_models=3, batch_members=batch),
        lambda batch: dropout("grad_dot", n_passes=3, p=0.2, batch_members=batch),
        lambda batch: dropout("grad_cos", n_passes=3, p=0.2, mask_mode="example", batch_members=batch),
    ],
)
def test_member_batching_equals_a_loop_over_members(mlp, build):
    task, run = mlp
    batched = build(True).fit(task, run.model, task.train_data)
    looped = build(False).fit(task, run.model, task.train_data)
    assert batched.stack_ is not None and looped.stack_ is None and len(looped.members_) == 3
    expected = looped.attribute(task.test_data)
    torch.testing.assert_close(batched.attribute(task.test_data), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_an_ensemble_of_an_attributor_tracking_some_parameters_tracks_only_those(mlp):
    """The batched member path differentiates every parameter: a template tracking a subset must not take it."""
    task, run = mlp
    subset = {"attributor_params": {"params": ["0"]}}
    tracked = naive("grad_dot", n_models=3, **subset).fit(task, run.model, task.train_data)
    looped = naive("grad_dot", n_models=3, batch_members=False, **subset).fit(task, run.model, task.train_data)
    assert tracked.stack_ is None
    expected = looped.attribute(task.test_data)
    torch.testing.assert_close(tracked.attribute(task.test_data), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_members_that_cannot_be_stacked_run_one_by_one(mlp):
    task, run = mlp
    adapted = lora("grad_dot", n_adapters=2, rank=2, steps=0).fit(task, run.model, task.train_data)
    assert adapted.stack_ is None and len(adapted.members_) == 2  # LoRA layers are not nn.Linear
    traced = naive("tracin", n_models=1).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    assert traced.stack_ is None  # only grad_dot and grad_cos are batched
    with pytest.raises(ConfigError, match="'batch_members'"):
        naive(batch_members="yes")


def test_a_peft_adapted_model_is_accepted(mlp):
    """Behind the lora extra: peft's own adapters are re-initialised per member and fine-tuned together."""
    peft = pytest.importorskip("peft")
    from tdaeval.nn import lora_parameters

    task, run = mlp
    adapted = peft.get_peft_model(copy.deepcopy(run.model), peft.LoraConfig(r=2, target_modules=["0", "3"])).eval()
    fresh = lora("grad_dot", n_adapters=2, steps=0).fit(task, adapted, task.train_data)
    x = task.test_data.inputs
    for member in fresh.member_models_:
        names = [name for name, _ in member.named_parameters()]
        assert names and all(".lora_A." in name or ".lora_B." in name for name in names)
        torch.testing.assert_close(member(x), run.model(x))  # B = 0: the base model's outputs
    assert torch.isfinite(fresh.attribute(task.test_data)).all()
    tuned = lora("grad_dot", n_adapters=2, steps=10, seed=1).fit(task, adapted, task.train_data)
    first, second = (lora_parameters(m) for m in tuned.member_models_)
    assert any(not torch.equal(first[name], second[name]) for name in first)
    with pytest.raises(ConfigError, match="n_models=1"):
        lora("grad_dot", n_models=2, steps=0).fit(task, adapted, task.train_data)
