"""The one-step effect matrix of tail-patch (issue #16, item 5).

Oracles: Quanda's algorithm written out literally (deep-copy the model, a
fresh ``torch.optim`` optimizer, one step on one training example's loss,
measure the queries), for every optimizer and test function, on digits
logistic regression and on a tiny sequence model defined here; ``Δ/η`` →
Grad-Dot's scores as ``η → 0`` in float64; the store (cached = fresh, a
changed argument recomputes).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdaeval.attributors import get
from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, IncompleteGroundTruth
from tdaeval.groundtruth.sharding import build_mode
from tdaeval.groundtruth.tail_patch import (
    OneStepEffectSpec,
    OneStepEffectTruth,
    build_one_step_effects,
    one_step_effects,
    one_step_key,
    one_step_objective,
)
from tdaeval.task import Task, TrainRecipe
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model

IGNORE = -100


# ----------------------------------------------------------------------------- a tiny sequence task


class TinySequenceModel(nn.Module):
    """Embedding → Linear → tanh → head: logits ``[n, T, V]`` (every position on its own)."""

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.mix(self.embed(x))))


class SequenceTask(Task):
    """Next-token prediction on random token rows: loss = per-example mean token NLL over targets != -100,
    measurement = log-odds of the target at the last non-ignored position."""

    name = "tiny_sequence"
    measurement_name = "log_odds"

    def __init__(self, n_train: int = 24, n_test: int = 6, vocab: int = 11, length: int = 6, width: int = 8, seed: int = 0,
                 recipe: TrainRecipe | None = None) -> None:
        self.vocab, self.length, self.width, self.seed = vocab, length, width, seed
        self.recipe = recipe if recipe is not None else TrainRecipe(epochs=20, batch_size=8, lr=0.5)
        g = torch.Generator().manual_seed(seed)
        T = length - 1

        def rows(n: int, train: bool) -> Data:
            inputs = torch.zeros(n, T, dtype=torch.long)
            targets = torch.full((n, T), IGNORE, dtype=torch.long)
            for r in range(n):
                size = int(torch.randint(3, length + 1, (1,), generator=g))  # sentence length
                words = torch.randint(1, vocab, (size,), generator=g)
                inputs[r, : size - 1] = words[:-1]
                if train:
                    targets[r, : size - 1] = words[1:]
                else:
                    targets[r, size - 2] = words[-1]  # one answer position
            return Data(inputs, targets)

        self.train_data, self.test_data = rows(n_train, True), rows(n_test, False)

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return TinySequenceModel(self.vocab, self.width)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        nll = F.cross_entropy(outputs.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")  # [n, T]
        real = (targets != IGNORE).to(outputs.dtype)
        return (nll * real).sum(1) / real.sum(1).clamp_min(1.0)

    def measurement(self, outputs: Tensor, targets: Tensor) -> Tensor:
        real = targets != IGNORE
        position = (real * torch.arange(targets.shape[1], device=targets.device)).argmax(1)  # last non-ignored
        rows = torch.arange(targets.shape[0], device=targets.device)
        logits = outputs[rows, position]  # [n, V]
        answer = targets[rows, position]
        correct = logits.gather(1, answer[:, None]).squeeze(1)
        others = logits.scatter(1, answer[:, None], float("-inf"))
        return correct - torch.logsumexp(others, dim=1)

    def positions(self, data: Data) -> Tensor:
        return data.targets != IGNORE

    def config(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "length": self.length, "width": self.width, "seed": self.seed}


# ----------------------------------------------------------------------------- fixtures


def _trained(task: Task, seed: int = 0) -> nn.Module:
    return train_model(task, task.build_model(seed), torch.arange(task.n_train), seed).model


@pytest.fixture(scope="module")
def logreg() -> tuple[Task, nn.Module]:
    task = DigitsTask(model="logreg", n_train=60, n_test=8, recipe=TrainRecipe(epochs=10, batch_size=30, lr=0.5))
    return task, _trained(task)


@pytest.fixture(scope="module")
def sequence() -> tuple[Task, nn.Module]:
    task = SequenceTask()
    return task, _trained(task)


@pytest.fixture(params=["logreg", "sequence"])
def setting(request) -> tuple[Task, nn.Module]:
    return request.getfixturevalue(request.param)


# ----------------------------------------------------------------------------- the literal loop (Quanda's algorithm)


def _floating(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.to(dtype) if t.dtype.is_floating_point else t


def literal_effects(task: Task, model: nn.Module, queries: list[int], examples: list[int], *, eta: float, optimizer: str,
                    delta: str, weight_decay: float = 0.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``[len(queries), len(examples)]``: deep copy, fresh optimizer, one step on one example's loss, measure, subtract."""
    if delta == "measurement":
        f = task.measurement
    elif delta == "logprob":
        def f(out, y):
            return -task.loss(out, y)
    else:
        def f(out, y):
            return torch.exp(-task.loss(out, y))
    base_model = copy.deepcopy(model).to(dtype).eval()
    qx = _floating(task.test_data.inputs[queries], dtype)
    qy = _floating(task.test_data.targets[queries], dtype)
    with torch.no_grad():
        before = f(base_model(qx), qy)
    out = torch.zeros(len(queries), len(examples), dtype=dtype)
    for column, i in enumerate(examples):
        stepped = copy.deepcopy(base_model)
        trainable = [p for p in stepped.parameters() if p.requires_grad]
        if optimizer == "sgd":
            opt = torch.optim.SGD(trainable, lr=eta, weight_decay=weight_decay)
        elif optimizer == "adam":
            opt = torch.optim.Adam(trainable, lr=eta, weight_decay=weight_decay)
        else:
            opt = torch.optim.AdamW(trainable, lr=eta, weight_decay=weight_decay)
        opt.zero_grad()
        x = _floating(task.train_data.inputs[i : i + 1], dtype)
        y = _floating(task.train_data.targets[i : i + 1], dtype)
        task.loss(stepped(x), y).sum().backward()
        opt.step()
        with torch.no_grad():
            out[:, column] = f(stepped(qx), qy) - before
    return out


