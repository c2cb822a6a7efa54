"""The ``dattri.*`` adapters against tdaeval's built-in estimators on the same models and data."""

import sys

import pytest
import torch

pytest.importorskip("dattri")

# Importing dattri imports torch.fx's optimisation module, which uses the deprecated torch.jit.script_method.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

from tdaeval.attributors import get, names  # noqa: E402
from tdaeval.attributors.adapters import MissingExtraError  # noqa: E402
from tdaeval.errors import AttributorError, ConfigError  # noqa: E402
from tdaeval.training import Checkpoint, train_model  # noqa: E402

DATTRI_NAMES = ["dattri.grad_cos", "dattri.grad_dot", "dattri.influence", "dattri.rps", "dattri.tracin", "dattri.trak"]


def row_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (continuous scores: no ties)."""
    ra = a.double().argsort(1).argsort(1).double()
    rb = b.double().argsort(1).argsort(1).double()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def assert_close_to(theirs: torch.Tensor, ours: torch.Tensor, rel: float) -> None:
    """Element-wise ``|theirs - ours| <= rel * max|ours|`` (scores span orders of magnitude)."""
    assert theirs.shape == ours.shape
    scale = float(ours.abs().max())
    assert scale > 0
    diff = float((theirs - ours).abs().max())
    assert diff <= rel * scale, f"max abs diff {diff:.3g} > {rel:g} x max|ours| = {rel * scale:.3g}"


def trained(task, n_checkpoints=0):
    return train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=n_checkpoints)


def scores(name, task, run, test=None, **params):
    attributor = get(name, **params).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    return attributor.attribute(task.test_data if test is None else test)


def test_every_adapter_is_registered():
    assert set(DATTRI_NAMES) <= set(names())


@pytest.mark.parametrize("name", DATTRI_NAMES)
def test_missing_library_names_the_extra(monkeypatch, small_logreg, name):
    monkeypatch.setitem(sys.modules, "dattri", None)
    attributor = get(name)
    assert not type(attributor).available()
    with pytest.raises(MissingExtraError, match=r"pip install 'tdaeval\[dattri\]'") as err:
        attributor.fit(small_logreg, small_logreg.build_model(0), small_logreg.train_data)
    assert name in str(err.value)


@pytest.mark.parametrize("ours,theirs", [("grad_dot", "dattri.grad_dot"), ("grad_cos", "dattri.grad_cos"), ("tracin", "dattri.tracin")])
def test_gradient_similarities_equal_ours(small_digits, ours, theirs):
    """Same gradients (loss on the train side, -margin on the test side), same checkpoints and lrs.

    Measured: max abs difference <= 4e-7 x the largest score. A 512-dimensional projection (dattri's
    TracIn default, disabled here) or a flipped sign or transposition would be far outside 1e-4.
    """
    run = trained(small_digits, n_checkpoints=2)
    assert_close_to(scores(theirs, small_digits, run), scores(ours, small_digits, run), rel=1e-4)


def test_tracin_without_checkpoints_uses_the_final_model_and_the_recipe_lr(small_logreg):
    run = trained(small_logreg)
    model = run.model
    final = Checkpoint(epoch=small_logreg.recipe.epochs, lr=small_logreg.recipe.lr,
                       params={k: v.detach().clone() for k, v in model.named_parameters()})
    ours = get("tracin").fit(small_logreg, model, small_logreg.train_data, checkpoints=[final]).attribute(small_logreg.test_data)
    theirs = get("dattri.tracin").fit(small_logreg, model, small_logreg.train_data).attribute(small_logreg.test_data)
    assert_close_to(theirs, ours, rel=1e-4)


def test_tracin_leaves_the_fitted_model_alone(small_digits):
    """dattri loads every checkpoint into its model: the adapter gives it a copy."""
    run = trained(small_digits, n_checkpoints=2)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    scores("dattri.tracin", small_digits, run)
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("solver", ["explicit", "cg"])
def test_influence_equals_ours_on_a_convex_model(small_logreg, solver):
    """Digits logistic regression, damping 0.1 on both sides (both add λI to the mean-loss Hessian).

    dattri's scores ``∇L_iᵀ(H+λI)⁻¹∇(-f)`` are transposed and divided by n_train. CG: 100 iterations
    on both sides. Measured: max abs difference 4e-7 x the largest score for both solvers.
    """
    run = trained(small_logreg)
    ours = scores("influence", small_logreg, run, solver=solver, damping=0.1, max_iter=100)
    theirs = scores("dattri.influence", small_logreg, run, solver=solver, damping=0.1, max_iter=100)
    assert_close_to(theirs, ours, rel=1e-4)


def test_influence_sign_when_lower_is_better(linear_task):
    """Regression measured by the absolute error (lower is better), float64 model: the badness is +f."""
    model = linear_task.train(linear_task.build_model(0), torch.arange(linear_task.n_train), 0)
    ours = get("influence", solver="explicit", damping=0.01).fit(linear_task, model, linear_task.train_data)
    theirs = get("dattri.influence", solver="explicit", damping=0.01).fit(linear_task, model, linear_task.train_data)
    assert_close_to(theirs.attribute(linear_task.test_data), ours.attribute(linear_task.test_data), rel=1e-4)


# Fast settings per solver; each must say that a training point supports its own copy.
SOLVER_PARAMS = {
    "explicit": {},
    "cg": {"max_iter": 30},
    "lissa": {"lissa_depth": 40, "lissa_batch_size": 64, "lissa_scale": 10.0},
    "arnoldi": {"arnoldi_iter": 30, "arnoldi_rank": 20},
    "datainf": {},
    "ekfac": {},
}


@pytest.mark.parametrize("solver", sorted(SOLVER_PARAMS))
def test_every_influence_solver_runs_and_supports_its_own_copy(small_logreg, solver):
    run = trained(small_logreg)
    copies = torch.arange(0, 40, 4)
    test = small_logreg.train_data.subset(copies)
    params = {"solver": solver, **SOLVER_PARAMS[solver]}
    first = scores("dattri.influence", small_logreg, run, test=test, **params)
    assert first.shape == (len(copies), small_logreg.n_train) and torch.isfinite(first).all()
    own = first[torch.arange(len(copies)), copies]
    assert (own > 0).all() and (own >= first.median(dim=1).values).all(), own
    assert torch.equal(first, scores("dattri.influence", small_logreg, run, test=test, **params)), "not reproducible"


def test_lissa_approaches_the_explicit_solution(small_logreg):
    """LiSSA's damping is rescaled by 1/scale so that both add the same λI. Measured Pearson 0.996 (0.9996 at depth 200)."""
    run = trained(small_logreg)
    explicit = scores("dattri.influence", small_logreg, run, solver="explicit", damping=0.1)
    lissa = scores("dattri.influence", small_logreg, run, solver="lissa", damping=0.1, lissa_scale=10.0,
                   lissa_depth=100, lissa_batch_size=64)
    r = torch.corrcoef(torch.stack([explicit.flatten(), lissa.flatten()]))[0, 1]
    assert r > 0.99, r


