"""DDA (debias and denoise): oracles (zero when nothing was fine-tuned, the inner attributor with one checkpoint and no
debias, a hand formula for grad-dot on logistic regression), each denoise option against numpy, the ablation flags,
where the base comes from, and bad input in one line."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from torch.func import functional_call, grad, vmap

from tdaeval.attributors import DDA, get
from tdaeval.attributors.dda import denoise_scores
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.task import TrainRecipe
from tdaeval.tasks import FineTuneTask
from tdaeval.training import Checkpoint, train_model
from tests.attributors._contract import refuses

RECIPE = TrainRecipe(epochs=3, batch_size=32, lr=0.05)
DENOISE = ["mean", "ema", "median", "zscore_mean", None]


@pytest.fixture(scope="module")
def finetuned():
    """Digits logistic regression fine-tuned (classes 5-9 after 0-4); checkpoints: epoch 0 (the base), 1, 2, 3."""
    task = FineTuneTask.digits(model="logreg", n_train=160, n_test=12, base_recipe=RECIPE, recipe=RECIPE)
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=3, include_initial=True)
    assert [c.epoch for c in run.checkpoints] == [0, 1, 2, 3]
    return task, run


def _fit(task, run, checkpoints=None, **params):
    return DDA(**params).fit(task, run.model, task.train_data, checkpoints=run.checkpoints if checkpoints is None else checkpoints)


def _hand_grad_dot(task, model, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[n_test, n_train]``: ∇(−measurement or measurement)(q; θ) · ∇loss(z_i; θ), per-example gradients by torch.func."""
    sign = -1.0 if task.higher_is_better else 1.0
    params = {k: v.detach().double() for k, v in params.items()}
    model = model.double()

    def per_example(objective, data):
        def one(p, x, y):
            return objective(functional_call(model, p, (x[None],)), y[None]).sum()

        grads = vmap(grad(one), in_dims=(None, 0, 0))(params, data.inputs.double(), data.targets)
        return torch.cat([grads[k].reshape(len(data), -1) for k in params], dim=1)

    g_test = per_example(lambda out, y: sign * task.measurement(out, y), task.test_data)
    g_train = per_example(task.loss, task.train_data)
    return g_test @ g_train.T


def test_equals_the_hand_formula_for_grad_dot_on_logistic_regression(finetuned):
    """(1/E) Σ_e (g_q(θ_e)·g_i(θ_e) − g_q(θ_0)·g_i(θ_0)), θ_0 the base model, θ_e the fine-tuning checkpoints."""
    import copy

    task, run = finetuned
    template = copy.deepcopy(run.model)
    per_epoch = [_hand_grad_dot(task, copy.deepcopy(template), c.params) for c in run.checkpoints]
    expected = torch.stack([s - per_epoch[0] for s in per_epoch[1:]]).mean(0)
    got = _fit(task, run).attribute(task.test_data)
    assert expected.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    # the base term matters: without it the scores are the plain checkpoint mean, which differs
    plain = torch.stack(per_epoch[1:]).mean(0)
    assert (plain - expected).abs().max() > 1e-2 * expected.abs().max()


def test_the_base_comes_from_the_finetune_task_when_no_epoch_0_checkpoint_is_given(finetuned):
    task, run = finetuned
    with_initial = _fit(task, run)
    without = _fit(task, run, checkpoints=run.checkpoints[1:])
    assert with_initial.base_source_ == "epoch-0 checkpoint" and without.base_source_ == "FineTuneTask base model"
    assert torch.equal(with_initial.attribute(task.test_data), without.attribute(task.test_data))


@pytest.mark.parametrize("denoise", DENOISE)
def test_scores_are_zero_when_nothing_was_fine_tuned(finetuned, denoise):
    task, run = finetuned
    base = run.checkpoints[0].params
    unchanged = [Checkpoint(e, 0.1 if e else 0.0, {k: v.clone() for k, v in base.items()}) for e in range(4)]
    scores = _fit(task, run, checkpoints=unchanged, denoise=denoise).attribute(task.test_data)
    assert torch.equal(scores, torch.zeros_like(scores))
    # and they are not zero on the real run (the oracle can fail)
    assert _fit(task, run, denoise=denoise).attribute(task.test_data).abs().max() > 0


