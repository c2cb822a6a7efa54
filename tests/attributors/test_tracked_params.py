"""``params=`` (tracked parameters) of the gradient attributors, influence (every solver), TRAK and Source.

References are computed by hand over the tracked parameters only: literal autograd loops for gradients, a Hessian
built row by row with double backward, the dense EK-FAC matrix functions (scipy's ``expm``) for Source.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from tdaeval.attributors import get
from tdaeval.attributors._tracked import linear_parameter_names, resolve_tracked
from tdaeval.attributors.ekfac import apply_ekfac_spectral, fit_ekfac
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.training import train_model

from .test_sequences import IGNORE, SeqTask, badness, loop_grads

GRADIENT = ["grad_dot", "grad_cos", "tracin"]


@pytest.fixture(scope="module")
def seq_run():
    task = SeqTask()
    return task, train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)


@pytest.fixture(scope="module")
def digits_run():
    from tdaeval.task import TrainRecipe
    from tdaeval.tasks import DigitsTask

    task = DigitsTask(n_train=80, n_test=6, hidden=6, recipe=TrainRecipe(epochs=3, batch_size=16))
    return task, train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)


def _hessian(model: nn.Module, task, data: Data, names: list[str]) -> torch.Tensor:
    """``[P, P]`` Hessian of the mean training loss w.r.t. the parameters ``names``, row by row (double backward), float64."""
    model = copy.deepcopy(model).double().eval()
    named = dict(model.named_parameters())
    tensors = [named[k] for k in names]
    value = task.loss(model(data.inputs), data.targets).mean()
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, tensors, create_graph=True)])
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(g, tensors, retain_graph=True)]) for g in grad]
    return torch.stack(rows)


# --- "all" is today's behaviour --------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::tdaeval.errors.ConvergenceWarning")
@pytest.mark.parametrize(
    "name,kwargs",
    [("grad_dot", {}), ("grad_cos", {}), ("tracin", {}), ("influence", {"solver": "cg", "damping": 0.1, "max_iter": 10}),
     ("trak", {"projection_dim": 16}),
     ("fast_source", {"n_segments": 2})],
)
def test_all_and_every_name_give_the_default_scores_bit_for_bit(digits_run, name, kwargs):
    task, run = digits_run
    fit = dict(checkpoints=run.checkpoints)
    default = get(name, **kwargs).fit(task, run.model, task.train_data, **fit).attribute(task.test_data)
    every = [n for n, _ in run.model.named_parameters()]
    for params in ("all", every, ["0", "3", "6"], "linear"):  # the digits MLP is all nn.Linear: each selects everything
        scores = get(name, params=params, **kwargs).fit(task, run.model, task.train_data, **fit).attribute(task.test_data)
        assert torch.equal(scores, default), params
    assert get(name, **kwargs).get_params()["params"] == "all"
    assert get(name, params=["6"], **kwargs).get_params()["params"] == "['6']"


# --- gradients over a subset -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("params", [["6"], ["6.weight", "0.bias"]])
def test_gradient_attributors_on_a_digits_subset_equal_a_loop(digits_run, name, params):
    """A whole layer factorises; a partly tracked layer falls back to vmap(grad); both equal the literal loop."""
    task, run = digits_run
    names = resolve_tracked(run.model, params, "test")
    attributor = get(name, params=params).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    held = attributor.train_grads_[0] if name == "tracin" else attributor.train_grads_
    assert (held.factors is not None) == (params == ["6"])
    points = [(1.0, None)] if name != "tracin" else [(c.lr, c.params) for c in run.checkpoints]
    expected = 0
    for lr, at in points:
        g_test = loop_grads(run.model, badness(task), task.test_data, names, at)
        g_train = loop_grads(run.model, task.loss, task.train_data, names, at)
        if name == "grad_cos":
            g_test, g_train = g_test / g_test.norm(dim=1, keepdim=True), g_train / g_train.norm(dim=1, keepdim=True)
        expected = expected + lr * g_test @ g_train.T
    torch.testing.assert_close(attributor.attribute(task.test_data).double(), expected, atol=1e-6, rtol=1e-4)


def test_partly_tracked_layer_cannot_be_forced_to_factorise(digits_run):
    task, run = digits_run
    with pytest.raises(AttributorError, match=r"layer '6' is only partly tracked"):
        get("grad_dot", params=["6.weight"], factorized=True).fit(task, run.model, task.train_data)


@pytest.mark.parametrize("params", [["embed", "ln1", "head.weight"], ["pos.weight", "fc"]])
def test_grad_dot_on_sequences_with_embeddings_tracked_equals_a_loop(seq_run, params):
    task, run = seq_run
    names = resolve_tracked(run.model, params, "test")
    scores = get("grad_dot", params=params).fit(task, run.model, task.train_data).attribute(task.test_data)
    expected = loop_grads(run.model, badness(task), task.test_data, names) @ loop_grads(run.model, task.loss, task.train_data, names).T
    torch.testing.assert_close(scores.double(), expected, atol=1e-6, rtol=1e-4)


# --- influence ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def influence_reference(seq_run):
    """Scores (1/n) g_test (H_sub + λI)⁻¹ g_trainᵀ over params=['ln2', 'head'] with λ = 0.1, by hand."""
    task, run = seq_run
    params = ["ln2", "head"]
    names = resolve_tracked(run.model, params, "test")
    assert names == ["ln2.weight", "ln2.bias", "head.weight"]
    h = _hessian(run.model, task, task.train_data, names)
    g_test = loop_grads(run.model, badness(task), task.test_data, names)
    g_train = loop_grads(run.model, task.loss, task.train_data, names)
    solved = torch.linalg.solve(h + 0.1 * torch.eye(h.shape[0], dtype=h.dtype), g_test.T).T
    return params, solved @ g_train.T / task.n_train


@pytest.mark.parametrize(
    "solver,kwargs,rtol",
    [
        ("explicit", {}, 1e-4),
        pytest.param("cg", {"tol": 1e-9, "max_iter": 300}, 1e-4, marks=pytest.mark.slow),
        pytest.param("arnoldi", {"arnoldi_iter": 120, "arnoldi_rank": 104}, 1e-3, marks=pytest.mark.slow),
    ],
)
def test_influence_over_a_subset_equals_the_restricted_hessian_by_hand(seq_run, influence_reference, solver, kwargs, rtol):
    task, run = seq_run
    params, expected = influence_reference
    attributor = get("influence", solver=solver, damping=0.1, params=params, **kwargs).fit(task, run.model, task.train_data)
    assert attributor.flat_.n_params == 104 and attributor.get_params()["params"] == repr(params)
    scores = attributor.attribute(task.test_data).double()
    torch.testing.assert_close(scores, expected, atol=rtol * expected.abs().max(), rtol=rtol)


@pytest.mark.slow
def test_lissa_over_a_subset_approaches_the_reference(seq_run, influence_reference):
    task, run = seq_run
    params, expected = influence_reference
    scores = get("influence", solver="lissa", damping=0.1, params=params, lissa_depth=150, lissa_batch_size=24).fit(
        task, run.model, task.train_data).attribute(task.test_data).double()
    assert float(torch.corrcoef(torch.stack([scores.flatten(), expected.flatten()]))[0, 1]) > 0.99


@pytest.mark.parametrize("solver", ["ekfac", "astra"])
def test_ekfac_and_astra_run_on_sequences_with_linear_params_and_say_why_not_otherwise(seq_run, solver):
    task, run = seq_run
    with pytest.raises(AttributorError, match=r"embed.weight.*params='linear'"):
        get("influence", solver=solver).fit(task, run.model, task.train_data)
    attributor = get("influence", solver=solver, params="linear", astra_iter=3).fit(task, run.model, task.train_data)
    scores = attributor.attribute(task.test_data)
    assert scores.shape == (task.n_test, task.n_train) and bool(torch.isfinite(scores).all())
    assert attributor.ekfac_.n_params == sum(p.numel() for n, p in run.model.named_parameters() if n in linear_parameter_names(run.model))


def test_ekfac_eigenvalues_on_sequences_are_per_example_gradient_moments(seq_run):
    """Λ = diag((Q_S ⊗ Q_A)ᵀ E_i[vec G_i vec G_iᵀ] (Q_S ⊗ Q_A)) with G_i the whole sequence's gradient (a literal loop)."""
    task, run = seq_run
    names = linear_parameter_names(run.model)
    factors = fit_ekfac(task, run.model, task.train_data, sampled=False, tracked=names, chunk_size=7)
    assert [layer.weight for layer in factors.layers] == ["qkv.weight", "proj.weight", "fc.weight", "out.weight", "head.weight"]
    assert list(factors.offsets) == names
    grads = loop_grads(run.model, task.loss, task.train_data, names)
    for layer in factors.layers:
        start, shape = factors.offsets[layer.weight]
        g = grads[:, start : start + shape.numel()].reshape(-1, shape[0], shape[1])
        if layer.bias is not None:
            b_start, _ = factors.offsets[layer.bias]
            g = torch.cat([g, grads[:, b_start : b_start + shape[0]].unsqueeze(2)], 2)
        moments = (layer.q_out.T @ g @ layer.q_in) ** 2
        torch.testing.assert_close(layer.eigenvalues, moments.mean(0), atol=1e-10, rtol=1e-5)


