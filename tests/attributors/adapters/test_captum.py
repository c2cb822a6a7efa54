"""The captum adapters against our built-in estimators on the same model, checkpoints and data."""

from __future__ import annotations

import copy
import dataclasses
import os
import sys

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tdaeval.attributors import get
from tdaeval.attributors.adapters import MissingExtraError
from tdaeval.attributors.gradient import per_sample_grads
from tdaeval.attributors.representation import last_linear
from tdaeval.errors import ConfigError
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask, LinearRegressionTask
from tdaeval.training import train_model

pytest.importorskip("captum.influence")

from tdaeval.attributors.adapters.captum import CaptumArnoldiInfluence, CaptumNaiveInfluence  # noqa: E402

# captum 0.7 has neither influence-function class (tdaeval requires captum >= 0.7).
needs_influence = pytest.mark.skipif(
    not (CaptumArnoldiInfluence.available() and CaptumNaiveInfluence.available()),
    reason="captum < 0.8: no NaiveInfluenceFunction / ArnoldiInfluenceFunction",
)


@pytest.fixture(scope="module")
def mlp_run():
    """Digits MLP (as conftest's small_digits) with 3 checkpoints of distinct learning rates."""
    task = DigitsTask(n_train=200, n_test=20, hidden=16, recipe=TrainRecipe(epochs=3, batch_size=32))
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=3)
    # Distinct weights, so that a wrong (or missing) learning-rate weighting shows.
    checkpoints = [dataclasses.replace(c, lr=lr) for c, lr in zip(run.checkpoints, (0.5, 0.05, 0.2))]
    return task, run.model, checkpoints


@pytest.fixture(scope="module")
def logreg_run():
    task = DigitsTask(model="logreg", n_train=200, n_test=20, recipe=TrainRecipe(epochs=3, batch_size=32))
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)
    return task, run.model, run.checkpoints


@pytest.fixture(scope="module")
def linear_run():
    """Linear regression in float64 (as conftest's linear_task), trained exactly."""
    task = LinearRegressionTask(n_train=40, n_test=10, n_features=4)
    return task, task.train(task.build_model(0), torch.arange(task.n_train), 0)


def _scores(name, task, model, checkpoints=None, **params):
    attributor = get(name, **params).fit(task, model, task.train_data, checkpoints=checkpoints)
    return attributor.attribute(task.test_data)


def _row_spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.array([spearmanr(x, y).statistic for x, y in zip(a.double().numpy(), b.double().numpy())])


# ---- TracIn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_wise", [True, False], ids=["batch-trick", "per-example"])
def test_tracin_cp_equals_builtin_tracin(mlp_run, sample_wise):
    task, model, checkpoints = mlp_run
    ours = _scores("tracin", task, model, checkpoints)
    theirs = _scores("captum.tracin_cp", task, model, checkpoints, sample_wise_grads_per_batch=sample_wise)
    scale = ours.abs().max().item()
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4 * scale)
    # The learning-rate weighting matters here: equal weights would give other scores.
    unweighted = _scores("tracin", task, model, [dataclasses.replace(c, lr=1.0) for c in checkpoints])
    assert (unweighted / unweighted.abs().max() - ours / scale).abs().max() > 1e-2


def test_tracin_cp_without_checkpoints_uses_the_final_model_with_weight_one(mlp_run):
    task, model, _ = mlp_run
    theirs = _scores("captum.tracin_cp", task, model, None)
    ours = _scores("grad_dot", task, model)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4 * ours.abs().max().item())


def _output_layer_tracin(task, model, checkpoints, names):
    """``Σ_c η_c ∇ℓ_c · ∇L_c`` with gradients taken only with respect to the parameters ``names``."""
    sign = -1.0 if task.higher_is_better else 1.0
    reference = torch.zeros(task.n_test, task.n_train)
    for checkpoint in checkpoints:
        at = copy.deepcopy(model).eval()
        at.load_state_dict(checkpoint.params, strict=False)
        params = {k: v for k, v in at.named_parameters() if k in names}
        test_grads = per_sample_grads(at, lambda o, y: sign * task.measurement(o, y), task.test_data, params=params)
        train_grads = per_sample_grads(at, task.loss, task.train_data, params=params)
        reference += checkpoint.lr * test_grads @ train_grads.T
    return reference