QUERIES, EXAMPLES = [0, 3, 5], [1, 4, 7, 10, 13]


def _subset(data: Data, index: list[int]) -> Data:
    return Data(data.inputs[index], data.targets[index])


@pytest.mark.parametrize("delta", ["measurement", "logprob", "prob"])
@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 0.0), ("sgd", 0.05), ("adam", 0.0), ("adamw", 0.01)])
def test_vectorised_effects_equal_the_copy_and_step_loop(setting, optimizer, weight_decay, delta):
    task, model = setting
    eta = 0.05 if optimizer == "sgd" else 0.01
    spec = OneStepEffectSpec(eta=eta, optimizer=optimizer, delta=delta, weight_decay=weight_decay, dtype="float64")
    fast = one_step_effects(task, model, spec, train=_subset(task.train_data, EXAMPLES), test=_subset(task.test_data, QUERIES), chunk_size=2)
    slow = literal_effects(task, model, QUERIES, EXAMPLES, eta=eta, optimizer=optimizer, delta=delta, weight_decay=weight_decay)
    assert fast.dtype == torch.float64 and fast.shape == (len(QUERIES), len(EXAMPLES))
    assert float(slow.abs().max()) > 1e-4  # a real effect, not zeros on both sides
    torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-10)


def test_the_full_matrix_in_float32_matches_the_loop_on_its_entries(sequence):
    task, model = sequence
    spec = OneStepEffectSpec(eta=0.05)
    full = one_step_effects(task, model, spec, chunk_size=7)  # uneven chunks
    assert full.dtype == torch.float32 and full.shape == (task.n_test, task.n_train)
    slow = literal_effects(task, model, QUERIES, EXAMPLES, eta=0.05, optimizer="sgd", delta="measurement", dtype=torch.float32)
    torch.testing.assert_close(full[QUERIES][:, EXAMPLES], slow, rtol=1e-3, atol=2e-5)


