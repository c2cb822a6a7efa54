"""The ``kronfluence.*`` adapters against the built-in ``influence(solver="ekfac")``, ``grad_dot`` and closed forms."""

import logging
import os
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("kronfluence")

from tdaeval.attributors import get  # noqa: E402
from tdaeval.attributors.adapters import MissingExtraError, measurement_badness  # noqa: E402
from tdaeval.attributors.gradient import per_sample_grads  # noqa: E402
from tdaeval.errors import ConfigError  # noqa: E402
from tdaeval.training import train_model  # noqa: E402


def row_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row of ``a`` with the same row of ``b``."""
    ra = a.double().argsort(1).argsort(1).double()
    rb = b.double().argsort(1).argsort(1).double()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture
def mlp(small_digits):
    task = small_digits
    return task, train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model


def scores(name, task, model, test=None, **params):
    return get(name, **params).fit(task, model, task.train_data).attribute(task.test_data if test is None else test)


@pytest.mark.parametrize("damping", [None, 1e-3])
def test_ekfac_equals_builtin_ekfac_influence_with_the_empirical_fisher(mlp, damping):
    """Same curvature (observed targets), same damping: the same numbers (measured relative error 1e-6)."""
    task, model = mlp
    theirs = scores("kronfluence.ekfac", task, model, damping=damping, use_empirical_fisher=True)
    ours = scores("influence", task, model, solver="ekfac", damping=damping, ekfac_sampled=False)
    assert relative_error(theirs, ours) < 1e-4
    assert row_spearman(theirs, ours).min() > 0.999


def test_ekfac_with_sampled_targets_ranks_like_builtin(mlp):
    """True Fisher: both sample targets from the model, with different draws (measured Spearman mean 0.97, min 0.91)."""
    task, model = mlp
    theirs = scores("kronfluence.ekfac", task, model)
    ours = scores("influence", task, model, solver="ekfac")
    rho = row_spearman(theirs, ours)
    assert rho.mean() > 0.9 and rho.min() > 0.8, rho
    assert relative_error(theirs, ours) < 0.3


def test_identity_is_grad_dot_over_n(mlp):
    task, model = mlp
    theirs = scores("kronfluence.identity", task, model)
    ours = scores("grad_dot", task, model) / task.n_train
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-7)


def test_diagonal_matches_its_closed_form(mlp):
    """``(1/n) g_test · (g_train / (mean(g²) + λ))`` with per-sample gradients of the loss (observed targets)."""
    task, model = mlp
    damping = 1e-3
    theirs = scores("kronfluence.diagonal", task, model, damping=damping, use_empirical_fisher=True)
    model.eval()
    train_grads = per_sample_grads(model, task.loss, task.train_data).double()
    test_grads = per_sample_grads(model, measurement_badness(task), task.test_data).double()
    diagonal = (train_grads**2).mean(0)
    expected = test_grads @ (train_grads / (diagonal + damping)).T / task.n_train
    assert relative_error(theirs, expected) < 1e-4


def test_kfac_and_diagonal_tend_to_identity_under_large_damping(mlp):
    """``(F + λI)⁻¹ → I/λ`` as λ grows: damping reaches kronfluence for every curvature."""
    task, model = mlp
    identity = scores("kronfluence.identity", task, model)
    for name in ("kronfluence.kfac", "kronfluence.diagonal", "kronfluence.ekfac"):
        damped = scores(name, task, model, damping=1e4)
        assert relative_error(1e4 * damped, identity) < 1e-2, name
        assert relative_error(scores(name, task, model, damping=1e-3), identity) > 0.1, name


def test_higher_is_worse_measurement_keeps_our_orientation(linear_task):
    """Regression (absolute error, lower is better, float64 model) against the built-in EK-FAC influence."""
    task = linear_task
    model = task.train(task.build_model(0), torch.arange(task.n_train), 0)
    theirs = scores("kronfluence.ekfac", task, model, damping=1e-2, use_empirical_fisher=True)
    ours = scores("influence", task, model, solver="ekfac", damping=1e-2, ekfac_sampled=False)
    assert relative_error(theirs, ours) < 1e-4


def test_untracked_parameterised_module_is_refused(small_digits):
    task = small_digits
    model = nn.Sequential(nn.Linear(64, 8), nn.LayerNorm(8), nn.Linear(8, 10))
    with pytest.raises(ConfigError, match=r"'kronfluence\.ekfac'.*module '1' \(LayerNorm\)"):
        get("kronfluence.ekfac").fit(task, model, task.train_data)


def test_fresh_instances_agree_and_files_are_temporary(mlp):
    task, model = mlp
    handlers, level = list(logging.getLogger().handlers), logging.getLogger().level
    first = get("kronfluence.ekfac").fit(task, model, task.train_data)
    second = get("kronfluence.ekfac").fit(task, model, task.train_data)
    assert torch.equal(first.attribute(task.test_data), second.attribute(task.test_data))
    assert logging.getLogger().handlers == handlers and logging.getLogger().level == level
    assert model.training is False and all(p.requires_grad for p in model.parameters())  # the copy was prepared
    path = first._tmpdir.name
    assert os.path.isdir(path)
    first.cleanup()
    assert not os.path.exists(path)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("kronfluence.ekfac", {"damping": -1.0}, "'damping' parameter of KronfluenceEKFAC"),
        ("kronfluence.kfac", {"batch_size": 0}, "'batch_size' parameter of KronfluenceKFAC"),
        ("kronfluence.diagonal", {"seed": -1}, "'seed' parameter of KronfluenceDiagonal"),
        ("kronfluence.identity", {"damping": 0.1}, "Invalid parameters.*kronfluence.identity"),
    ],
)
def test_bad_parameters_are_clear(name, params, match):
    with pytest.raises(ConfigError, match=match):
        get(name, **params)


def test_missing_library_names_the_extra(monkeypatch, small_logreg):
    monkeypatch.setitem(sys.modules, "kronfluence", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tdaeval\[kronfluence\]'"):
        get("kronfluence.ekfac").fit(small_logreg, small_logreg.build_model(0), small_logreg.train_data)