def test_tracin_cp_fast_equals_tracin_on_the_output_weight(mlp_run):
    task, model, checkpoints = mlp_run
    theirs = _scores("captum.tracin_cp_fast", task, model, checkpoints)
    name, _ = last_linear(model)
    reference = _output_layer_tracin(task, model, checkpoints, {f"{name}.weight"})  # captum leaves out the bias
    torch.testing.assert_close(theirs, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


def test_tracin_cp_restricted_to_a_layer(mlp_run):
    task, model, checkpoints = mlp_run
    name, _ = last_linear(model)
    theirs = _scores("captum.tracin_cp", task, model, checkpoints, layers=[name])
    reference = _output_layer_tracin(task, model, checkpoints, {f"{name}.weight", f"{name}.bias"})
    torch.testing.assert_close(theirs, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


def test_tracin_cp_uses_per_example_gradients_for_other_modules(linear_run):
    """A LayerNorm is outside captum's per-sample trick: the adapter falls back to one backward pass per example."""
    task, model = linear_run
    with_norm = torch.nn.Sequential(torch.nn.LayerNorm(4, dtype=torch.float64), copy.deepcopy(model)).eval()
    attributor = get("captum.tracin_cp").fit(task, with_norm, task.train_data)
    assert attributor.captum_.sample_wise_grads_per_batch is False
    ours = _scores("grad_dot", task, with_norm)
    torch.testing.assert_close(attributor.attribute(task.test_data), ours, rtol=1e-4, atol=1e-4 * ours.abs().max().item())


def test_tracin_adapters_leave_the_model_alone(mlp_run):
    task, model, checkpoints = mlp_run
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("captum.tracin_cp", "captum.tracin_cp_fast"):
        _scores(name, task, model, checkpoints)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- influence functions --------------------------------------------------------------------


@needs_influence
@pytest.mark.parametrize("case,damping,tol", [("logreg", 0.01, 1e-3), ("linear", 0.1, 1e-6)])
def test_naive_influence_equals_explicit_influence(logreg_run, linear_run, case, damping, tol):
    """Same formula: captum's ∇ℓᵀ(nH + hessian_reg·I)⁻¹∇L with hessian_reg = nλ is our (1/n)∇ℓᵀ(H + λI)⁻¹∇L."""
    if case == "logreg":  # measured: max error 5e-5 x scale (float32 Hessian, captum's general eig)
        task, model, _ = logreg_run
    else:  # float64, lower is better: the other sign branch (measured: 1e-7 x scale, float32 output)
        task, model = linear_run
    ours = _scores("influence", task, model, solver="explicit", damping=damping)
    theirs = _scores("captum.naive_influence", task, model, damping=damping)
    scale = ours.abs().max().item()
    torch.testing.assert_close(theirs, ours, rtol=0, atol=tol * scale)


@needs_influence
@pytest.mark.parametrize("k", [2, 4, None])
def test_naive_influence_equals_the_closed_form_with_top_eigenpairs(linear_run, k):
    """Linear regression: ∇L_i = r_i x̃_i, ∇ℓ(z) = sign(r) x̃ (absolute error, lower is better), n·H = Σ x̃ x̃ᵀ
    (x̃ = [x, 1]); captum keeps the ``projection_dim`` top eigenpairs of nH + nλI."""
    task, model = linear_run
    damping = 0.1
    theirs = _scores("captum.naive_influence", task, model, damping=damping, projection_dim=k)

    def design(data):
        x = torch.cat([data.inputs, torch.ones(len(data), 1, dtype=data.inputs.dtype)], dim=1)
        with torch.no_grad():
            residual = model(data.inputs).squeeze(-1) - data.targets
        return x, residual

    x_train, r_train = design(task.train_data)
    x_test, r_test = design(task.test_data)
    test_grads, train_grads = torch.sign(r_test)[:, None] * x_test, r_train[:, None] * x_train
    regularised = x_train.T @ x_train + len(x_train) * damping * torch.eye(x_train.shape[1], dtype=x_train.dtype)
    values, vectors = torch.linalg.eigh(regularised)
    if k is not None:
        values, vectors = values[-k:], vectors[:, -k:]
    reference = test_grads @ vectors @ torch.diag(1 / values) @ vectors.T @ train_grads.T
    torch.testing.assert_close(theirs, reference.float(), rtol=0, atol=1e-6 * reference.abs().max().item())
    if k is not None:  # the truncation matters
        full = test_grads @ torch.linalg.inv(regularised) @ train_grads.T
        assert (reference - full).abs().max() > 1e-3 * full.abs().max()


@needs_influence
def test_arnoldi_matches_builtin_arnoldi_and_ranks_like_explicit(logreg_run):
    task, model, _ = logreg_run
    theirs = _scores("captum.arnoldi", task, model, damping=0.1, projection_dim=10, arnoldi_dim=40)
    ours = _scores("influence", task, model, solver="arnoldi", damping=0.1, arnoldi_iter=40, arnoldi_rank=10)
    explicit = _scores("influence", task, model, solver="explicit", damping=0.1)
    # Both keep the top 10 eigenpairs of the same Hessian (measured: min Spearman 0.999998, max error 3e-6 x scale).
    assert _row_spearman(theirs, ours).min() > 0.999
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-3 * ours.abs().max().item())
    # Against the full inverse (measured: mean 0.82, min 0.71; our own Arnoldi: the same).
    rho = _row_spearman(theirs, explicit)
    assert rho.mean() > 0.75 and rho.min() > 0.6


@needs_influence
def test_arnoldi_is_seeded_and_leaves_the_global_rng_alone(logreg_run):
    task, model, _ = logreg_run
    params = dict(damping=0.1, projection_dim=10, arnoldi_dim=20)
    state = torch.random.get_rng_state()
    a = _scores("captum.arnoldi", task, model, seed=1, **params)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = _scores("captum.arnoldi", task, model, seed=1, **params)
    c = _scores("captum.arnoldi", task, model, seed=2, **params)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- similarity -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["mlp", "linear"])