def test_one_checkpoint_without_debias_is_the_inner_attributor(small_logreg):
    run = train_model(small_logreg, small_logreg.build_model(0), torch.arange(small_logreg.n_train), 0, n_checkpoints=1)
    for inner in ("grad_dot", "grad_cos"):
        dda = DDA(inner=inner, debias=False).fit(small_logreg, run.model, small_logreg.train_data, checkpoints=run.checkpoints)
        reference = get(inner).fit(small_logreg, run.model, small_logreg.train_data).attribute(small_logreg.test_data)
        torch.testing.assert_close(dda.attribute(small_logreg.test_data), reference, rtol=1e-5, atol=1e-6)


def test_denoise_none_is_the_last_checkpoint_and_debias_off_is_the_checkpoint_mean(finetuned):
    task, run = finetuned
    inner = [get("grad_dot").fit(task, _model_at(run, c), task.train_data).attribute(task.test_data).double() for c in run.checkpoints]
    last_debiased = _fit(task, run, denoise=None).attribute(task.test_data)  # debias only
    torch.testing.assert_close(last_debiased.double(), inner[3] - inner[0], rtol=1e-5, atol=1e-5)
    denoise_only = _fit(task, run, debias=False).attribute(task.test_data)  # the epoch-0 checkpoint is not averaged in
    torch.testing.assert_close(denoise_only.double(), torch.stack(inner[1:]).mean(0), rtol=1e-5, atol=1e-5)
    last_only = _fit(task, run, debias=False, denoise=None)
    torch.testing.assert_close(last_only.attribute(task.test_data).double(), inner[3], rtol=1e-5, atol=1e-5)
    assert last_only.cost_["members"] == 1 and _fit(task, run).cost_["members"] == 4


