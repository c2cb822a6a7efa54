"""The language-model task and TinyCausalLM: loss and measurements against hand formulas, torch.func safety,
batched = sequential training, learning, validation and fingerprints."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from tdaeval.errors import ConfigError
from tdaeval.facts import CATEGORIES, IGNORE_INDEX, make_fact_corpus
from tdaeval.nn import SeededDropout, TinyCausalLM
from tdaeval.task import Task, TrainRecipe
from tdaeval.tasks import TASKS, LanguageModelTask, get_task
from tdaeval.training import train_model, train_models

CORPUS = dict(n_entities=30, n_relations=2, n_facts=24, n_templates=3, n_test=6)
SHORT = TrainRecipe(epochs=3, batch_size=16, lr=0.1, momentum=0.9)


def _task(**kwargs) -> LanguageModelTask:
    return LanguageModelTask(**{**CORPUS, "d_model": 16, "recipe": SHORT, **kwargs})


@pytest.fixture(scope="module")
def task() -> LanguageModelTask:
    return _task()


def test_registered_and_built_by_name():
    assert TASKS["language_model"] is LanguageModelTask
    built = get_task("language_model", **CORPUS)
    assert isinstance(built, LanguageModelTask) and built.n_test == 6


def test_defaults_match_the_notes():
    task = LanguageModelTask()
    assert task.recipe == TrainRecipe(epochs=100, batch_size=128, lr=0.5, momentum=0.9)
    assert (task.n_train, task.n_test, task.max_len) == (660, 60, 6)
    model = task.build_model(0)
    n_params = sum(p.numel() for p in model.parameters())
    # embed V*d + positions T*d + block (2 LN, qkv, proj, fc, proj) + ln_f + head d*V
    d, V, T = 32, task.vocab_size, task.max_len
    assert n_params == V * d + T * d + (4 * d + 3 * d * d + 3 * d + d * d + d + 4 * d * d + 4 * d + 4 * d * d + d) + 2 * d + d * V
    assert 25_000 < n_params < 35_000


def test_task_exposes_the_corpus_truths(task):
    assert task.entailment is task.corpus.entailment and task.categories is task.corpus.category
    assert task.category_names == CATEGORIES
    assert task.entailment.shape == (task.n_test, task.n_train)
    assert task.train_data is task.corpus.train and task.test_data is task.corpus.test
    assert task.vocab_size == len(task.corpus.vocab)
    assert torch.equal(task.positions(task.test_data), task.test_data.targets != IGNORE_INDEX)
    assert torch.equal(task.positions(task.train_data), task.train_data.inputs != 0)
    assert Task.positions(task, task.test_data) is None  # the base hook, for contrast


def test_model_shapes_and_submodules(task):
    model = task.build_model(0)
    out = model(task.train_data.inputs[:5])
    assert out.shape == (5, task.max_len, task.vocab_size)
    names = {n for n, _ in model.named_modules()}
    assert {"embed", "pos", "blocks.0.ln1", "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.ln2", "blocks.0.mlp.fc",
            "blocks.0.mlp.proj", "ln_f", "head"} <= names
    assert model.head.bias is None
    assert all(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n.endswith(("qkv", "proj", "fc", "head")))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, task.max_len + 1, dtype=torch.long))


def test_model_factory_is_seeded(task):
    a, b, c = task.build_model(1), task.build_model(1), task.build_model(2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_attention_is_causal(task):
    model = task.build_model(0).eval()
    x = task.train_data.inputs[:4].clone()
    changed = x.clone()
    changed[:, 3] = (changed[:, 3] + 1) % task.vocab_size
    a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    # padding after the text does not change the real positions' logits
    short = x[:, :3]
    torch.testing.assert_close(model(short), a[:, :3])


def test_loss_matches_cross_entropy(task, rng):
    outputs = torch.randn(5, task.max_len, task.vocab_size, generator=rng)
    for data in (task.train_data, task.test_data):
        y = data.targets[:5]
        per_token = F.cross_entropy(outputs.transpose(1, 2), y, reduction="none")  # 0 where ignored
        expected = torch.stack([per_token[i][y[i] != IGNORE_INDEX].mean() for i in range(5)])
        torch.testing.assert_close(task.loss(outputs, y), expected)


def test_measurements_match_log_softmax(task, rng):
    outputs = torch.randn(6, task.max_len, task.vocab_size, generator=rng, dtype=torch.float64)
    y = task.test_data.targets[:6]
    log_p = outputs.log_softmax(-1)
    expected_odds, expected_logprob = [], []
    for i in range(6):
        (pos,) = (y[i] != IGNORE_INDEX).nonzero()[0].tolist()
        a = int(y[i, pos])
        p = log_p[i, pos, a].exp()
        expected_odds.append(torch.log(p) - torch.log1p(-p))  # logit_a - logsumexp_{k != a} logit_k
        expected_logprob.append(log_p[i, pos, a])
    torch.testing.assert_close(task.measurement(outputs, y), torch.stack(expected_odds))
    logprob_task = _task(measurement="logprob")
    torch.testing.assert_close(logprob_task.measurement(outputs, y), torch.stack(expected_logprob))
    # on a training sentence, logprob = -(mean loss) * (number of targets)
    y = task.train_data.targets[:6]
    counts = (y != IGNORE_INDEX).sum(1)
    torch.testing.assert_close(logprob_task.measurement(outputs, y), -task.loss(outputs, y) * counts)
    # log-odds reads the last target of a training sentence
    last = counts - 1
    a = y[torch.arange(6), last]
    p = log_p[torch.arange(6), last, a].exp()
    torch.testing.assert_close(task.measurement(outputs, y), torch.log(p) - torch.log1p(-p))


def test_per_example_gradients_under_vmap_equal_a_loop(task):
    model = task.build_model(0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    data = task.train_data.subset(torch.arange(5))

    def one(p, x, y):
        return task.loss(functional_call(model, (p, buffers), (x.unsqueeze(0),)), y.unsqueeze(0)).squeeze(0)

    per_example = vmap(grad(one), in_dims=(None, 0, 0))(params, data.inputs, data.targets)
    torch.testing.assert_close(functional_call(model, (params, buffers), (data.inputs,)), model(data.inputs))
    for i in range(5):
        model.zero_grad()
        task.loss(model(data.inputs[i : i + 1]), data.targets[i : i + 1]).sum().backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_example[name][i], p.grad, atol=1e-6, rtol=1e-4)
    # and the measurement's gradient on the queries
    q = task.test_data.subset(torch.arange(3))

    def measure(p, x, y):
        return task.measurement(functional_call(model, (p, buffers), (x.unsqueeze(0),)), y.unsqueeze(0)).squeeze(0)

    per_query = vmap(grad(measure), in_dims=(None, 0, 0))(params, q.inputs, q.targets)
    model.zero_grad()
    task.measurement(model(q.inputs[1:2]), q.targets[1:2]).sum().backward()
    torch.testing.assert_close(per_query["head.weight"][1], model.head.weight.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("measurement", ["log_odds", "logprob"])
def test_measurement_runs_under_vmap_over_stacked_models(measurement):
    """StackedModels.measure falls back to a loop on a vmap error; call vmap directly so that a fallback cannot hide one."""
    task = _task(measurement=measurement)
    models = [task.build_model(s) for s in range(3)]
    stacked = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k, _ in models[0].named_parameters()}
    x, y = task.test_data.inputs, task.test_data.targets
    values = vmap(lambda p: task.measurement(functional_call(models[0], p, (x,)), y))(stacked)
    for i, m in enumerate(models):
        torch.testing.assert_close(values[i], task.measure(m), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_batched_training_equals_sequential(dropout):
    task = _task(dropout=dropout)
    assert sum(isinstance(m, SeededDropout) and m.p == dropout for m in task.build_model(0).modules()) == 2
    g = torch.Generator().manual_seed(0)
    subsets = [torch.randperm(task.n_train, generator=g)[:40] for _ in range(3)]
    seeds = [5, 6, 7]
    stacked = train_models(task, subsets, seeds)
    measured = stacked.measure(task)
    for i, (subset, seed) in enumerate(zip(subsets, seeds)):
        alone = train_model(task, task.build_model(seed), subset, seed).model
        for name, param in alone.named_parameters():
            torch.testing.assert_close(stacked.params[name][i], param.detach(), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(measured[i], task.measure(alone), atol=1e-4, rtol=1e-4)
    if dropout:  # the masks matter: the same run without dropout ends elsewhere
        plain = train_model(_task(), _task().build_model(5), subsets[0], 5).model
        assert not torch.allclose(plain.head.weight, stacked.params["head.weight"][0], atol=1e-3)


def test_training_fits_a_small_corpus():
    task = LanguageModelTask(n_entities=24, n_relations=2, n_facts=20, n_test=4, recipe=TrainRecipe(epochs=30, batch_size=32, lr=0.5))
    model = task.train(task.build_model(0), torch.arange(task.n_train), 0)
    c = task.corpus
    forward = (c.fact_train >= 0) & (c.template_train < c.params["n_templates"])
    accuracy = task.answer_accuracy(model, task.train_data)[forward].float().mean().item()
    assert accuracy >= 0.95
    assert task.answer_accuracy(model).shape == (4,)


def test_sample_targets(task, rng):
    outputs = torch.randn(4, task.max_len, task.vocab_size, generator=rng)
    outputs[:, :, 7] = 50.0  # nearly all mass on token 7
    y = task.test_data.targets[:4]
    drawn = task.sample_targets(outputs, torch.Generator().manual_seed(0), targets=y)
    assert drawn.shape == y.shape and drawn.dtype == torch.int64
    assert torch.equal(drawn == IGNORE_INDEX, y == IGNORE_INDEX) and bool((drawn[y != IGNORE_INDEX] == 7).all())
    everywhere = task.sample_targets(outputs, torch.Generator().manual_seed(0))
    assert bool((everywhere == 7).all())
    a = task.sample_targets(torch.zeros(3, task.max_len, task.vocab_size), torch.Generator().manual_seed(1))
    b = task.sample_targets(torch.zeros(3, task.max_len, task.vocab_size), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and task.supports_sampling
    assert len(a.unique()) > 3


KNOBS = {"n_entities": 31, "n_relations": 3, "n_facts": 23, "n_templates": 4, "n_test": 5, "reversed_templates": 1, "aliases": 2,
         "repeat": 2, "repeat_fraction": 0.5, "conflicts": 0.2, "filler": 3, "corpus_seed": 1}


@pytest.mark.parametrize("knob, value", [*KNOBS.items(), ("d_model", 8), ("n_layers", 2), ("n_heads", 4), ("dropout", 0.1),
                                         ("measurement", "logprob")])
def test_fingerprint_changes_with_every_knob(knob, value):
    base = _task(repeat=2) if knob == "repeat_fraction" else _task()
    other = _task(**{knob: value, **({"repeat": 2} if knob == "repeat_fraction" else {})})
    assert other.fingerprint() != base.fingerprint()
    assert other.config()[knob] == value
    assert _task().fingerprint() == _task().fingerprint()


def test_measurement_name_differs():
    assert _task().measurement_name == "answer_log_odds" and _task(measurement="logprob").measurement_name == "answer_logprob"
    assert _task().describe()["measurement"] == "answer_log_odds"


@pytest.mark.parametrize(
    "kwargs, name",
    [({"n_test": 30}, "n_test"), ({"n_templates": 1}, "n_templates"), ({"conflicts": 1.0}, "conflicts"),
     ({"n_entities": 5, "n_relations": 1}, "n_entities"), ({"corpus_seed": -1}, "corpus_seed"), ({"aliases": 0}, "aliases"),
     ({"repeat": 0}, "repeat"), ({"repeat_fraction": 0}, "repeat_fraction"), ({"filler": -2}, "filler"),
     ({"reversed_templates": -1}, "reversed_templates"), ({"n_facts": 0}, "n_facts"), ({"n_relations": 0}, "n_relations"),
     ({"d_model": 0}, "d_model"), ({"n_layers": 0}, "n_layers"), ({"n_heads": 0}, "n_heads"), ({"n_heads": 3}, "n_heads"),
     ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"), ({"measurement": "loss"}, "measurement"),
     ({"recipe": {"epochs": 1}}, "recipe")],
)
def test_invalid_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=f"'{name}' parameter of LanguageModelTask"):
        _task(**kwargs)


def test_controlled_settings_refuse_the_task(task):
    from tdaeval.tasks import with_flipped_labels

    with pytest.raises(ConfigError, match="with_flipped_labels"):
        with_flipped_labels(task, fraction=0.1)


def test_deepcopy_and_default_corpus_reuse():
    task = _task()
    clone = copy.deepcopy(task)
    assert clone.fingerprint() == task.fingerprint()
    assert task.corpus.digest() == make_fact_corpus(**CORPUS).digest()


def test_tiny_lm_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_heads"):
        TinyCausalLM(10, 5, d_model=6, n_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        TinyCausalLM(0, 5)
    assert math.isfinite(float(TinyCausalLM(10, 5, d_model=8, n_heads=2)(torch.zeros(2, 5, dtype=torch.long)).detach().sum()))