def test_ekfac_over_one_layer_is_that_block_of_the_full_ekfac(digits_run):
    """EK-FAC is block-diagonal by layer: tracking only layer '6' gives the full inverse's block of that layer."""
    task, run = digits_run
    full = get("influence", solver="ekfac").fit(task, run.model, task.train_data)
    part = get("influence", solver="ekfac", params=["6"]).fit(task, run.model, task.train_data)
    start = full.ekfac_.offsets["6.weight"][0]
    size = part.ekfac_.n_params
    v = torch.randn(3, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    padded = torch.zeros(3, full.ekfac_.n_params, dtype=torch.float64)
    padded[:, start : start + size] = v
    torch.testing.assert_close(part.inverse_hvp(v), full.inverse_hvp(padded)[:, start : start + size], atol=1e-10, rtol=1e-8)


class _OnesTask(SeqTask):
    """Samples token 1 at every position (so sampled targets are known in advance)."""

    def sample_targets(self, outputs, generator):
        return torch.ones(outputs.shape[:2], dtype=torch.long)


def test_sampled_fisher_on_sequences_samples_only_where_the_loss_reads(seq_run):
    """Sampling fills the non-ignored positions only: it equals the empirical Fisher of targets set to 1 there."""
    task, run = seq_run
    ones = _OnesTask()
    sampled = fit_ekfac(ones, run.model, ones.train_data, sampled=True, tracked=linear_parameter_names(run.model))
    relabelled = SeqTask()
    y = relabelled.train_data.targets
    relabelled.train_data = Data(relabelled.train_data.inputs, torch.where(y != IGNORE, torch.ones_like(y), y))
    observed = fit_ekfac(relabelled, run.model, relabelled.train_data, sampled=False, tracked=linear_parameter_names(run.model))
    for a, b in zip(sampled.layers, observed.layers):
        torch.testing.assert_close(a.eigenvalues, b.eigenvalues, atol=1e-12, rtol=1e-9)


# --- TRAK ----------------------------------------------------------------------------------------------------------


def test_trak_over_a_subset_equals_the_formula_by_hand(seq_run):
    """score = φ_test (ΦᵀΦ + λI)⁻¹ Φᵀ with φ the measurement gradients of the tracked parameters (Q = 1 for log-odds)."""
    task, run = seq_run
    names = resolve_tracked(run.model, ["head"], "test")
    trak = get("trak", projection_dim=None, damping=0.01, params=["head"]).fit(task, run.model, task.train_data)
    phi = loop_grads(run.model, task.measurement, task.train_data, names)
    phi_test = loop_grads(run.model, task.measurement, task.test_data, names)
    expected = phi_test @ torch.linalg.solve(phi.T @ phi + 0.01 * torch.eye(phi.shape[1], dtype=phi.dtype), phi.T)
    torch.testing.assert_close(trak.attribute(task.test_data).double(), expected, atol=1e-4 * expected.abs().max(), rtol=1e-3)


# --- Source ----------------------------------------------------------------------------------------------------------


def _phi_dense(h: np.ndarray, c: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(h)
    tiny = np.abs(values) * c < 1e-12
    safe = np.where(tiny, 1.0, values)
    return vectors @ np.diag(np.where(tiny, c, -np.expm1(-c * safe) / safe)) @ vectors.T


@pytest.mark.parametrize("name", ["source", pytest.param("fast_source", marks=pytest.mark.slow)])
def test_source_with_linear_params_on_sequences_equals_the_dense_formula(seq_run, name):
    """τ = (1/N) gᵀ Σ_ℓ [Π_{ℓ'>ℓ} expm(−c_ℓ' H_ℓ')] φ_ℓ(H_ℓ) ḡ_ℓ over the nn.Linear parameters, frozen ones at each checkpoint."""
    task, run = seq_run
    with pytest.raises(AttributorError, match=r"'source'.*params='linear'"):
        get("source", n_segments=2).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    source = get(name, n_segments=2, params="linear").fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    scores = source.attribute(task.test_data).double().numpy()
    names = linear_parameter_names(run.model)
    g = loop_grads(run.model, badness(task), task.test_data, names).numpy()
    dense = []
    for segment in source.segments_:
        eye = torch.eye(segment.factors.n_params, dtype=torch.float64)
        dense.append(apply_ekfac_spectral(segment.factors, eye, lambda lam, _layer: lam).numpy())
    expected = np.zeros_like(scores)
    for index, segment in enumerate(source.segments_):
        operator = _phi_dense(dense[index], segment.scale)
        for later, seg_later in zip(dense[index + 1 :], source.segments_[index + 1 :]):
            operator = scipy.linalg.expm(-seg_later.scale * later) @ operator
        mean_grad = np.mean([loop_grads(run.model, task.loss, task.train_data, names, p).numpy() for p in segment.params], axis=0)
        expected += g @ operator @ mean_grad.T / task.n_train
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["grad_dot", "tracin", "influence", "trak", "source"])
def test_an_unknown_name_is_an_error_naming_it_and_the_valid_ones(seq_run, name):
    task, run = seq_run
    with pytest.raises(AttributorError, match=r"params entry 'blocks\.0' is neither.*'embed\.weight'.*'head\.weight'"):
        get(name, params=["head", "blocks.0"]).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)


@pytest.mark.parametrize("value", ["lin", [], [3], "linear ", None])
def test_a_malformed_params_value_is_a_config_error(value):
    with pytest.raises(ConfigError, match="'params' parameter of GradDot"):
        get("grad_dot", params=value)


def test_prefixes_match_whole_module_names_and_linear_needs_a_layer():
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 3), nn.LayerNorm(3))
    assert resolve_tracked(model, ["1"], "x") == ["1.weight", "1.bias"]
    assert resolve_tracked(model, "linear", "x") == ["1.weight", "1.bias"]
    assert resolve_tracked(model, ["0", "1", "2.weight", "2.bias"], "x") is None  # everything: the untracked code path
    deep = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])
    assert resolve_tracked(deep, ["1"], "x") == ["1.weight", "1.bias"]  # not '10.*' nor '11.*'
    with pytest.raises(AttributorError, match="params='linear' but the model has no nn.Linear"):
        resolve_tracked(nn.Sequential(nn.Embedding(5, 3), nn.LayerNorm(3)), "linear", "Attributor 'x'")
