"""Representation attributors on sequences: pooled ``similarity``, per-position ``representer``, unchanged 2-D numbers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

from tdaeval.attributors import get
from tdaeval.attributors.representation import penultimate_features, pool_positions
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError
from tdaeval.task import Task, TrainRecipe
from tdaeval.training import train_model

IGNORE = -100
V, D, T = 11, 6, 5


class TinySeq(nn.Module):
    """Embedding + positions → Linear → tanh → causal running mean → head ``[n, T, V]`` (head applied per position)."""

    def __init__(self, generator: torch.Generator, head_bias: bool = False) -> None:
        super().__init__()
        self.embed, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.mix, self.head = nn.Linear(D, D), nn.Linear(D, V, bias=head_bias)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.7 * torch.randn(p.shape, generator=generator))

    def hidden(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.mix(self.embed(x) + self.pos(torch.arange(x.shape[1]))))
        return h.cumsum(1) / torch.arange(1, x.shape[1] + 1).unsqueeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(x))


class SeqTask(Task):
    """Causal-LM-like task: mean token NLL over non-ignored targets; log-odds of the last non-ignored target."""

    name = "tiny_seq"

    def __init__(self, train: Data, test: Data, with_positions: bool = True, head_bias: bool = False) -> None:
        self.train_data, self.test_data, self.recipe = train, test, TrainRecipe(epochs=1)
        self.with_positions, self.head_bias = with_positions, head_bias

    def build_model(self, seed: int) -> nn.Module:
        return TinySeq(torch.Generator().manual_seed(seed), self.head_bias)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        mask = targets != IGNORE
        nll = nn.functional.cross_entropy(outputs.transpose(1, 2), targets.clamp(min=0), reduction="none")
        return (nll * mask).sum(1) / mask.sum(1)

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        mask = targets != IGNORE
        last = (mask * torch.arange(targets.shape[1])).argmax(1)  # last non-ignored position
        logits = outputs[torch.arange(len(outputs)), last]  # [n, V]
        answer = targets[torch.arange(len(outputs)), last]
        is_answer = torch.arange(V) == answer.unsqueeze(1)
        others = torch.where(is_answer, torch.tensor(-torch.inf), logits).logsumexp(1)
        return (logits * is_answer).sum(1) - others

    def config(self) -> dict[str, Any]:
        return {"with_positions": self.with_positions, "head_bias": self.head_bias}

    def positions(self, data: Data) -> Tensor | None:
        return data.targets != IGNORE if self.with_positions else None


def _data(generator: torch.Generator) -> tuple[Data, Data]:
    """lm_spec.md-format data: 12 train sentences of 3..T+1 tokens, 4 queries (prompt, answer at the prompt's end)."""
    train_x = torch.zeros(12, T, dtype=torch.long)
    train_y = torch.full((12, T), IGNORE)
    for i in range(12):
        length = int(torch.randint(3, T + 2, (1,), generator=generator))
        words = torch.randint(1, V, (length,), generator=generator)
        train_x[i, : length - 1], train_y[i, : length - 1] = words[:-1], words[1:]
    test_x = torch.zeros(4, T, dtype=torch.long)
    test_y = torch.full((4, T), IGNORE)
    for q in range(4):
        m = int(torch.randint(2, T + 1, (1,), generator=generator))
        test_x[q, :m] = torch.randint(1, V, (m,), generator=generator)
        test_y[q, m - 1] = int(torch.randint(1, V, (1,), generator=generator))
    return Data(train_x, train_y), Data(test_x, test_y)


@pytest.fixture
def seq() -> tuple[SeqTask, TinySeq]:
    train, test = _data(torch.Generator().manual_seed(0))
    task = SeqTask(train, test)
    return task, task.build_model(0).eval()


def test_pool_positions_is_the_mean_over_the_selected_positions():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(4, T, D, generator=g)
    positions = torch.rand(4, T, generator=g) < 0.5
    positions[:, 0] = True
    pooled = pool_positions(features, positions)
    for i in range(4):  # literal loop
        chosen = [features[i, t] for t in range(T) if positions[i, t]]
        torch.testing.assert_close(pooled[i], sum(chosen) / len(chosen))


def test_pool_positions_refuses_empty_rows_and_bad_masks():
    features = torch.randn(2, T, D)
    empty = torch.ones(2, T, dtype=torch.bool)
    empty[1] = False
    with pytest.raises(AttributorError, match="1 example\\(s\\) have no selected position \\(first: row 1\\)"):
        pool_positions(features, empty)
    with pytest.raises(AttributorError, match="bool tensor \\[n, T\\]"):
        pool_positions(features, torch.ones(2, T))
    with pytest.raises(AttributorError, match="bool tensor \\[n, T\\]"):
        pool_positions(features, torch.ones(2, T + 1, dtype=torch.bool))


def test_penultimate_features_keep_the_positions(seq):
    task, model = seq
    features, outputs = penultimate_features(model, task.train_data)
    with torch.no_grad():
        torch.testing.assert_close(features, model.hidden(task.train_data.inputs))
    assert outputs.shape == (task.n_train, T, V)


def test_similarity_on_a_sequence_model_is_the_cosine_of_pooled_hidden_states(seq):
    task, model = seq
    scores = get("similarity").fit(task, model, task.train_data).attribute(task.test_data)
    assert scores.shape == (task.n_test, task.n_train)

    def pooled(data: Data) -> Tensor:  # by hand: mean of the hidden states where the target is not ignored
        with torch.no_grad():
            hidden = model.hidden(data.inputs)
        rows = [hidden[i, data.targets[i] != IGNORE].mean(0) for i in range(len(data))]
        return torch.stack(rows)

    test, train = pooled(task.test_data), pooled(task.train_data)
    expected = torch.tensor([[float(nn.functional.cosine_similarity(a, b, dim=0)) for b in train] for a in test])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    # a query is its answer-predicting position alone: its embedding is that position's hidden state
    with torch.no_grad():
        hidden = model.hidden(task.test_data.inputs)
    last = (task.test_data.targets != IGNORE).float().argmax(1)
    torch.testing.assert_close(test, hidden[torch.arange(task.n_test), last])


def test_sequence_features_without_positions_are_a_clear_error(seq):
    task, model = seq
    blind = SeqTask(task.train_data, task.test_data, with_positions=False)
    with pytest.raises(AttributorError, match="'similarity'.*\\[n, T, d\\].*task SeqTask gives no positions") as err:
        get("similarity").fit(blind, model, blind.train_data)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("head_bias", [False, True])
def test_representer_on_sequences_is_the_inner_product_of_output_weight_gradients(head_bias):
    """Σ_s Σ_t per-position representer terms = ⟨∂f(z)/∂W, -∂L(z_i)/∂W⟩ (computed here with torch.func)."""
    train, test = _data(torch.Generator().manual_seed(3))
    task = SeqTask(train, test, head_bias=head_bias)
    model = task.build_model(1).eval()
    scores = get("representer").fit(task, model, train).attribute(test)
    assert scores.shape == (task.n_test, task.n_train)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def weight_grad(fn, x: Tensor, y: Tensor) -> Tensor:
        def value(weight: Tensor) -> Tensor:
            out = functional_call(model, {**params, "head.weight": weight}, (x.unsqueeze(0),))
            return fn(out, y.unsqueeze(0)).sum()

        return grad(value)(params["head.weight"]).flatten()

    measure = torch.stack([weight_grad(task.measurement, x, y) for x, y in zip(test.inputs, test.targets)])
    loss = torch.stack([weight_grad(task.loss, x, y) for x, y in zip(train.inputs, train.targets)])
    expected = measure @ (-loss).T
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
    assert (scores != 0).all()  # every pair gets a term: the test is not vacuous


def _old_features(model: nn.Module, data: Data) -> tuple[Tensor, Tensor]:
    """The output layer's input ``[n, d]`` and the outputs, the way the attributors read them before pooling existed."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[Tensor] = []
    handle = linear.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    with torch.no_grad():
        outputs = model.eval()(data.inputs)
    handle.remove()
    return torch.cat(captured).reshape(len(data), -1).float(), outputs


@pytest.mark.parametrize("fixture", ["small_digits", "small_logreg"])
def test_two_dimensional_features_give_unchanged_numbers(request, fixture):
    task = request.getfixturevalue(fixture)
    model = train_model(task, task.build_model(0), torch.arange(task.n_train), 0).model
    f_train, out_train = _old_features(model, task.train_data)
    f_test, out_test = _old_features(model, task.test_data)
    similarity = get("similarity").fit(task, model, task.train_data).attribute(task.test_data)
    expected = nn.functional.normalize(f_test, dim=1) @ nn.functional.normalize(f_train, dim=1).T
    assert torch.equal(similarity, expected)
    # representer, the pre-pooling formula: kernel (f_q · f_i) times direction (∂margin/∂Φ_q · α_i)
    alpha = torch.stack([-torch.func.grad(lambda o, y=y: task.loss(o.unsqueeze(0), y.unsqueeze(0)).sum())(o)
                         for o, y in zip(out_train, task.train_data.targets)])
    d_margin = torch.stack([torch.func.grad(lambda o, y=y: task.measurement(o.unsqueeze(0), y.unsqueeze(0)).sum())(o)
                            for o, y in zip(out_test, task.test_data.targets)])
    representer = get("representer").fit(task, model, task.train_data).attribute(task.test_data)
    torch.testing.assert_close(representer, (f_test @ f_train.T) * (d_margin @ alpha.T), rtol=1e-6, atol=1e-7)


# --- on the language-model task --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm():
    language = pytest.importorskip("tdaeval.tasks.language")
    task = language.LanguageModelTask(n_entities=40, n_relations=3, n_facts=30, n_test=10)
    return task, task.build_model(0).eval()


def test_similarity_on_the_language_model_pools_the_final_hidden_states(lm):
    task, model = lm
    scores = get("similarity").fit(task, model, task.train_data).attribute(task.test_data)
    assert scores.shape == (task.n_test, task.n_train)

    def pooled(data: Data) -> Tensor:  # the final LayerNorm's output (the head's input), averaged over target positions
        captured: list[Tensor] = []
        handle = model.ln_f.register_forward_hook(lambda mod, inp, out: captured.append(out))
        with torch.no_grad():
            model(data.inputs)
        handle.remove()
        mask = (data.targets != IGNORE).float()
        return (captured[0] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)

    expected = nn.functional.normalize(pooled(task.test_data), dim=1) @ nn.functional.normalize(pooled(task.train_data), dim=1).T
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_representer_on_the_language_model_is_grad_dot_on_the_head(lm):
    task, model = lm
    test, train = task.test_data.subset(torch.arange(4)), task.train_data.subset(torch.arange(0, task.n_train, 4))
    scores = get("representer").fit(task, model, train).attribute(test)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def head_grads(fn, data: Data) -> Tensor:
        def value(weight: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return fn(functional_call(model, {**params, "head.weight": weight}, (x.unsqueeze(0),)), y.unsqueeze(0)).sum()

        return torch.stack([grad(value)(params["head.weight"], x, y).flatten() for x, y in zip(data.inputs, data.targets)])

    expected = head_grads(task.measurement, test) @ (-head_grads(task.loss, train)).T
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
