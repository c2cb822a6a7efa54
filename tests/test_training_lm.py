"""The stacked-forward hook of batched training: TinyCausalLM.stacked_forward against a loop of functional_call (values,
gradients, dropout masks), train_models going through it, and training in groups of models."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import tdaeval.training as training
from tdaeval.nn import SeededDropout, TinyCausalLM
from tdaeval.task import TrainRecipe
from tdaeval.tasks import LanguageModelTask
from tdaeval.training import StackedModels, stacked_forward_of, train_model, train_models

CORPUS = dict(n_entities=30, n_relations=2, n_facts=24, n_templates=3, n_test=6)


def _task(**kwargs) -> LanguageModelTask:
    recipe = TrainRecipe(epochs=3, batch_size=16, lr=0.1, momentum=0.9)
    return LanguageModelTask(**{**CORPUS, "d_model": 16, "recipe": recipe, **kwargs})


def _stack(models: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k, _ in models[0].named_parameters()}


@pytest.mark.parametrize("n_layers", [1, 2])
def test_stacked_forward_equals_functional_call_per_model(n_layers):
    torch.manual_seed(0)
    models = [TinyCausalLM(23, 7, d_model=12, n_layers=n_layers, n_heads=3) for _ in range(3)]
    params = _stack(models)
    tokens = torch.randint(0, 23, (3, 5, 7), generator=torch.Generator().manual_seed(1))
    logits = models[0].stacked_forward(params, {}, tokens)
    assert logits.shape == (3, 5, 7, 23)
    for m, model in enumerate(models):
        torch.testing.assert_close(logits[m], model(tokens[m]), atol=1e-5, rtol=1e-5)
    shorter = models[0].stacked_forward(params, {}, tokens[:, :, :4])  # fewer positions than max_len
    torch.testing.assert_close(shorter[1], models[1](tokens[1, :, :4]), atol=1e-5, rtol=1e-5)


def test_stacked_forward_gradients_equal_each_models_own():
    task = _task()
    models = [task.build_model(s) for s in range(3)]
    params = {k: v.requires_grad_(True) for k, v in _stack(models).items()}
    x = task.train_data.inputs[:10]
    y = task.train_data.targets[:10]
    xs = torch.stack([x, x.flip(0), x])
    ys = torch.stack([y, y.flip(0), y])
    losses = task.loss(models[0].stacked_forward(params, {}, xs).flatten(0, 1), ys.flatten(0, 1)).view(3, -1).mean(1)
    grads = torch.autograd.grad(losses.sum(), list(params.values()))
    for m, model in enumerate(models):
        model.zero_grad()
        task.loss(model(xs[m]), ys[m]).mean().backward()
        for g, (name, p) in zip(grads, model.named_parameters()):
            torch.testing.assert_close(g[m], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_stacked_forward_applies_the_dropout_masks_of_each_model():
    torch.manual_seed(0)
    models = [TinyCausalLM(11, 4, d_model=8, n_heads=2, dropout=0.3) for _ in range(2)]
    template = models[0].train()
    params = _stack(models)
    tokens = torch.randint(0, 11, (2, 3, 4), generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    names = [n for n, mod in template.named_modules() if isinstance(mod, SeededDropout)]
    buffers = {f"{n}.mask": (torch.rand(2, 3, 4, 8, generator=g) > 0.3).float() / 0.7 for n in names}
    logits = template.stacked_forward(params, buffers, tokens)
    for m in range(2):
        alone = functional_call(template, ({k: v[m] for k, v in params.items()}, {k: v[m] for k, v in buffers.items()}), (tokens[m],))
        torch.testing.assert_close(logits[m], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits, template.eval().stacked_forward(params, buffers, tokens), atol=1e-3)  # the masks matter
    template.train()
    with pytest.raises(ValueError, match="blocks.0.attn.drop.mask"):
        template.stacked_forward(params, {}, tokens)


def test_train_models_trains_through_the_hook(monkeypatch):
    task = _task()
    calls = []
    original = TinyCausalLM.stacked_forward

    def spy(self, params, buffers, tokens):
        calls.append(tokens.shape)
        return original(self, params, buffers, tokens)

    monkeypatch.setattr(TinyCausalLM, "stacked_forward", spy)
    assert stacked_forward_of(task.build_model(0)) is not None
    subsets = [torch.arange(0, 40), torch.arange(20, 60)]
    stacked = train_models(task, subsets, [1, 2])
    steps = task.recipe.epochs * -(-40 // task.recipe.batch_size)
    assert len(calls) == steps and calls[0] == (2, task.recipe.batch_size, task.max_len)
    for i, (subset, seed) in enumerate(zip(subsets, [1, 2])):
        alone = train_model(task, task.build_model(seed), subset, seed).model
        for name, param in alone.named_parameters():
            torch.testing.assert_close(stacked.params[name][i], param.detach(), atol=2e-5, rtol=1e-4)


def test_models_without_the_hook_train_under_vmap(small_digits):
    assert stacked_forward_of(small_digits.build_model(0)) is None
    stacked = train_models(small_digits, [torch.arange(50)], [3])
    alone = train_model(small_digits, small_digits.build_model(3), torch.arange(50), 3).model
    for name, param in alone.named_parameters():
        torch.testing.assert_close(stacked.params[name][0], param.detach(), atol=2e-5, rtol=1e-4)


def test_many_models_train_in_groups_with_the_same_result(monkeypatch):
    task = _task(dropout=0.1)
    g = torch.Generator().manual_seed(0)
    subsets = [torch.randperm(task.n_train, generator=g)[:30] for _ in range(5)]
    seeds = [3, 4, 5, 6, 7]
    together = train_models(task, subsets, seeds)
    per_model = task.build_model(0)(task.train_data.inputs[: task.recipe.batch_size]).numel() * 4
    monkeypatch.setattr(training, "GROUP_OUTPUT_BYTES", 2 * per_model)  # groups of 2, 2 and 1
    sizes = []
    original = training._train_stacked
    monkeypatch.setattr(training, "_train_stacked", lambda t, s, seeds, d, **kw: sizes.append(len(seeds)) or original(t, s, seeds, d, **kw))
    grouped = train_models(task, subsets, seeds)
    assert sizes == [2, 2, 1]
    assert len(grouped) == 5 and grouped.buffers.keys() == together.buffers.keys()
    for name, value in together.params.items():
        torch.testing.assert_close(grouped.params[name], value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped.measure(task), together.measure(task), atol=1e-4, rtol=1e-4)


def test_concatenate_keeps_the_order(small_logreg):
    models = [small_logreg.build_model(s) for s in range(3)]
    joined = StackedModels.concatenate([StackedModels.from_models(models[:2]), StackedModels.from_models(models[2:])])
    assert len(joined) == 3
    for i, model in enumerate(models):
        for name, param in model.named_parameters():
            assert torch.equal(joined.params[name][i], param.detach())
