"""Every attributor that reads the run's checkpoints treats the epoch-0 checkpoint (``include_initial=True``: the initial
parameters, a fine-tuning task's base model) as where training started, not as a point it trained to: passing it changes
no scores. (dda with debias uses it as its base by design; with ``debias=False``, its contract parameters, it must not.)"""

from __future__ import annotations

import pytest
import torch

from tdaeval.attributors import get, names
from tdaeval.attributors.adapters import AdapterAttributor
from tdaeval.errors import AttributorError
from tdaeval.scores import Attribution
from tdaeval.task import TrainRecipe
from tdaeval.tasks import DigitsTask
from tdaeval.training import train_model


def _checkpoint_attributors() -> list[str]:
    out = []
    for name in names():
        cls = type(get(name))
        if issubclass(cls, AdapterAttributor):
            continue  # adapters hand checkpoints to their library: covered by the adapter tests
        if get(name, **cls.contract_params).needs_checkpoints():
            out.append(name)
    return out


def _scores(result):
    return result.mean if isinstance(result, Attribution) else result


@pytest.fixture(scope="module")
def runs():
    task = DigitsTask(n_train=200, n_test=20, hidden=16, recipe=TrainRecipe(epochs=4, batch_size=32))
    idx = torch.arange(task.n_train)
    plain = train_model(task, task.build_model(0), idx, 0, n_checkpoints=2)
    initial = train_model(task, task.build_model(0), idx, 0, n_checkpoints=2, include_initial=True)
    return task, plain, initial


def test_the_registry_has_checkpoint_attributors():
    assert {"tracin", "source", "fast_source", "checkpoint_ensemble", "dda"} <= set(_checkpoint_attributors())


@pytest.mark.filterwarnings("ignore:.*checkpoint\\(s\\) after epoch 0")
@pytest.mark.parametrize("name", _checkpoint_attributors())
def test_the_epoch_0_checkpoint_changes_no_scores(runs, name):
    task, plain, initial = runs
    assert [c.epoch for c in initial.checkpoints] == [0, *[c.epoch for c in plain.checkpoints]]
    params = type(get(name)).contract_params
    without = get(name, **params).fit(task, plain.model, task.train_data, checkpoints=plain.checkpoints)
    with_initial = get(name, **params).fit(task, initial.model, task.train_data, checkpoints=initial.checkpoints)
    a, b = _scores(without.attribute(task.test_data)), _scores(with_initial.attribute(task.test_data))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=f"{name}: the epoch-0 checkpoint changed the scores")


@pytest.mark.parametrize("name", [n for n in _checkpoint_attributors() if n != "dda"])
def test_only_the_epoch_0_checkpoint_is_refused_in_one_line(runs, name):
    task, _, initial = runs
    attributor = get(name, **type(get(name)).contract_params)
    with pytest.raises(AttributorError) as info:
        attributor.fit(task, initial.model, task.train_data, checkpoints=initial.checkpoints[:1])
    assert "\n" not in str(info.value) and "epoch" in str(info.value)
