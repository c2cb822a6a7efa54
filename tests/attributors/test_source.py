import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from tdaeval.attributors import get
from tdaeval.attributors.ekfac import apply_ekfac_spectral
from tdaeval.attributors.gradient import test_measurement_grads as measurement_grads
from tdaeval.attributors.gradient import train_loss_grads
from tdaeval.attributors.source import source_propagate
from tdaeval.errors import AttributorError
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model


@pytest.fixture(scope="module")
def tiny_run():
    task = DigitsTask(n_train=60, n_test=5, hidden=4, recipe=TrainRecipe(epochs=4, batch_size=16))
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=4)
    return task, run


def _dense_curvature(factors) -> np.ndarray:
    """The segment's EK-FAC matrix written out in flat parameter order ``[P, P]``."""
    eye = torch.eye(factors.n_params, dtype=torch.float64)
    return apply_ekfac_spectral(factors, eye, lambda lam, _layer: lam).numpy()


def _phi_dense(h: np.ndarray, c: float) -> np.ndarray:
    """(I − e^{−cH}) H⁻¹ for symmetric H, from its eigenpairs (c on the null space)."""
    values, vectors = np.linalg.eigh(h)
    tiny = np.abs(values) * c < 1e-12
    safe = np.where(tiny, 1.0, values)
    return vectors @ np.diag(np.where(tiny, c, -np.expm1(-c * safe) / safe)) @ vectors.T


def test_source_equals_the_dense_matrix_function_formula(tiny_run):
    """τ = (1/N) gᵀ Σ_ℓ [Π_{ℓ'>ℓ} expm(−c_ℓ' H_ℓ')] (I − expm(−c_ℓ H_ℓ)) H_ℓ⁻¹ ḡ_ℓ, with scipy's expm."""
    task, run = tiny_run
    source = get("source", n_segments=2).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    scores = source.attribute(task.test_data).double().numpy()

    g = measurement_grads(task, run.model, task.test_data).double().numpy()
    n = task.n_train
    expected = np.zeros_like(scores)
    dense = [_dense_curvature(s.factors) for s in source.segments_]
    for index, segment in enumerate(source.segments_):
        h, c = dense[index], segment.scale
        phi = _phi_dense(h, c)
        propagate = np.eye(h.shape[0])
        for later, seg_later in zip(dense[index + 1 :], source.segments_[index + 1 :]):
            propagate = scipy.linalg.expm(-seg_later.scale * later) @ propagate
        operator = propagate @ phi  # latest segment applied last
        mean_grad = np.mean(
            [train_loss_grads(task, run.model, task.train_data, params=p).double().numpy() for p in segment.params], axis=0
        )
        expected += g @ operator @ mean_grad.T / n
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert [s.epochs for s in source.segments_] == [(0, 2), (2, 4)]


def test_propagation_matches_expm_for_the_later_segment(tiny_run):
    task, run = tiny_run
    source = get("source", n_segments=2).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    g = torch.randn(3, source.segments_[0].factors.n_params, dtype=torch.float64)
    first, second = source_propagate(source.segments_, g)
    h_late = _dense_curvature(source.segments_[1].factors)
    carried = g.numpy() @ scipy.linalg.expm(-source.segments_[1].scale * h_late)  # symmetric, so left or right
    h_early = _dense_curvature(source.segments_[0].factors)
    phi = _phi_dense(h_early, source.segments_[0].scale)
    np.testing.assert_allclose(first.numpy(), carried @ phi, rtol=1e-6, atol=1e-9)


def test_one_segment_with_unbounded_steps_is_ekfac_influence():
    """L = 1 and c → ∞: φ(λ + wd) → 1 / (λ + wd), EK-FAC influence with damping = weight decay."""
    task = DigitsTask(model="logreg", n_train=100, n_test=5, recipe=TrainRecipe(epochs=3, weight_decay=0.01))
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=1)
    source = get("source", n_segments=1, steps_per_epoch=10**9).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    influence = get("influence", solver="ekfac", damping=0.01).fit(task, run.model, task.train_data)
    torch.testing.assert_close(source.attribute(task.test_data), influence.attribute(task.test_data), rtol=1e-3, atol=1e-6)


def test_fast_source_equals_source_with_one_checkpoint_per_segment_and_differs_otherwise(tiny_run):
    task, run = tiny_run
    fit = dict(checkpoints=run.checkpoints)
    for n_segments, equal in ((4, True), (2, False)):
        a = get("source", n_segments=n_segments).fit(task, run.model, task.train_data, **fit).attribute(task.test_data)
        b = get("fast_source", n_segments=n_segments).fit(task, run.model, task.train_data, **fit).attribute(task.test_data)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7) is equal


def test_source_needs_checkpoints_and_linear_layers(tiny_run):
    task, run = tiny_run
    with pytest.raises(AttributorError, match="'source' needs checkpoints"):
        get("source").fit(task, run.model, task.train_data)

    class WithNorm(DigitsTask):
        def build_model(self, seed):
            return nn.Sequential(nn.Linear(64, 8), nn.LayerNorm(8), nn.Linear(8, 10))

    other = WithNorm(n_train=30, n_test=3, recipe=TrainRecipe(epochs=1))
    other_run = train_model(other, other.build_model(0), torch.arange(30), 0, n_checkpoints=1)
    with pytest.raises(AttributorError, match="nn.Linear"):
        get("fast_source").fit(other, other_run.model, other.train_data, checkpoints=other_run.checkpoints)


def test_more_segments_than_checkpoints_warns(tiny_run):
    task, run = tiny_run
    with pytest.warns(UserWarning, match="using 4 segment"):
        source = get("source", n_segments=6).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    assert len(source.segments_) == 4


