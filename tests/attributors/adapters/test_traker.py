"""The ``trak.traker`` adapter against the built-in ``trak`` on the same models."""

import logging
import os
import sys

import pytest
import torch

pytest.importorskip("trak")

from tdaeval.attributors import get  # noqa: E402
from tdaeval.attributors.adapters import MissingExtraError  # noqa: E402
from tdaeval.errors import ConfigError  # noqa: E402
from tdaeval.task import TrainRecipe  # noqa: E402
from tdaeval.tasks import DigitsTask  # noqa: E402
from tdaeval.training import train_model  # noqa: E402


def row_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (no ties in continuous scores)."""
    ra = a.double().argsort(1).argsort(1).double()
    rb = b.double().argsort(1).argsort(1).double()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def proportionality(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Least-squares ``c`` in ``a ≈ c·b`` and the relative residual ``|a - c·b| / |a|``."""
    a, b = a.double().flatten(), b.double().flatten()
    c = float(a @ b / (b @ b))
    return c, float((a - c * b).norm() / a.norm())


def trained(task, n_checkpoints=0):
    return train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=n_checkpoints)


def test_matches_builtin_trak_with_projection_at_least_the_parameter_count():
    """k = 1000 >= P = 650 and n_train = 1000 > P: both estimate the unprojected TRAK scores.

    Matched damping: traker's features are ``Rᵀg / sqrt(P)`` with unit Gaussian ``R`` ([P, k]), so its
    ``ΦᵀΦ`` is about ``k/P`` times that of the unprojected gradients, and so is its λ.
    """
    task = DigitsTask(model="logreg", n_train=1000, n_test=20, recipe=TrainRecipe(epochs=3, batch_size=32))
    model = trained(task).model
    n_params, k, damping = 650, 1000, 1e-3
    ours = get("trak", projection_dim=None, damping=damping).fit(task, model, task.train_data).attribute(task.test_data)
    adapter = get("trak.traker", proj_dim=k, lambda_reg=damping * k / n_params)
    theirs = adapter.fit(task, model, task.train_data).attribute(task.test_data)
    rho = row_spearman(theirs, ours)
    # Measured: mean 0.993, min 0.971 (projector seed 1: 0.993 / 0.958): projection noise.
    assert rho.mean() > 0.98 and rho.min() > 0.93, rho
    assert row_spearman(-theirs, ours).mean() < -0.98


def test_same_projection_gives_proportional_scores_in_our_orientation(small_logreg):
    """With k <= 100 traker's BasicProjector and our projection draw the same Gaussian matrix (seed 0).

    The scores then differ only by traker's normalisation of (ΦᵀΦ+λI)⁻¹, one positive constant.
    The test set is the training set permuted, so n_test == n_train: a transposed result keeps
    its shape but breaks the proportionality; a flipped sign makes the constant negative.
    """
    task = small_logreg
    model = trained(task).model
    perm = torch.randperm(task.n_train, generator=torch.Generator().manual_seed(0))
    test = task.train_data.subset(perm)
    ours = get("trak", projection_dim=64).fit(task, model, task.train_data).attribute(test)
    theirs = get("trak.traker", proj_dim=64).fit(task, model, task.train_data).attribute(test)
    c, residual = proportionality(theirs, ours)
    assert c > 0 and residual < 1e-3, (c, residual)
    assert proportionality(theirs.T.contiguous(), ours)[1] > 0.3  # the check above can see a transposition
    own = theirs[torch.arange(task.n_train), perm]
    assert (own > 0).float().mean() > 0.9


def test_builtin_margin_output_equals_ours(small_digits):
    """traker's ImageClassificationModelOutput (margin, Q = 1 - p) equals the one built from our measurement."""
    task = small_digits
    model = trained(task).model
    builtin = get("trak.traker", proj_dim=128, model_output="builtin").fit(task, model, task.train_data)
    measured = get("trak.traker", proj_dim=128, model_output="measurement").fit(task, model, task.train_data)
    torch.testing.assert_close(
        builtin.attribute(task.test_data), measured.attribute(task.test_data), rtol=1e-4, atol=1e-6
    )


def test_higher_is_worse_measurement_is_negated(linear_task):
    """Regression (absolute error, lower is better): same projection as ours (P = k = 5), positive constant."""
    task = linear_task
    model = task.train(task.build_model(0), torch.arange(task.n_train), 0)
    ours = get("trak", projection_dim=5).fit(task, model, task.train_data).attribute(task.test_data)
    adapter = get("trak.traker").fit(task, model, task.train_data)
    assert adapter.proj_dim_ == 5  # default min(2048, P)
    c, residual = proportionality(adapter.attribute(task.test_data), ours)
    assert c > 0 and residual < 1e-3, (c, residual)
    with pytest.raises(ConfigError, match="'model_output'.*'builtin'.*absolute_error"):
        get("trak.traker", model_output="builtin").fit(task, model, task.train_data)


def test_checkpoints_are_trak_models(small_logreg):
    task = small_logreg
    run = trained(task, n_checkpoints=2)
    final_only = get("trak.traker", proj_dim=32).fit(task, run.model, task.train_data).attribute(task.test_data)
    ignored = get("trak.traker", proj_dim=32, use_checkpoints=False).fit(
        task, run.model, task.train_data, checkpoints=run.checkpoints
    )
    torch.testing.assert_close(ignored.attribute(task.test_data), final_only)
    both = get("trak.traker", proj_dim=32).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    assert len(both.states_) == 2
    torch.testing.assert_close(both.states_[1]["0.weight"], run.checkpoints[1].params["0.weight"])
    assert not torch.equal(both.states_[0]["0.weight"], both.states_[1]["0.weight"])
    ensembled = both.attribute(task.test_data)
    assert not torch.allclose(ensembled, final_only)
    assert row_spearman(ensembled, final_only).mean() > 0.5  # an average of related estimates


def test_temp_dir_and_root_logger_are_left_clean(small_logreg):
    task = small_logreg
    handlers = list(logging.getLogger().handlers)
    adapter = get("trak.traker", proj_dim=16).fit(task, task.build_model(0), task.train_data)
    assert logging.getLogger().handlers == handlers
    path = adapter._tmpdir.name
    assert os.path.isdir(path)
    adapter.attribute(task.test_data)
    adapter.cleanup()
    assert not os.path.exists(path)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"proj_dim": 0}, "'proj_dim' parameter of TrakTRAKer"),
        ({"lambda_reg": -1.0}, "'lambda_reg' parameter of TrakTRAKer"),
        ({"model_output": "logits"}, "'model_output' parameter of TrakTRAKer"),
        ({"batch_size": 0}, "'batch_size' parameter of TrakTRAKer"),
    ],
)
def test_bad_parameters_are_clear(params, match):
    with pytest.raises(ConfigError, match=match):
        get("trak.traker", **params)


def test_missing_library_names_the_extra(monkeypatch, small_logreg):
    monkeypatch.setitem(sys.modules, "trak", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tdaeval\[trak\]'"):
        get("trak.traker").fit(small_logreg, small_logreg.build_model(0), small_logreg.train_data)
