import pytest
import torch

from tdaeval.attributors import get
from tdaeval.attributors.trak import random_projection
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.training import train_model


def test_projection_is_seeded_blockwise_and_preserves_inner_products(rng):
    vectors = torch.randn(4, 300, generator=rng, dtype=torch.float64)
    a = random_projection(vectors, 4000, seed=1, block=64)
    assert torch.equal(a, random_projection(vectors, 4000, seed=1, block=64))
    torch.testing.assert_close(a @ a.T, vectors @ vectors.T, atol=0.1 * 300, rtol=0.1)
    assert random_projection(vectors, None, seed=1) is vectors


def test_large_projection_approaches_the_unprojected_formula(small_logreg):
    task = small_logreg
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    exact = get("trak", projection_dim=None, damping=1.0).fit(task, model, task.train_data).attribute(task.test_data)
    projected = get("trak", projection_dim=20_000, damping=1.0).fit(task, model, task.train_data).attribute(task.test_data)
    small = get("trak", projection_dim=16, damping=1.0).fit(task, model, task.train_data).attribute(task.test_data)
    error_large = (projected - exact).norm() / exact.norm()
    error_small = (small - exact).norm() / exact.norm()
    assert error_large < 0.1 and error_large < error_small / 3


def test_model_ensemble_trains_extra_models(small_logreg):
    task = small_logreg
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    trak = get("trak", n_models=3, projection_dim=64).fit(task, model, task.train_data)
    assert len(trak.models_) == 3
    assert not torch.equal(trak.models_[1][0].weight, trak.models_[2][0].weight)
    assert trak.attribute(task.test_data).shape == (task.n_test, task.n_train)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="'projection_dim'"):
        get("trak", projection_dim=0)
    with pytest.raises(ConfigError, match="'n_models'"):
        get("trak", n_models=0)
    with pytest.raises(ConfigError, match="'use_checkpoints'"):
        get("trak", use_checkpoints="yes")


def test_checkpoint_ensemble_averages_the_per_checkpoint_factors(small_logreg):
    """score = mean_c(φ_c K_c) ⊙ mean_c(Q_c): rebuilt from one single-model TRAK per checkpoint."""
    task = small_logreg
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=3)
    assert len(run.checkpoints) == 3
    ensemble = get("trak", projection_dim=None, damping=1.0, use_checkpoints=True)
    scores = ensemble.fit(task, run.model, task.train_data, checkpoints=run.checkpoints).attribute(task.test_data)
    assert len(ensemble.models_) == 3
    factors, qs = [], []
    for model in ensemble.models_:
        single = get("trak", projection_dim=None, damping=1.0).fit(task, model, task.train_data)
        qs.append(single.q_)
        factors.append(single.attribute(task.test_data).double() / single.q_)
    expected = torch.stack(factors).mean(0) * torch.stack(qs).mean(0)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)
    # the checkpoints differ, so the ensemble is not the final model's TRAK
    final = get("trak", projection_dim=None, damping=1.0).fit(task, run.model, task.train_data).attribute(task.test_data)
    assert not torch.allclose(scores, final, rtol=1e-3)


def test_checkpoint_ensemble_needs_checkpoints(small_logreg):
    task = small_logreg
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    with pytest.raises(AttributorError, match="'trak' needs checkpoints"):
        get("trak", use_checkpoints=True).fit(task, model, task.train_data)