def test_similarity_equals_builtin_similarity(mlp_run, linear_run, case):
    if case == "mlp":
        task, model, _ = mlp_run
    else:  # the model is a bare nn.Linear: the embedding is the input itself
        task, model = linear_run
    ours = _scores("similarity", task, model)
    theirs = _scores("captum.similarity", task, model, batch_size=64)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_similarity_of_an_inner_layer(mlp_run):
    task, model, _ = mlp_run
    torch.testing.assert_close(
        _scores("captum.similarity", task, model, layer="3"), _scores("similarity", task, model, layer="3"), rtol=1e-5, atol=1e-5
    )


# ---- plumbing -------------------------------------------------------------------------------


def test_missing_captum_is_a_missing_extra_error(monkeypatch, logreg_run):
    task, model, _ = logreg_run
    monkeypatch.setitem(sys.modules, "captum", None)
    for name in ("captum.tracin_cp", "captum.tracin_cp_fast", "captum.arnoldi", "captum.naive_influence", "captum.similarity"):
        with pytest.raises(MissingExtraError, match=r"tdaeval\[captum\]") as err:
            get(name).fit(task, model, task.train_data)
        assert name in str(err.value)


def test_a_captum_without_the_influence_classes_is_a_missing_extra_error(monkeypatch, logreg_run):
    task, model, _ = logreg_run
    monkeypatch.setattr(CaptumArnoldiInfluence, "captum_module", "captum.influence._core.no_such_module")
    monkeypatch.setattr(CaptumNaiveInfluence, "captum_class", "NoSuchClass")
    assert not CaptumArnoldiInfluence.available() and not CaptumNaiveInfluence.available()
    for name in ("captum.arnoldi", "captum.naive_influence"):
        with pytest.raises(MissingExtraError, match=r"needs captum >= 0\.8.*pip install -U 'tdaeval\[captum\]'"):
            get(name).fit(task, model, task.train_data)


def test_checkpoint_files_live_in_a_temporary_directory_that_is_removed(mlp_run):
    task, model, checkpoints = mlp_run
    attributor = get("captum.tracin_cp").fit(task, model, task.train_data, checkpoints=checkpoints)
    first = attributor._tmpdir.name
    assert sorted(os.listdir(first)) == [f"checkpoint-{k:05d}.pt" for k in range(len(checkpoints))]
    attributor.fit(task, model, task.train_data, checkpoints=checkpoints)
    assert not os.path.exists(first) and os.path.isdir(attributor._tmpdir.name)
    second = attributor._tmpdir.name
    attributor.cleanup()
    assert not os.path.exists(second)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("captum.tracin_cp", {"batch_size": 0}, "'batch_size' parameter of CaptumTracInCP"),
        ("captum.tracin_cp", {"layers": "0"}, "'layers' parameter of CaptumTracInCP"),
        ("captum.naive_influence", {"damping": -1.0}, "'damping' parameter of CaptumNaiveInfluence"),
        ("captum.arnoldi", {"projection_dim": 0}, "'projection_dim' parameter of CaptumArnoldiInfluence"),
        ("captum.arnoldi", {"arnoldi_tol": 0.0}, "'arnoldi_tol' parameter of CaptumArnoldiInfluence"),
        ("captum.arnoldi", {"layers": ["0"], "last_layer_only": True}, "either the 'layers' or the 'last_layer_only'"),
    ],
)
def test_bad_parameters_are_clear(name, params, match):
    with pytest.raises(ConfigError, match=match):
        get(name, **params)


@needs_influence
def test_bad_parameters_found_at_fit_are_clear(logreg_run):
    task, model, _ = logreg_run
    with pytest.raises(ConfigError, match="max_params=100"):
        get("captum.naive_influence", max_params=100).fit(task, model, task.train_data)
    with pytest.raises(ConfigError, match="no submodule 'nope'"):
        get("captum.arnoldi", layers=["nope"]).fit(task, model, task.train_data)


def test_the_sample_wise_trick_is_refused_where_it_would_drop_parameters(logreg_run):
    task, model, _ = logreg_run
    with_norm = torch.nn.Sequential(torch.nn.LayerNorm(64), model)
    with pytest.raises(ConfigError, match="'sample_wise_grads_per_batch' parameter of 'captum.tracin_cp'"):
        get("captum.tracin_cp", sample_wise_grads_per_batch=True).fit(task, with_norm, task.train_data)