def _model_at(run, checkpoint):
    import copy

    model = copy.deepcopy(run.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(checkpoint.params[name])
    return model.eval()


@pytest.mark.parametrize("denoise", DENOISE)
def test_each_denoise_option_combines_the_checkpoint_scores_as_numpy_does(finetuned, denoise):
    task, run = finetuned
    per_checkpoint, _ = _fit(task, run).checkpoint_scores(task.test_data)  # all three (denoise=None fits the last only)
    got = _fit(task, run, denoise=denoise, ema_decay=0.3).attribute(task.test_data).double().numpy()
    s = per_checkpoint.numpy()
    assert s.shape == (3, task.n_test, task.n_train)
    if denoise is None:
        want = s[-1]
    elif denoise == "mean":
        want = s.mean(0)
    elif denoise == "median":
        want = np.median(s, axis=0)
    elif denoise == "zscore_mean":
        want = scipy.stats.zscore(s, axis=2).mean(0)
    else:
        want = s[0]
        for row in s[1:]:
            want = 0.3 * want + 0.7 * row
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("n_checkpoints", [1, 2, 3, 4])
def test_denoise_scores_against_numpy_for_odd_and_even_counts(n_checkpoints):
    scores = torch.randn(n_checkpoints, 5, 7, generator=torch.Generator().manual_seed(n_checkpoints), dtype=torch.float64)
    s = scores.numpy()
    np.testing.assert_allclose(denoise_scores(scores, "median").numpy(), np.median(s, axis=0))
    np.testing.assert_allclose(denoise_scores(scores, "mean").numpy(), s.mean(0))
    np.testing.assert_allclose(denoise_scores(scores, "zscore_mean").numpy(), scipy.stats.zscore(s, axis=2).mean(0))
    matrix = scipy.stats.zscore(s.reshape(n_checkpoints, -1), axis=1).reshape(s.shape).mean(0)
    np.testing.assert_allclose(denoise_scores(scores, "zscore_mean", zscore_over="matrix").numpy(), matrix)
    weights = [(1 - 0.5) * 0.5 ** (n_checkpoints - 1 - e) for e in range(n_checkpoints)]  # closed form of the EMA
    weights[0] = 0.5 ** (n_checkpoints - 1)
    np.testing.assert_allclose(denoise_scores(scores, "ema", 0.5).numpy(), np.tensordot(weights, s, axes=1))
    np.testing.assert_allclose(denoise_scores(scores, None).numpy(), s[-1])


def test_a_constant_row_z_scores_to_zero_not_nan():
    scores = torch.zeros(2, 3, 4, dtype=torch.float64)
    scores[0, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    scores[1, 2] = 1e-20  # float noise below the row's scale
    out = denoise_scores(scores, "zscore_mean", scale=torch.ones(2, 3, dtype=torch.float64))
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros(4)) and torch.equal(out[2], torch.zeros(4))
    np.testing.assert_allclose(out[1].numpy(), scipy.stats.zscore([1.0, 2.0, 3.0, 4.0]) / 2)


def test_checkpoints_are_combined_in_epoch_order(finetuned):
    task, run = finetuned
    shuffled = [run.checkpoints[k] for k in (2, 0, 3, 1)]
    a = _fit(task, run, denoise="ema").attribute(task.test_data)
    b = _fit(task, run, checkpoints=shuffled, denoise="ema")
    assert b.epochs_ == [1, 2, 3] and torch.equal(a, b.attribute(task.test_data))


def test_debias_on_a_plain_task_needs_an_epoch_0_checkpoint(small_logreg):
    plain = train_model(small_logreg, small_logreg.build_model(0), torch.arange(small_logreg.n_train), 0, n_checkpoints=2)
    with pytest.raises(AttributorError) as info:
        DDA().fit(small_logreg, plain.model, small_logreg.train_data, checkpoints=plain.checkpoints)
    message = str(info.value)
    assert "\n" not in message and "'dda(grad_dot)'" in message and "include_initial=True" in message and "debias=False" in message
    initial = train_model(small_logreg, small_logreg.build_model(0), torch.arange(small_logreg.n_train), 0, n_checkpoints=2,
                          include_initial=True)
    dda = DDA().fit(small_logreg, initial.model, small_logreg.train_data, checkpoints=initial.checkpoints)
    assert dda.base_source_ == "epoch-0 checkpoint" and dda.attribute(small_logreg.test_data).abs().max() > 0


def test_only_epoch_0_checkpoints_is_a_one_line_error(finetuned):
    task, run = finetuned
    with pytest.raises(AttributorError, match="at least one fine-tuning checkpoint \\(epoch >= 1\\)"):
        _fit(task, run, checkpoints=run.checkpoints[:1])
    with pytest.raises(AttributorError, match="needs checkpoints"):
        DDA().fit(task, run.model, task.train_data)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"inner": "tracin"}, "'inner' parameter of DDA.*'tracin', which needs the checkpoints"),
        ({"inner": "source"}, "'inner' parameter of DDA.*needs the checkpoints"),
        ({"inner": "naive_ensemble"}, "'inner' parameter of DDA.*wraps other models"),
        ({"inner": "dda"}, "'inner' parameter of DDA.*wraps other models"),
        ({"inner": "no_such_attributor"}, "'inner' parameter of DDA \\('no_such_attributor'.*Unknown attributor"),
        ({"inner": "grad_dot", "inner_params": {"chunk_size": 0}}, "'inner' parameter of DDA.*'chunk_size' parameter of GradDot"),
        ({"inner": 3}, "'inner' parameter of DDA"),
        ({"denoise": "mode"}, "'denoise' parameter of DDA"),
        ({"ema_decay": 1.0}, "'ema_decay' parameter of DDA"),
        ({"debias": 1}, "'debias' parameter of DDA"),
    ],
)
def test_bad_parameters_are_one_line_config_errors(params, match):
    with pytest.raises(ConfigError, match=match) as info:
        DDA(**params)
    assert "\n" not in str(info.value)


