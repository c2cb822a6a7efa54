"""Every registered attributor gives the same scores whatever the key order of checkpoint parameters.

A reference model restored from the store used to come back with its
checkpoint parameters in the store's (sorted) key order, and Source flattened
training-side gradients in that order and test-side ones in the model's: its
scores were wrong every second run. These registry-wide tests fit each
attributor on a freshly trained reference and on the same reference restored
from the store, and on checkpoints whose parameters are given in a shuffled
key order; the scores must agree.
"""

from __future__ import annotations

import functools
from unittest import mock

import pytest
import torch

from tdaeval.attributors import Attribution, get, names
from tdaeval.groundtruth.store import ArtifactStore
from tdaeval.suites.runner import train_reference
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask
from tdaeval.training import Checkpoint
from tests.attributors._contract import refuses

N_CHECKPOINTS = 2

# Adapters ("library.method") import their library and are the slowest: they run with the slow tests.
NAMES = [pytest.param(name, marks=pytest.mark.slow) if "." in name else name for name in names()]


def _attributor(name: str):
    """A registered attributor with its contract parameters; adapters whose library is missing are skipped."""
    from tdaeval.attributors.adapters import AdapterAttributor

    cls = type(get(name))
    if issubclass(cls, AdapterAttributor) and not cls.available():
        pytest.skip(f"{name}: optional library {cls.library!r} not installed (extra {cls.extra!r})")
    return get(name, **cls.contract_params)


@functools.lru_cache(maxsize=1)
def _setting():
    """A small digits MLP trained once fresh, and the same reference restored from a store."""
    import tempfile

    task = DigitsTask(n_train=80, n_test=6, hidden=8, recipe=TrainRecipe(epochs=2, batch_size=32))
    store = ArtifactStore(tempfile.mkdtemp(prefix="tdaeval-order-"))
    fresh = train_reference(task, seed=0, n_checkpoints=N_CHECKPOINTS, store=store)

    def no_training(*args, **kwargs):
        raise AssertionError("the second train_reference must restore from the store, not train")

    with mock.patch("tdaeval.suites.runner.train_model", no_training):
        restored = train_reference(task, seed=0, n_checkpoints=N_CHECKPOINTS, store=store)
    return task, fresh, restored


@functools.lru_cache(maxsize=None)
def _fresh_scores(name: str) -> torch.Tensor:
    task, (model, checkpoints), _ = _setting()
    return _scores(name, task, model, checkpoints)


def _scores(name, task, model, checkpoints) -> torch.Tensor | None:
    attributor = _attributor(name)
    if refuses(attributor, task):  # defined on other tasks only: nothing to compare
        return None
    result = attributor.fit(task, model, task.train_data, checkpoints=checkpoints).attribute(task.test_data)
    return (result.mean if isinstance(result, Attribution) else result).double()


def _assert_same(name: str, expected: torch.Tensor | None, actual: torch.Tensor | None) -> None:
    if expected is None or actual is None:
        assert expected is None and actual is None, name
        return
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")


def test_a_restored_reference_equals_a_fresh_one_parameter_by_parameter_in_model_order():
    _, (model, checkpoints), (restored_model, restored_checkpoints) = _setting()
    assert restored_model is not model and len(restored_checkpoints) == len(checkpoints) == N_CHECKPOINTS
    order = [k for k, _ in model.named_parameters()]
    assert sorted(order) != order  # the store's sorted order differs from the model's: the case that went wrong
    for fresh, restored in zip(checkpoints, restored_checkpoints):
        assert list(restored.params) == order
        assert (restored.epoch, restored.lr) == (fresh.epoch, fresh.lr)
        assert all(torch.equal(restored.params[k], fresh.params[k]) for k in order)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored_model.state_dict().values()))


# The 2-epoch MLP is far from a minimum: CG meets negative curvature and says so.
@pytest.mark.filterwarnings("ignore:Influence\\(solver='cg'\\)")
@pytest.mark.parametrize("name", NAMES)
def test_every_attributor_scores_a_store_restored_reference_as_a_fresh_one(name):
    task, _, (model, checkpoints) = _setting()
    _assert_same(name, _fresh_scores(name), _scores(name, task, model, checkpoints))


@pytest.mark.filterwarnings("ignore:Influence\\(solver='cg'\\)")
@pytest.mark.parametrize("name", NAMES)
def test_every_attributor_ignores_the_key_order_of_checkpoint_parameters(name):
    task, (model, checkpoints), _ = _setting()
    generator = torch.Generator().manual_seed(7)
    shuffled = []
    for checkpoint in checkpoints:
        keys = list(checkpoint.params)
        permuted = [keys[i] for i in torch.randperm(len(keys), generator=generator).tolist()]
        if permuted == keys:
            permuted = keys[::-1]
        shuffled.append(Checkpoint(checkpoint.epoch, checkpoint.lr, {k: checkpoint.params[k] for k in permuted}))
    _assert_same(name, _fresh_scores(name), _scores(name, task, model, shuffled))


def test_checkpoint_parameters_that_do_not_match_the_model_are_a_clear_error():
    from tdaeval.errors import AttributorError

    task, (model, checkpoints), _ = _setting()
    broken = [Checkpoint(c.epoch, c.lr, {k: v for k, v in c.params.items() if k != "0.bias"}) for c in checkpoints]
    with pytest.raises(AttributorError, match="'source': checkpoint 0 lacks the model's parameters \\['0.bias'\\]"):
        get("source", n_segments=2).fit(task, model, task.train_data, checkpoints=broken)
