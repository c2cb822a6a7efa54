"""Dropout and LoRA ensembles and the seed posterior on the language-model task (the ensembles paper's generative setting).

The tiny LM has embeddings, LayerNorms and ``[n, T, d]`` inputs to its ``nn.Linear`` layers, so member batching
(stacked Grad-Dot) does not apply: each ensemble must equal the mean of its base attributor over its member
models, computed here in a loop. Where batching does apply — extra members trained together by ``train_models``
(seeded dropout in training), LoRA adapters fine-tuned together, the seed posterior's runs — the batched result
equals one-at-a-time training.
"""

from __future__ import annotations

import pytest
import torch

from tdaeval.attributors import Attribution, get
from tdaeval.attributors.ensembles import MemberDropout, dropout, finetune_adapters, lora
from tdaeval.attributors.seeds import seed_posterior
from tdaeval.errors import ConfigError
from tdaeval.hashing import derive_seed
from tdaeval.nn import LoRALinear, SeededDropout, add_lora, lora_parameters
from tdaeval.task import TrainRecipe
from tdaeval.tasks.language import LanguageModelTask
from tdaeval.training import train_model

pytestmark = pytest.mark.filterwarnings("error:Batched training is not possible")


def _task(dropout_rate: float) -> LanguageModelTask:
    """82 training sentences, 8 queries, d_model 16, 3 epochs."""
    return LanguageModelTask(n_entities=40, n_relations=4, n_facts=30, n_test=8, d_model=16, dropout=dropout_rate,
                             recipe=TrainRecipe(epochs=3, batch_size=32, lr=0.2, momentum=0.9))


@pytest.fixture(scope="module")
def lm():
    """The tiny LM with dropout 0.1 in its blocks, trained once."""
    task = _task(0.1)
    return task, train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model




def _grad_dot(task, model) -> torch.Tensor:
    return get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data)


def _loop_mean(task, models) -> torch.Tensor:
    """The mean of Grad-Dot over ``models``, one after the other (float64)."""
    return torch.stack([_grad_dot(task, m).double() for m in models]).mean(0)


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=rtol * float(expected.abs().max()))


# --- dropout --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_mode", ["member", "example"])
def test_dropout_ensemble_on_the_lm_is_the_mean_over_masked_members(lm, mask_mode):
    task, model = lm
    ensemble = dropout("grad_dot", n_passes=3, mask_mode=mask_mode, seed=4).fit(task, model, task.train_data)
    scores = ensemble.attribute(task.test_data)
    assert scores.shape == (task.n_test, task.n_train) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    members = ensemble.member_models_
    assert ensemble.stack_ is None and len(members) == 3  # embeddings and [n, T, d] inputs: member by member
    layers = [m for m in members[0].modules() if isinstance(m, MemberDropout)]
    assert len(layers) == 2 * task.n_layers and all(m.p == 0.1 for m in layers)  # each layer's own rate (p=None)
    _close(scores, _loop_mean(task, members))
    x = task.test_data.inputs
    assert not torch.allclose(members[0](x), members[1](x)) and not torch.allclose(members[0](x), model.eval()(x))
    assert not torch.allclose(scores, _grad_dot(task, model))
    looped = dropout("grad_dot", n_passes=3, mask_mode=mask_mode, seed=4, batch_members=False).fit(task, model, task.train_data)
    assert torch.equal(looped.attribute(task.test_data), scores)
    assert not any(isinstance(m, MemberDropout) for m in model.modules())  # the fitted model is left alone