def test_inner_instances_must_be_unfitted_and_take_no_inner_params(small_logreg):
    fitted = get("grad_dot").fit(small_logreg, small_logreg.build_model(0), small_logreg.train_data)
    with pytest.raises(ConfigError, match="'inner' parameter of DDA must be unfitted"):
        DDA(inner=fitted)
    with pytest.raises(ConfigError, match="'inner_params' parameter of DDA"):
        DDA(inner=get("grad_dot"), inner_params={"chunk_size": 4})
    assert DDA(inner=get("grad_cos")).display_name == "dda(grad_cos)"


def test_an_inner_that_refuses_the_task_makes_dda_refuse_in_one_line(small_logreg):
    dda = DDA(inner="bm25")  # bm25 scores token sequences only
    assert refuses(dda, small_logreg)
    assert "'dda(bm25)' (its 'inner')" in dda.why_unsupported(small_logreg, small_logreg.train_data)


def test_fit_leaves_model_and_checkpoints_unchanged(finetuned):
    task, run = finetuned
    before = [{k: v.clone() for k, v in c.params.items()} for c in run.checkpoints]
    model_before = {k: v.clone() for k, v in run.model.state_dict().items()}
    _fit(task, run).attribute(task.test_data)
    assert all(torch.equal(b[k], c.params[k]) for b, c in zip(before, run.checkpoints) for k in b)
    assert all(torch.equal(v, run.model.state_dict()[k]) for k, v in model_before.items())


# --- the shared-work path (grad_dot / grad_cos over the stacked parameter sets) ---------------------------------------
@pytest.fixture(scope="module")
def finetuned_mlp():
    """Digits MLP (two hidden layers of 16) fine-tuned; checkpoints: epoch 0 (the base), 1, 2, 3."""
    task = FineTuneTask.digits(model="mlp", hidden=16, n_train=120, n_test=10, base_recipe=RECIPE, recipe=RECIPE)
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=3, include_initial=True)
    return task, run


@pytest.mark.parametrize("inner", ["grad_dot", "grad_cos"])
@pytest.mark.parametrize("debias", [True, False])
@pytest.mark.parametrize("denoise", DENOISE)
def test_the_shared_path_equals_the_generic_path(finetuned_mlp, inner, debias, denoise):
    task, run = finetuned_mlp
    shared = _fit(task, run, inner=inner, debias=debias, denoise=denoise, ema_decay=0.3)
    generic = _fit(task, run, inner=inner, debias=debias, denoise=denoise, ema_decay=0.3, batch_members=False)
    # the shared path fitted no inner attributor; the generic one fitted one per parameter set
    assert shared.stack_ is not None and shared.members_ == [] and shared.base_member_ is None
    assert generic.stack_ is None and len(generic.members_) == (3 if denoise is not None else 1)
    assert (generic.base_member_ is not None) == debias
    assert shared.cost_["members"] == generic.cost_["members"]
    got, want = shared.attribute(task.test_data).double(), generic.attribute(task.test_data).double()
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    raw_shared, scale_shared = shared.checkpoint_scores(task.test_data)
    raw_generic, scale_generic = generic.checkpoint_scores(task.test_data)
    torch.testing.assert_close(raw_shared, raw_generic, rtol=1e-5, atol=1e-5 * float(raw_generic.abs().max()))
    torch.testing.assert_close(scale_shared, scale_generic, rtol=1e-5, atol=0.0)


def test_the_shared_path_builds_no_model_per_checkpoint(finetuned_mlp, monkeypatch):
    """Its point is shared work: the parameter sets are stacked from the checkpoints, no model is copied for each."""
    task, run = finetuned_mlp
    copies: list[object] = []
    original = DDA._checkpoint_model
    monkeypatch.setattr(DDA, "_checkpoint_model", lambda self, *a, **kw: copies.append(a[0]) or original(self, *a, **kw))
    shared = _fit(task, run, inner="grad_dot")
    assert shared.stack_ is not None and copies == []
    _fit(task, run, inner="grad_dot", batch_members=False)
    assert len(copies) == 4  # the generic path: the base and three fine-tuning checkpoints