# --- two-stage runs: the epoch-0 checkpoint (the base model of a FineTuneTask) ---------------------------------------


@pytest.fixture(scope="module")
def finetune_run():
    from tdaeval.tasks.finetune import FineTuneTask

    task = FineTuneTask.digits(n_train=120, n_test=5, hidden=4, recipe={"epochs": 4, "batch_size": 16}, base_recipe={"epochs": 2})
    run = train_model(task, task.build_model(0), torch.arange(len(task.train_data)), 0, n_checkpoints=4, include_initial=True)
    return task, run


@pytest.mark.parametrize("name", ["source", "fast_source"])
@pytest.mark.parametrize("n_segments", [2, 4])
def test_the_epoch_0_checkpoint_starts_the_first_segment_and_changes_nothing(finetune_run, name, n_segments):
    """With ``include_initial=True`` the base model is the first segment's start: segments, step scales and scores equal
    those without it (it used to enter the first segment's mean lr as 0.0, halving c, or to form an empty segment)."""
    task, run = finetune_run
    assert [(c.epoch, c.lr) for c in run.checkpoints][:2] == [(0, 0.0), (1, task.recipe.lr)]
    with_base = get(name, n_segments=n_segments).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    without = get(name, n_segments=n_segments).fit(task, run.model, task.train_data, checkpoints=run.checkpoints[1:])
    steps = -(-len(task.train_data) // 16)
    expected = [(0, 2), (2, 4)] if n_segments == 2 else [(0, 1), (1, 2), (2, 3), (3, 4)]
    for source in (with_base, without):
        assert [s.epochs for s in source.segments_] == expected
        for segment in source.segments_:  # c = lr · epochs · steps per epoch (momentum 0 in the digits recipe)
            span = segment.epochs[1] - segment.epochs[0]
            assert segment.scale == pytest.approx(task.recipe.lr / (1 - task.recipe.momentum) * span * steps)
    torch.testing.assert_close(with_base.attribute(task.test_data), without.attribute(task.test_data))


def test_only_the_epoch_0_checkpoint_is_refused(finetune_run):
    task, run = finetune_run
    with pytest.raises(AttributorError, match=r"^Attributor 'source': needs a checkpoint after at least one epoch of training; got epochs \[0\]\.$"):
        get("source").fit(task, run.model, task.train_data, checkpoints=run.checkpoints[:1])


def test_source_runs_on_the_language_model_fine_tune_with_linear_params():
    """The LM FineTuneTask (embeddings, LayerNorm: EK-FAC needs params="linear"), base checkpoint included: finite scores
    ``[n_test, n_finetune]`` equal to those without the base checkpoint."""
    from tdaeval.tasks.finetune import FineTuneTask

    recipe = {"epochs": 2, "batch_size": 16}
    task = FineTuneTask.language(n_entities=40, n_relations=4, n_facts=30, n_test=4, d_model=16, n_finetune_facts=6,
                                 base_recipe=recipe, recipe=recipe)
    run = train_model(task, task.build_model(0), torch.arange(len(task.train_data)), 0, n_checkpoints=2, include_initial=True)
    with_base = get("source", n_segments=2, params="linear").fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    scores = with_base.attribute(task.test_data)
    assert scores.shape == (len(task.test_data), len(task.train_data)) and bool(torch.isfinite(scores).all())
    assert float(scores.abs().max()) > 0
    without = get("source", n_segments=2, params="linear").fit(task, run.model, task.train_data, checkpoints=run.checkpoints[1:])
    torch.testing.assert_close(scores, without.attribute(task.test_data))


# --- the built-in suite finetune-source (docs/multistage.rst) ---------------------------------------------------------


def test_finetune_source_suite_is_builtin_with_its_documented_settings():
    """Read without building (building trains the base model); test_builtin_suites_are_valid builds every builtin."""
    from tdaeval.suites.schema import builtin_suites, load_suite

    assert "finetune-source" in builtin_suites()
    config, folder = load_suite("finetune-source")
    assert config.name == "finetune-source" and folder is None and config.description
    assert config.task.factory == "tdaeval.tasks.finetune:digits_finetune" and config.task.params["recipe"] == {"epochs": 10}
    assert [a.label for a in config.attributors] == ["random", "source", "fast_source", "ekfac", "tracin"]
    assert config.attributors[3].params == {"solver": "ekfac"} and config.attributors[1].params == {"n_segments": 3}
    assert config.n_checkpoints == 5
    assert (config.groundtruth.n_subsets, config.groundtruth.alpha, config.groundtruth.n_seeds) == (50, 0.5, 3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_finetune_source_suite_runs_from_the_command_line(tmp_path):
    """``tdaeval run finetune-source``: every attributor gets a finite LDS inside its CI; Source beats EK-FAC influence and
    random here (measured: 0.21 vs 0.05 vs -0.02, paired differences significant; docs/multistage.rst)."""
    import math

    from typer.testing import CliRunner

    from tdaeval.cli import app
    from tdaeval.suites.result import SuiteResult

    res = CliRunner().invoke(app, ["run", "finetune-source", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    result = SuiteResult.from_json(next((tmp_path / "out").glob("*.json")))
    assert result.failures() == []
    values = {}
    for entry in result.entries:
        low, high = entry.result.ci
        assert math.isfinite(entry.result.value) and low <= entry.result.value <= high, entry.attributor
        values[entry.attributor] = entry.result.value
    assert set(values) == {"random", "source", "fast_source", "ekfac", "tracin"}
    assert values["source"] > values["ekfac"] + 0.05 and values["source"] > values["random"] + 0.1