def test_dropout_ensemble_trains_its_extra_lm_models_batched_as_one_at_a_time(lm, stacked_calls):
    """The seeded dropout of training under vmap: the extra base model equals the same recipe run alone."""
    task, model = lm
    ensemble = dropout("grad_dot", n_models=2, n_passes=1, seed=3).fit(task, model, task.train_data)
    assert stacked_calls == [1]
    seed = derive_seed("naive-ensemble", 3, 1)
    alone = train_model(task, task.build_model(seed), torch.arange(task.n_train), seed).model
    extra = ensemble._bases[1]
    assert any(isinstance(m, SeededDropout) and m.p == 0.1 for m in extra.modules())
    for name, value in alone.named_parameters():
        torch.testing.assert_close(dict(extra.named_parameters())[name], value, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(ensemble.attribute(task.test_data)).all()


def test_dropout_ensemble_on_layers_of_rate_zero_needs_p():
    """TinyCausalLM always has SeededDropout layers: at dropout=0 the default p (each layer's own) would drop nothing."""
    task = _task(0.0)
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    with pytest.raises(ConfigError, match=r"'dropout_ensemble\(grad_dot\)'.*rate 0.*pass p"):
        dropout("grad_dot", n_passes=2).fit(task, model, task.train_data)
    scores = dropout("grad_dot", n_passes=2, p=0.2).fit(task, model, task.train_data).attribute(task.test_data)
    assert torch.isfinite(scores).all() and not torch.allclose(scores, _grad_dot(task, model))
    plain = dropout("grad_dot", n_passes=2, p=0.0).fit(task, model, task.train_data).attribute(task.test_data)
    _close(plain, _grad_dot(task, model))  # p=0 asked for explicitly: the plain attributor


# --- LoRA -----------------------------------------------------------------------------------------------------


def test_lora_ensemble_on_the_lm_is_the_mean_over_its_fine_tuned_members(lm):
    task, model = lm
    ensemble = lora("grad_dot", n_adapters=2, rank=2, steps=5, seed=1).fit(task, model, task.train_data)
    scores = ensemble.attribute(task.test_data)
    assert scores.shape == (task.n_test, task.n_train) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    members = ensemble.member_models_
    linear = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for member in members:  # an adapter on every nn.Linear (qkv, proj, fc, proj, head); gradients over adapters only
        assert sorted(n for n, m in member.named_modules() if isinstance(m, LoRALinear)) == sorted(linear)
        assert {n for n, _ in member.named_parameters()} == set(lora_parameters(member))
    assert ensemble.stack_ is None
    _close(scores, _loop_mean(task, members))
    first, second = (lora_parameters(m) for m in members)
    assert any(not torch.equal(first[name], second[name]) for name in first)  # seeds differ
    assert ensemble.cost_["members"] == 2


def test_fresh_lora_members_compute_what_the_lm_computes(lm):
    task, model = lm
    ensemble = lora("grad_dot", n_adapters=1, rank=3, steps=0).fit(task, model, task.train_data)
    x = task.test_data.inputs
    torch.testing.assert_close(ensemble.member_models_[0](x), model.eval()(x))  # B = 0


def test_lm_adapters_fine_tuned_together_equal_each_fine_tuned_alone(lm):
    task, model = lm
    seeds = [11, 12]
    together = finetune_adapters(task, [add_lora(model, 2, s) for s in seeds], task.train_data, seeds, 4, 0.1, 16, 0.9)
    for seed, tuned in zip(seeds, together):
        alone = finetune_adapters(task, [add_lora(model, 2, seed)], task.train_data, [seed], 4, 0.1, 16, 0.9)[0]
        for name, value in lora_parameters(tuned).items():
            torch.testing.assert_close(value, lora_parameters(alone)[name], rtol=1e-5, atol=1e-6)
    untouched = lora_parameters(add_lora(model, 2, seeds[0]))
    assert any(not torch.equal(untouched[n], v) for n, v in lora_parameters(together[0]).items())  # the steps did something


# --- seed posterior -------------------------------------------------------------------------------------------


def test_seed_posterior_on_the_lm_trains_its_runs_batched_as_one_at_a_time(lm, stacked_calls):
    task, model = lm
    posterior = seed_posterior("grad_dot", n_seeds=2, seed=5).fit(task, model, task.train_data)
    result = posterior.attribute(task.test_data)
    assert isinstance(result, Attribution) and stacked_calls == [2]
    for field in (result.mean, result.std, result.p_value):
        assert field.shape == (task.n_test, task.n_train) and torch.isfinite(field).all()
    assert (result.std > 0).float().mean() > 0.9
    looped = []
    for init_seed, order_seed in posterior.training_seeds():
        assert init_seed == order_seed  # vary="both"
        looped.append(_grad_dot(task, train_model(task, task.build_model(init_seed), torch.arange(task.n_train), order_seed).model))
    _close(posterior.seed_scores(task.test_data), torch.stack(looped), rtol=1e-3)
    _close(result.mean, torch.stack(looped).double().mean(0), rtol=1e-3)


def test_seed_posterior_varying_the_lm_initialisation_only(lm):
    task, model = lm
    posterior = seed_posterior("grad_dot", n_seeds=2, vary="init", seed=5).fit(task, model, task.train_data)
    result = posterior.attribute(task.test_data)
    assert result.mean.shape == (task.n_test, task.n_train) and torch.isfinite(result.std).all()
    (a, order_a), (b, order_b) = posterior.training_seeds()
    assert order_a == order_b and a != b
