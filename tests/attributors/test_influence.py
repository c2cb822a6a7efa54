import pytest
import scipy.stats
import torch

from tdaeval.attributors import get
from tdaeval.attributors._params import FlatParams, HessianOperator
from tdaeval.errors import ConfigError
from tdaeval.tasks import LinearRegressionTask


@pytest.fixture(scope="module")
def regression():
    task = LinearRegressionTask(n_train=40, n_test=10, n_features=4, ridge=1e-9)
    model = task.train(task.build_model(0), torch.arange(task.n_train), 0)
    return task, model


def _leverage(task):
    a = torch.cat([task.train_data.inputs, torch.ones(task.n_train, 1, dtype=torch.float64)], 1)
    return ((a @ torch.linalg.inv(a.T @ a)) * a).sum(1)


def test_hessian_of_linear_regression_is_the_design_gram(regression):
    task, model = regression
    flat = FlatParams(model)
    a = torch.cat([task.train_data.inputs, torch.ones(task.n_train, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(HessianOperator(task, flat, task.train_data, chunk_size=7).dense(), a.T @ a / task.n_train)


def test_explicit_influence_is_first_order_leave_one_out(regression):
    """Exact LOO for least squares is the influence estimate divided by (1 - h_ii) where the error keeps its sign."""
    task, model = regression
    scores = get("influence", solver="explicit", damping=0.0).fit(task, model, task.train_data).attribute(task.test_data)
    loo = task.loo_effects()  # removal effect on the absolute error (lower is better): supports = positive
    first_order = (loo * (1 - _leverage(task))).float()
    a_test = torch.cat([task.test_data.inputs, torch.ones(task.n_test, 1, dtype=torch.float64)], 1)
    base_error = a_test @ torch.cat([model.weight.detach().squeeze(0), model.bias.detach()]) - task.test_data.targets
    far_from_zero = (base_error.abs() > 0.3).unsqueeze(1).expand_as(scores)  # no sign flip of the error on removal
    torch.testing.assert_close(scores[far_from_zero], first_order[far_from_zero], atol=2e-5, rtol=1e-3)
    spearman = [scipy.stats.spearmanr(scores[t], loo[t]).statistic for t in range(task.n_test)]
    assert sum(spearman) / len(spearman) > 0.9


@pytest.mark.parametrize(
    "params,tolerance",
    [({"solver": "cg", "tol": 1e-10}, 1e-4), ({"solver": "arnoldi", "arnoldi_rank": 5, "arnoldi_iter": 5}, 1e-4),
     pytest.param({"solver": "lissa", "lissa_depth": 3000, "lissa_batch_size": 40}, 1e-3, marks=pytest.mark.slow),
     ({"solver": "astra", "astra_batch_size": 10_000, "astra_lr": 0.5}, 1e-4)],
)
def test_solvers_agree_with_explicit(regression, params, tolerance):
    task, model = regression
    reference = get("influence", solver="explicit", damping=0.05).fit(task, model, task.train_data).attribute(task.test_data)
    scores = get("influence", damping=0.05, **params).fit(task, model, task.train_data).attribute(task.test_data)
    scale = reference.abs().max()
    assert (scores - reference).abs().max() / scale < tolerance * 10


@pytest.mark.slow
def test_cg_on_the_mlp_matches_explicit(small_digits):
    from tdaeval.training import train_model

    task = type(small_digits)(n_train=60, n_test=5, hidden=8, recipe=small_digits.recipe)
    model = train_model(task, task.build_model(0), torch.arange(60), 0).model
    explicit = get("influence", solver="explicit", damping=0.5).fit(task, model, task.train_data).attribute(task.test_data)
    cg = get("influence", solver="cg", damping=0.5, tol=1e-8, max_iter=500).fit(task, model, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(cg, explicit, atol=1e-5 * float(explicit.abs().max()), rtol=1e-3)


@pytest.mark.slow
def test_astra_refines_the_ekfac_solution_on_the_mlp(small_digits):
    """ASTRA starts at the EK-FAC solution and converges to (G + λI)⁻¹ g (G: dense Gauss–Newton), with sampled batches too."""
    from tdaeval.attributors._params import GaussNewtonOperator
    from tdaeval.attributors.gradient import test_measurement_grads as measurement_grads
    from tdaeval.training import train_model

    task = type(small_digits)(n_train=120, n_test=4, hidden=8, recipe=small_digits.recipe)
    model = train_model(task, task.build_model(0), torch.arange(120), 0).model
    vectors = measurement_grads(task, model, task.test_data).double()
    ekfac_solver = get("influence", solver="ekfac", damping=0.1).fit(task, model, task.train_data)
    gauss_newton = GaussNewtonOperator(task, ekfac_solver.flat_, task.train_data).dense().double()
    assert torch.linalg.eigvalsh(gauss_newton).min() > -1e-6  # PSD, unlike this under-trained MLP's Hessian
    eye = torch.eye(gauss_newton.shape[0], dtype=torch.float64)
    exact = torch.linalg.solve(gauss_newton + 0.1 * eye, vectors.T).T

    def error(**params):
        solver = get("influence", damping=0.1, **params).fit(task, model, task.train_data)
        return float((solver.inverse_hvp(vectors.float()).double() - exact).norm() / exact.norm())

    ekfac = error(solver="ekfac")
    sampled = error(solver="astra", astra_batch_size=32, astra_iter=100)
    full = error(solver="astra", astra_batch_size=120, astra_iter=100)
    assert full < 5e-3 < 0.1 < ekfac
    assert sampled < ekfac / 4


@pytest.mark.parametrize("cg_block", [True, False])
def test_cg_warns_when_it_does_not_converge(regression, cg_block):
    task, model = regression
    attributor = get("influence", solver="cg", damping=0.0, max_iter=1, cg_block=cg_block).fit(task, model, task.train_data)
    with pytest.warns(UserWarning, match="did not converge.*'damping'"):
        attributor.attribute(task.test_data.subset(torch.arange(1)))


def test_block_cg_matches_rowwise_cg_in_fewer_products(small_digits):
    """Same solution as row-wise CG on an MLP's Hessian, in fewer Hessian products."""
    from tdaeval.training import train_model

    task = small_digits
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    block = get("influence", solver="cg", damping=0.5, tol=1e-7).fit(task, model, task.train_data)
    rowwise = get("influence", solver="cg", damping=0.5, tol=1e-7, cg_block=False).fit(task, model, task.train_data)
    hessian, products = rowwise.hessian_, []

    def counted(vectors):
        products.append(len(vectors))
        return hessian(vectors)

    rowwise.hessian_ = counted
    expected = rowwise.attribute(task.test_data)
    scores = block.attribute(task.test_data)
    assert bool(block.converged_.all()) and bool(rowwise.converged_.all())
    torch.testing.assert_close(scores, expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max()))
    assert block.cg_products_ < len(products)
    with pytest.raises(ConfigError, match="'cg_block'"):
        get("influence", cg_block="yes")


def test_bad_parameters_and_explicit_size_limit(regression):
    task, model = regression
    with pytest.raises(ConfigError, match="'solver' parameter of Influence"):
        get("influence", solver="newton")
    with pytest.raises(ConfigError, match="'damping'"):
        get("influence", damping=-1.0)
    with pytest.raises(ConfigError, match="'astra_lr'"):
        get("influence", solver="astra", astra_lr=0.0)
    with pytest.raises(ConfigError, match="'astra_momentum'"):
        get("influence", solver="astra", astra_momentum=1.0)
    with pytest.raises(ConfigError, match="max_explicit_params=3"):
        get("influence", solver="explicit", max_explicit_params=3).fit(task, model, task.train_data)


# --- Default damping: the solve converges where a fixed λ = 0.1 did not (#13, item 18) ----------------------------


def _digits_mlp(n_train, hidden, seeds=(0, 0)):
    from tdaeval.tasks import DigitsTask
    from tdaeval.training import train_model

    task = DigitsTask(n_train=n_train, n_test=8, hidden=hidden)
    model = train_model(task, task.build_model(seeds[0]), torch.arange(task.n_train), seeds[1]).model.eval()
    return task, model


def _hessian_eigenvalues(task, model):
    """Eigenvalues of the mean training loss's Hessian, by torch.func.hessian and eigvalsh (not tdaeval's operators)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for _, p in model.named_parameters()])

    def loss(vector):
        params, start = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = vector[start : start + shape.numel()].view(shape)
            start += shape.numel()
        outputs = torch.func.functional_call(model, params, (task.train_data.inputs,))
        return task.loss(outputs, task.train_data.targets).mean()

    return torch.linalg.eigvalsh(torch.func.hessian(loss)(flat).double())


def _fit_and_attribute(task, model, **params):
    import warnings

    from tdaeval.errors import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attributor = get("influence", **params).fit(task, model, task.train_data)
        attributor.attribute(task.test_data)
    return attributor, [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]


@pytest.fixture(scope="module")
def indefinite():
    """A small digits MLP whose Hessian goes down to about -0.28: H + 0.1 I is indefinite; and that lowest eigenvalue."""
    task, model = _digits_mlp(n_train=100, hidden=8)
    lowest = float(_hessian_eigenvalues(task, model).min())
    assert lowest < -0.05  # the case a fixed λ = 0.1 cannot handle
    return task, model, lowest


@pytest.mark.parametrize("solver,params", [
    ("cg", {}), ("cg", {"cg_block": False}), ("explicit", {}), ("arnoldi", {"arnoldi_iter": 40, "arnoldi_rank": 20}),
    ("lissa", {"lissa_depth": 20}), ("lissa", {"lissa_depth": 20, "lissa_scale": 10.0}),
])
def test_default_damping_makes_the_hessian_positive_definite(indefinite, solver, params):
    task, model, lowest = indefinite
    attributor, convergence_warnings = _fit_and_attribute(task, model, solver=solver, **params)
    assert attributor.damping_ > -lowest  # H + λI positive definite
    assert attributor.damping_ == pytest.approx(-2.0 * lowest, rel=0.1)  # and not needlessly large
    assert convergence_warnings == []
    if solver == "cg":
        assert bool(attributor.converged_.all())


def test_fixed_damping_is_used_as_given_and_warns_when_cg_fails(indefinite):
    from tdaeval.errors import ConvergenceWarning

    task, model, _ = indefinite
    attributor, convergence_warnings = _fit_and_attribute(task, model, damping=0.1)
    assert attributor.damping_ == 0.1 and not bool(attributor.converged_.any())
    assert convergence_warnings and "did not converge" in convergence_warnings[0]
    assert issubclass(ConvergenceWarning, UserWarning)  # filters written for UserWarning still apply


def test_default_influence_converges_on_tutorial_03s_models():
    """Tutorial 3's seed posterior of influence (400 digits): with λ = 0.1, CG had converged on no test point."""
    from tdaeval.attributors.seeds import seed_posterior

    seeds = seed_posterior("influence", n_seeds=2).training_seeds()[0]
    task, model = _digits_mlp(n_train=400, hidden=64, seeds=seeds)
    attributor, convergence_warnings = _fit_and_attribute(task, model)
    assert convergence_warnings == [] and bool(attributor.converged_.all())
    assert attributor.damping_ > 0.1


def test_default_influence_converges_on_the_quickstart_config_with_unchanged_damping():
    """The quick start's task and reference model: CG converges, and λ stays 0.1 (its Hessian goes down to about -0.04)."""
    from tdaeval.tasks import DigitsTask
    from tdaeval.training import train_model

    task = DigitsTask()
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model.eval()
    attributor, convergence_warnings = _fit_and_attribute(task, model)
    assert convergence_warnings == [] and bool(attributor.converged_.all())
    assert attributor.damping_ == 0.1