def test_trak_unprojected_equals_ours_and_is_not_transposed(small_logreg):
    """No projection on either side, same λ rule; test set = training set permuted, so n_test == n_train.

    dattri's ``TRAKAttributor.attribute`` takes ``(test_loader, train_loader)``; a result left in its
    ``[n_train, n_test]`` layout would keep its shape here but not match (checked on the transpose).
    Measured: per-row Spearman >= 0.99998, max abs difference 2e-5 x the largest score (dattri in
    float32); the transpose: mean Spearman 0.002, max abs difference 0.99 x the largest score.
    """
    run = trained(small_logreg)
    perm = torch.randperm(small_logreg.n_train, generator=torch.Generator().manual_seed(0))
    test = small_logreg.train_data.subset(perm)
    ours = scores("trak", small_logreg, run, test=test, projection_dim=None)
    theirs = scores("dattri.trak", small_logreg, run, test=test, projection_dim=None)
    assert row_spearman(theirs, ours).min() > 0.999
    assert_close_to(theirs, ours, rel=5e-3)
    assert row_spearman(theirs.T, ours).mean() < 0.9
    with pytest.raises(AssertionError):
        assert_close_to(theirs.T.contiguous(), ours, rel=5e-3)


def test_trak_projected_agrees_with_ours_at_a_large_projection(small_digits):
    """k = 4096 Gaussian projections (different matrices) of the 1,482 MLP parameters, 200 training points.

    Measured: mean per-row Spearman 0.93, min 0.91 (k = 2048: 0.88, k = 512: 0.64), as close as our
    ``trak`` with another projection seed is to itself (0.94).
    """
    run = trained(small_digits)
    ours = scores("trak", small_digits, run, projection_dim=4096)
    theirs = scores("dattri.trak", small_digits, run, projection_dim=4096)
    assert row_spearman(theirs, ours).mean() > 0.85


def test_projector_defaults_are_not_mutated(small_logreg):
    """dattri's TracIn/TRAK constructors update a module-level dict; the adapters never pass it one."""
    from dattri.algorithm import tracin, trak

    before = (dict(tracin.DEFAULT_PROJECTOR_KWARGS), dict(trak.DEFAULT_PROJECTOR_KWARGS))
    run = trained(small_logreg)
    scores("dattri.trak", small_logreg, run, projection_dim=32, seed=3)
    scores("dattri.tracin", small_logreg, run, projection_dim=16, seed=3)
    assert (dict(tracin.DEFAULT_PROJECTOR_KWARGS), dict(trak.DEFAULT_PROJECTOR_KWARGS)) == before


def test_tracin_projection_is_seeded_and_optional(small_logreg):
    run = trained(small_logreg)
    full = scores("dattri.tracin", small_logreg, run)
    a = scores("dattri.tracin", small_logreg, run, projection_dim=256, seed=1)
    b = scores("dattri.tracin", small_logreg, run, projection_dim=256, seed=1)
    assert torch.equal(a, b) and not torch.allclose(a, full)
    assert row_spearman(a, full).mean() > 0.6  # measured 0.75 (0.53 at 64 dimensions)


def test_rps_is_for_classification(linear_task):
    model = linear_task.train(linear_task.build_model(0), torch.arange(linear_task.n_train), 0)
    with pytest.raises(AttributorError, match="dattri.rps"):
        get("dattri.rps", epochs=5).fit(linear_task, model, linear_task.train_data)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("dattri.influence", {"solver": "newton"}, "'solver' parameter of DattriInfluence"),
        ("dattri.influence", {"damping": 0.0}, "'damping' parameter of DattriInfluence"),
        ("dattri.influence", {"max_iter": 0}, "'max_iter' parameter of DattriInfluence"),
        ("dattri.influence", {"solver": "arnoldi", "dtype": "float64"}, "'dtype' parameter of DattriInfluence"),
        ("dattri.influence", {"arnoldi_rank": 200, "arnoldi_iter": 100}, "'arnoldi_rank' parameter"),
        ("dattri.tracin", {"batch_size": 0}, "'batch_size' parameter of DattriTracIn"),
        ("dattri.trak", {"regularization": -1.0}, "'regularization' parameter of DattriTRAK"),
        ("dattri.rps", {"l2_strength": 0}, "'l2_strength' parameter of DattriRPS"),
    ],
)
def test_bad_parameters_are_clear(name, params, match):
    with pytest.raises(ConfigError, match=match):
        get(name, **params)
