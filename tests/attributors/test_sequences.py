"""Factorised ``nn.Linear`` gradients on sequences ``[batch, positions, features]`` equal dense per-example gradients.

The model here is a one-block causal transformer written for the test (embedding and learned positions, LayerNorm,
single-head causal attention, an MLP, an untied head without bias): every ``nn.Linear`` sees ``[n, T, d]`` inputs. Its
task is a causal LM: the loss is the per-example mean token NLL over targets ``!= -100``, the measurement the log-odds
of the target at the last non-ignored position. The reference is ``vmap(grad)`` or a literal autograd loop.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdaeval.attributors import _linear, get
from tdaeval.attributors._linear import collect_gradients, factored_dot, factored_layers, factored_sq_norms
from tdaeval.attributors._tracked import linear_parameter_names
from tdaeval.attributors.gradient import per_sample_grads
from tdaeval.datasets import Data
from tdaeval.task import Task, TrainRecipe
from tdaeval.training import train_model

IGNORE = -100
PAD = 0


class TinySeqModel(nn.Module):
    """Embedding + positions → LayerNorm → causal attention (qkv, proj) → LayerNorm → MLP (fc, out) → head; ``[n, T, V]``."""

    def __init__(self, vocab: int, max_len: int, d: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        h = self.embed(x) + self.pos(torch.arange(t, device=x.device))
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        att = q @ k.transpose(1, 2) / math.sqrt(self.d)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        h = h + self.proj(att @ v)
        h = h + self.out(torch.tanh(self.fc(self.ln2(h))))
        return self.head(h)


class SeqTask(Task):
    """A causal LM on random token sentences: train rows are whole sentences, test rows a prompt and one answer."""

    name = "seq_test"
    measurement_name = "log_odds"

    def __init__(self, n_train: int = 24, n_test: int = 5, max_len: int = 6, vocab: int = 11, d: int = 8,
                 data_seed: int = 0, recipe: TrainRecipe | None = None) -> None:
        self.max_len, self.vocab, self.d, self.data_seed = max_len, vocab, d, data_seed
        self.recipe = recipe or TrainRecipe(epochs=3, batch_size=8, lr=0.2)
        g = torch.Generator().manual_seed(data_seed)
        self.train_data = self._rows(n_train, g, test=False)
        self.test_data = self._rows(n_test, g, test=True)

    def _rows(self, n: int, g: torch.Generator, test: bool) -> Data:
        t = self.max_len
        inputs = torch.full((n, t), PAD, dtype=torch.long)
        targets = torch.full((n, t), IGNORE, dtype=torch.long)
        for i in range(n):
            length = int(torch.randint(3, t + 2, (1,), generator=g))  # sentence of `length` tokens: length - 1 rows
            words = torch.randint(1, self.vocab, (length,), generator=g)
            inputs[i, : length - 1] = words[:-1]
            if test:
                targets[i, length - 2] = words[-1]
            else:
                targets[i, : length - 1] = words[1:]
        return Data(inputs, targets)

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return TinySeqModel(self.vocab, self.max_len, self.d)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        mask = targets != IGNORE
        logp = outputs.log_softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return -(logp * mask).sum(1) / mask.sum(1).clamp_min(1)

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        mask = targets != IGNORE
        position = (mask * torch.arange(targets.shape[1], device=targets.device)).argmax(1)  # last non-ignored
        logits = outputs.gather(1, position[:, None, None].expand(-1, 1, outputs.shape[-1])).squeeze(1)  # [n, V]
        answer = targets.gather(1, position[:, None])  # [n, 1]
        is_answer = torch.arange(outputs.shape[-1], device=outputs.device) == answer
        return logits.gather(1, answer).squeeze(1) - logits.masked_fill(is_answer, float("-inf")).logsumexp(-1)

    def sample_targets(self, outputs: Tensor, generator: torch.Generator) -> Tensor:
        logits = outputs.detach().cpu()
        drawn = torch.multinomial(logits.reshape(-1, logits.shape[-1]).softmax(-1), 1, generator=generator)
        return drawn.reshape(logits.shape[:2])  # at every position: EK-FAC keeps the observed IGNORE outside positions()

    def positions(self, data: Data) -> Tensor:
        return data.targets != IGNORE

    def config(self) -> dict[str, Any]:
        return {"max_len": self.max_len, "vocab": self.vocab, "d": self.d, "data_seed": self.data_seed}


@pytest.fixture(scope="module")
def seq_run():
    task = SeqTask()
    return task, train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)


def badness(task: Task):
    return lambda o, y: -task.measurement(o, y)


def loop_grads(model: nn.Module, objective, data: Data, names: list[str] | None = None, params: dict | None = None) -> Tensor:
    """Per-example gradients by a literal autograd loop, of the parameters ``names`` (default: all), float64."""
    model = copy.deepcopy(model).double().eval()
    if params is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name])
    named = dict(model.named_parameters())
    names = list(named) if names is None else names
    rows = []
    for i in range(len(data)):
        x = data.inputs[i : i + 1]
        value = objective(model(x.double() if x.is_floating_point() else x), data.targets[i : i + 1]).sum()
        grads = torch.autograd.grad(value, [named[k] for k in names])
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def test_model_and_task_behave_like_a_causal_lm(seq_run):
    task, run = seq_run
    out = run.model(task.train_data.inputs)
    assert out.shape == (task.n_train, task.max_len, task.vocab)
    # the loss is the mean NLL over non-ignored targets (torch's cross_entropy with ignore_index as reference)
    ce = F.cross_entropy(out.transpose(1, 2), task.train_data.targets, ignore_index=IGNORE, reduction="none")
    counts = (task.train_data.targets != IGNORE).sum(1)
    torch.testing.assert_close(task.loss(out, task.train_data.targets), ce.sum(1) / counts)
    # causal: changing a later token leaves earlier logits unchanged
    x = task.train_data.inputs[:2].clone()
    x[:, -1] = 3
    torch.testing.assert_close(run.model(x)[:, :-1], out[:2, :-1])


@pytest.mark.parametrize("storage", ["factors", "materialized", None])
@pytest.mark.parametrize("method", ["positions", "materialize", None])
def test_sequence_factors_give_the_dense_products(seq_run, monkeypatch, storage, method):
    """Every storage and product on [n, T, d] inputs equals vmap(grad) restricted to the nn.Linear parameters."""
    task, run = seq_run
    monkeypatch.setattr(_linear, "_BLOCK_ELEMENTS", 500)  # several chunks on each side of every product
    model = run.model.eval()
    names = linear_parameter_names(model)
    layers = factored_layers(model, tracked=names)
    assert [name for name, _ in layers] == ["qkv", "proj", "fc", "out", "head"]
    objective = badness(task)
    test = collect_gradients(model, layers, objective, task.test_data, chunk_size=2, storage=storage)
    train = collect_gradients(model, layers, task.loss, task.train_data, chunk_size=10, storage=storage)
    assert train["qkv"].positions in (0, task.max_len)
    dense_test = per_sample_grads(model, objective, task.test_data, tracked=names).double()
    dense_train = per_sample_grads(model, task.loss, task.train_data, tracked=names).double()
    torch.testing.assert_close(factored_dot(test, train, method).double(), dense_test @ dense_train.T, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(factored_sq_norms(train, method).double(), (dense_train**2).sum(1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layer", ["qkv", "proj", "fc", "out", "head"])
def test_every_layer_kind_in_float64_is_exact(seq_run, layer):
    """Each layer (with and without bias, before and after attention) alone, float64, against a literal autograd loop."""
    task, run = seq_run
    model = copy.deepcopy(run.model).double().eval()
    own = [n for n in linear_parameter_names(model) if n.split(".")[0] == layer]
    layers = factored_layers(model, tracked=own)
    assert [name for name, _ in layers] == [layer]
    for storage in ("factors", "materialized"):
        train = collect_gradients(model, layers, task.loss, task.train_data, storage=storage, dtype=torch.float64)
        test = collect_gradients(model, layers, badness(task), task.test_data, storage=storage, dtype=torch.float64)
        g_train = loop_grads(model, task.loss, task.train_data, own)
        g_test = loop_grads(model, badness(task), task.test_data, own)
        torch.testing.assert_close(factored_dot(test, train), g_test @ g_train.T, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(factored_sq_norms(train), (g_train**2).sum(1), atol=1e-12, rtol=1e-10)


def test_padding_positions_have_zero_output_gradients(seq_run):
    task, run = seq_run
    layers = factored_layers(run.model, tracked=linear_parameter_names(run.model))
    grads = collect_gradients(run.model.eval(), layers, task.loss, task.train_data, storage="factors")
    rows = (task.train_data.targets != IGNORE).sum(1)  # real positions: 0 .. rows - 1
    for name, held in grads.items():
        for i, r in enumerate(rows.tolist()):
            assert held.s[i, :r].abs().sum() > 0, name
            assert held.s[i, r:].abs().sum() == 0, name
    assert bool((rows < task.max_len).any())  # some rows do have padding


@pytest.mark.parametrize("name", ["grad_dot", "grad_cos", "tracin"])
def test_gradient_attributors_factorise_sequences(seq_run, name):
    """params='linear' with factorized=True equals vmap(grad) (factorized=False) and a literal loop over the subset."""
    task, run = seq_run
    fit = dict(checkpoints=run.checkpoints)
    factored = get(name, params="linear", factorized=True).fit(task, run.model, task.train_data, **fit)
    dense = get(name, params="linear", factorized=False).fit(task, run.model, task.train_data, **fit)
    held = factored.train_grads_[0] if name == "tracin" else factored.train_grads_
    assert held.dense is None and set(held.factors) == {"qkv", "proj", "fc", "out", "head"}
    scores = factored.attribute(task.test_data)
    torch.testing.assert_close(scores, dense.attribute(task.test_data), atol=1e-6, rtol=1e-5)
    names = linear_parameter_names(run.model)
    points = [(1.0, None)] if name != "tracin" else [(c.lr, c.params) for c in run.checkpoints]
    expected = 0
    for lr, params in points:
        g_test = loop_grads(run.model, badness(task), task.test_data, names, params)
        g_train = loop_grads(run.model, task.loss, task.train_data, names, params)
        if name == "grad_cos":
            g_test, g_train = g_test / g_test.norm(dim=1, keepdim=True), g_train / g_train.norm(dim=1, keepdim=True)
        expected = expected + lr * g_test @ g_train.T
    torch.testing.assert_close(scores.double(), expected, atol=1e-6, rtol=1e-4)


def test_self_influence_on_sequences_is_the_diagonal(seq_run):
    task, run = seq_run
    attributor = get("grad_dot", params="linear").fit(task, run.model, task.train_data)
    full = attributor.attribute(task.train_data)
    torch.testing.assert_close(attributor.self_influence(), torch.diagonal(full), atol=1e-6, rtol=1e-5)