def test_other_inner_attributors_keep_the_generic_path(finetuned_mlp):
    task, run = finetuned_mlp
    assert _fit(task, run, inner="similarity").stack_ is None
    assert _fit(task, run, inner="grad_dot", inner_params={"params": "linear"}).stack_ is None
    assert _fit(task, run, inner="grad_dot", inner_params={"factorized": False}).stack_ is None


def test_dda_on_a_language_model_fine_tune_debiases_against_the_base_model():
    """On the LM fine-tune (base facts, then the queried facts): finite [n_test, n_train] scores with the base taken from
    the task, equal to the hand combination of grad_dot at each checkpoint minus grad_dot at the base model."""
    from tdaeval.task import TrainRecipe
    from tdaeval.tasks import FineTuneTask
    from tdaeval.training import train_model

    task = FineTuneTask.language(n_entities=40, n_relations=4, n_facts=30, n_test=6, d_model=16,
                                 base_recipe=TrainRecipe(epochs=3, batch_size=32, lr=0.2),
                                 recipe=TrainRecipe(epochs=2, batch_size=16, lr=0.2))
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)
    dda = get("dda", inner="grad_dot", inner_params={"params": "linear"}).fit(task, run.model, task.train_data,
                                                                             checkpoints=run.checkpoints)
    scores = dda.attribute(task.test_data).double()
    assert scores.shape == (task.n_test, task.n_train) and torch.isfinite(scores).all()
    assert dda.base_source_ == "FineTuneTask base model"

    def grad_dot_at(model):
        return get("grad_dot", params="linear").fit(task, model, task.train_data).attribute(task.test_data).double()

    base = grad_dot_at(task.base_model())
    expected = sum(grad_dot_at(dda._checkpoint_model(k, c)) - base for k, c in enumerate(run.checkpoints)) / len(run.checkpoints)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