def test_progress_starts_at_zero_and_counts_every_training_example(logreg):
    """A progress display reads the first report as what was already stored: before any work it must be 0."""
    task, model = logreg
    reports: list[tuple[int, int]] = []
    one_step_effects(task, model, OneStepEffectSpec(eta=0.05), chunk_size=25, progress=lambda done, total: reports.append((done, total)))
    assert reports == [(0, 60), (25, 60), (50, 60), (60, 60)]


def test_frozen_parameters_do_not_move(sequence):
    task, model = sequence
    frozen = copy.deepcopy(model)
    frozen.embed.weight.requires_grad_(False)
    spec = OneStepEffectSpec(eta=0.01, optimizer="adamw", weight_decay=0.1, dtype="float64")
    fast = one_step_effects(task, frozen, spec, train=_subset(task.train_data, EXAMPLES), test=_subset(task.test_data, QUERIES))
    slow = literal_effects(task, frozen, QUERIES, EXAMPLES, eta=0.01, optimizer="adamw", delta="measurement", weight_decay=0.1)
    torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-10)
    everything = one_step_effects(task, model, spec, train=_subset(task.train_data, EXAMPLES), test=_subset(task.test_data, QUERIES))
    assert not torch.allclose(fast, everything)  # freezing changed the step
    assert one_step_key(task, frozen, spec)[1]["tracked"] == ["mix.weight", "mix.bias", "head.weight"]
    assert one_step_key(task, model, spec)[1]["tracked"] == "all"


def test_dropout_is_off_and_the_model_mode_is_restored():
    task = DigitsTask(n_train=30, n_test=5, hidden=8, dropout=0.5, recipe=TrainRecipe(epochs=2, batch_size=10))
    model = _trained(task)
    spec = OneStepEffectSpec(eta=0.01, dtype="float64")
    evaluated = one_step_effects(task, model, spec)
    model.train()
    again = one_step_effects(task, model, spec)
    assert model.training
    torch.testing.assert_close(again, evaluated, rtol=0, atol=0)
    slow = literal_effects(task, model, [0, 2], [3, 9], eta=0.01, optimizer="sgd", delta="measurement")  # eval mode
    torch.testing.assert_close(evaluated[[0, 2]][:, [3, 9]], slow, rtol=1e-8, atol=1e-10)


def _pearson(a: Tensor, b: Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def test_effects_over_eta_tend_to_grad_dot_as_eta_goes_to_zero(setting):
    task, model = setting
    eta = 1e-6
    effects = one_step_effects(task, model, OneStepEffectSpec(eta=eta, dtype="float64"))
    grad_dot = get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data).double()
    ratio = effects / eta  # the measurement is higher-is-better: Δ ≈ η · ∇f·(−∇L) = η · grad_dot
    assert _pearson(ratio, grad_dot) > 0.999
    torch.testing.assert_close(ratio, grad_dot, rtol=1e-3, atol=1e-3 * float(grad_dot.abs().max()))
    # at a large step the linearisation fails: the check above can tell
    far = one_step_effects(task, model, OneStepEffectSpec(eta=20.0, dtype="float64")) / 20.0
    assert not torch.allclose(far, grad_dot, rtol=1e-3, atol=1e-3 * float(grad_dot.abs().max()))


def test_lower_is_better_measurement_keeps_its_sign_and_gain_flips_it():
    from tdaeval.tasks import LinearRegressionTask

    task = LinearRegressionTask(n_train=30, n_test=6, n_features=4)
    model = _trained(task)
    spec = OneStepEffectSpec(eta=1e-6, dtype="float64")
    truth = build_one_step_effects(task, model, spec)
    assert truth.higher_is_better is False
    grad_dot = get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data).double()
    torch.testing.assert_close(-truth.effects / 1e-6, grad_dot, rtol=1e-3, atol=1e-3 * float(grad_dot.abs().max()))
    torch.testing.assert_close(truth.gain, -truth.effects.double())
    assert one_step_objective(task, "logprob")[1] is True


# ----------------------------------------------------------------------------- the store


def test_cached_equals_fresh_and_a_changed_argument_recomputes(logreg, tmp_path):
    task, model = logreg
    store = ArtifactStore(tmp_path)
    spec = OneStepEffectSpec(eta=0.005)
    first = build_one_step_effects(task, model, spec, store)
    assert first.provenance["reused"] is False and len(store.keys()) == 1
    second = build_one_step_effects(task, model, spec, store)
    assert second.provenance["reused"] is True and len(store.keys()) == 1
    fresh = one_step_effects(task, model, spec)
    torch.testing.assert_close(second.effects, fresh, rtol=0, atol=0)
    torch.testing.assert_close(first.effects, fresh, rtol=0, atol=0)
    changed = {
        "eta": OneStepEffectSpec(eta=0.01),
        "optimizer": OneStepEffectSpec(eta=0.005, optimizer="adamw"),
        "delta": OneStepEffectSpec(eta=0.005, delta="logprob"),
        "weight_decay": OneStepEffectSpec(eta=0.005, weight_decay=0.1),
        "dtype": OneStepEffectSpec(eta=0.005, dtype="float64"),
    }
    for count, (name, other) in enumerate(changed.items(), start=2):
        rebuilt = build_one_step_effects(task, model, other, store)
        assert rebuilt.provenance["reused"] is False, name
        assert len(store.keys()) == count, name
        assert not torch.equal(rebuilt.effects.double(), first.effects.double()), name
    # another model (another seed) is another key too
    other_model = _trained(task, seed=1)
    assert one_step_key(task, other_model, spec)[0] != one_step_key(task, model, spec)[0]
    assert one_step_key(task, other_model, spec)[1]["model_seed"] == 1
    assert build_one_step_effects(task, other_model, spec, store).provenance["reused"] is False


def test_plan_only_computes_nothing_and_counts(logreg, tmp_path):
    task, model = logreg
    store = ArtifactStore(tmp_path)
    spec = OneStepEffectSpec(eta=0.005)
    with build_mode(plan_only=True) as mode, pytest.raises(IncompleteGroundTruth):
        build_one_step_effects(task, model, spec, store)
    assert mode.counts == [{"kind": "tail_patch", "jobs": 1, "stored": 0, "trained": 0, "missing": 1}]
    assert store.keys() == []
    build_one_step_effects(task, model, spec, store)
    with build_mode(plan_only=True) as mode:
        build_one_step_effects(task, model, spec, store)
    assert mode.counts == [{"kind": "tail_patch", "jobs": 1, "stored": 1, "trained": 0, "missing": 0}]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("field,value", [("eta", 0.0), ("eta", -1.0), ("eta", True), ("optimizer", "rmsprop"), ("delta", "loss"),
                                         ("weight_decay", -0.1), ("eps", 0.0), ("dtype", "float16")])
def test_a_bad_spec_is_a_config_error_naming_the_parameter(field, value):
    with pytest.raises(ConfigError, match=rf"^The '{field}' parameter of tail-patch must be .* instead\.$"):
        OneStepEffectSpec(**{"eta": 0.01, field: value})


def test_non_finite_effects_are_refused(logreg):
    task, model = logreg
    with pytest.raises(ConfigError, match="not finite.*lower 'eta'"):
        build_one_step_effects(task, model, OneStepEffectSpec(eta=1e38))


def test_the_truth_checks_its_fields():
    spec = OneStepEffectSpec(eta=0.1)
    with pytest.raises(ConfigError, match="'effects' field of OneStepEffectTruth must be a floating Tensor"):
        OneStepEffectTruth(torch.zeros(3, dtype=torch.long), True, spec)
    with pytest.raises(ConfigError, match="non-finite"):
        OneStepEffectTruth(torch.tensor([[0.0, float("nan")]]), True, spec)
    with pytest.raises(ConfigError, match="chunk_size"):
        one_step_effects(DigitsTask(model="logreg", n_train=10, n_test=2), nn.Linear(64, 10), spec, chunk_size=0)