# --- debias_side="query": only the query gradient at the base --------------------------------------------------------
def _hand_gradients(task, model, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``([n_test, P] ∇(∓measurement)(q; θ), [n_train, P] ∇loss(z_i; θ))`` in float64, literal per-example gradients by torch.func."""
    sign = -1.0 if task.higher_is_better else 1.0
    params = {k: v.detach().double() for k, v in params.items()}
    model = model.double()

    def per_example(objective, data):
        def one(p, x, y):
            return objective(functional_call(model, p, (x[None],)), y[None]).sum()

        grads = vmap(grad(one), in_dims=(None, 0, 0))(params, data.inputs.double(), data.targets)
        return torch.cat([grads[k].reshape(len(data), -1) for k in params], dim=1)

    return per_example(lambda out, y: sign * task.measurement(out, y), task.test_data), per_example(task.loss, task.train_data)


def _cosines(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return (left @ right.T) / left.norm(dim=1)[:, None] / right.norm(dim=1)[None, :]


@pytest.mark.parametrize("batch_members", [True, False])
@pytest.mark.parametrize("denoise", ["mean", None])
def test_query_side_equals_the_hand_formula_on_logistic_regression(finetuned, denoise, batch_members):
    """grad_dot: S_e((g_q(θ_e) − g_q(θ_0)) · g_i(θ_e)); grad_cos: S_e(cos(g_q(θ_e), g_i(θ_e)) − cos(g_q(θ_0), g_i(θ_e)))."""
    import copy

    task, run = finetuned
    grads = [_hand_gradients(task, copy.deepcopy(run.model), c.params) for c in run.checkpoints]  # epochs 0 (the base), 1, 2, 3
    (q_base, _), finetuned_grads = grads[0], grads[1:] if denoise is not None else grads[-1:]
    expected = {
        "grad_dot": torch.stack([(q - q_base) @ g.T for q, g in finetuned_grads]).mean(0),
        "grad_cos": torch.stack([_cosines(q, g) - _cosines(q_base, g) for q, g in finetuned_grads]).mean(0),
    }
    for inner, want in expected.items():
        dda = _fit(task, run, inner=inner, debias_side="query", denoise=denoise, batch_members=batch_members)
        assert (dda.stack_ is not None) == batch_members
        got = dda.attribute(task.test_data).double()
        assert want.abs().max() > 1e-3  # not trivially zero
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
        # the variant matters: debiasing both sides (the default) gives other scores
        both = _fit(task, run, inner=inner, denoise=denoise, batch_members=batch_members).attribute(task.test_data).double()
        assert (both - want).abs().max() > 1e-2 * want.abs().max()


@pytest.mark.parametrize("inner", ["grad_dot", "grad_cos"])
@pytest.mark.parametrize("denoise", ["mean", "zscore_mean", None])
def test_query_side_shared_path_equals_generic_path(finetuned_mlp, inner, denoise):
    task, run = finetuned_mlp
    shared = _fit(task, run, inner=inner, debias_side="query", denoise=denoise)
    generic = _fit(task, run, inner=inner, debias_side="query", denoise=denoise, batch_members=False)
    assert shared.stack_ is not None and generic.stack_ is None and generic.base_member_ is not None
    raw_shared, scale_shared = shared.checkpoint_scores(task.test_data)
    raw_generic, scale_generic = generic.checkpoint_scores(task.test_data)
    assert raw_generic.shape == (3 if denoise is not None else 1, task.n_test, task.n_train) and raw_generic.abs().max() > 0
    torch.testing.assert_close(raw_shared, raw_generic, rtol=1e-5, atol=1e-5 * float(raw_generic.abs().max()))
    torch.testing.assert_close(scale_shared, scale_generic, rtol=1e-5, atol=0.0)
    got, want = shared.attribute(task.test_data).double(), generic.attribute(task.test_data).double()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_debias_side_defaults_to_both(finetuned):
    task, run = finetuned
    assert DDA().debias_side == "both"
    assert torch.equal(_fit(task, run).attribute(task.test_data), _fit(task, run, debias_side="both").attribute(task.test_data))


@pytest.mark.parametrize("batch_members", [True, False])
@pytest.mark.parametrize("inner", ["grad_dot", "grad_cos"])
@pytest.mark.parametrize("denoise", DENOISE)
def test_query_side_scores_are_zero_when_nothing_was_fine_tuned(finetuned, inner, denoise, batch_members):
    task, run = finetuned
    base = run.checkpoints[0].params
    unchanged = [Checkpoint(e, 0.1 if e else 0.0, {k: v.clone() for k, v in base.items()}) for e in range(4)]
    params = {"inner": inner, "debias_side": "query", "denoise": denoise, "batch_members": batch_members}
    scores = _fit(task, run, checkpoints=unchanged, **params).attribute(task.test_data)
    real = _fit(task, run, **params).attribute(task.test_data)
    assert real.abs().max() > 0  # the oracle can fail
    torch.testing.assert_close(scores, torch.zeros_like(scores), rtol=0.0, atol=1e-6 * float(real.abs().max()))


@pytest.mark.parametrize("inner,inner_params", [("similarity", {}), ("influence", {"solver": "ekfac", "params": "linear"}), ("trak", {})])
def test_query_side_for_another_inner_is_a_one_line_config_error(inner, inner_params):
    with pytest.raises(ConfigError, match=f"'debias_side' parameter of DDA.*{inner}") as info:
        DDA(inner=inner, inner_params=inner_params, debias_side="query")
    assert "\n" not in str(info.value)
    DDA(inner=inner, inner_params=inner_params, debias=False, debias_side="query")  # ignored without debias
    with pytest.raises(ConfigError, match="'debias_side' parameter of DDA") as info:
        DDA(debias_side="train")
    assert "\n" not in str(info.value)
