"""No attributor may change what the run hands every attributor (model, checkpoints, data): every
registered attributor leaves them bit-identical, and a run stops, naming the attributor, when one
does not."""

import pytest
import torch

import tdaeval
from tdaeval._integrity import check_unchanged, state_digests
from tdaeval.attributors.base import names
from tdaeval.errors import AttributorError, TdaevalError
from tdaeval.training import train_model
from tests.attributors._contract import refuses
from tests.attributors.test_base import _contract_attributor


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in {"influence", "dattri.influence"} or "." in n else n for n in names()]
)
def test_every_registered_attributor_leaves_model_checkpoints_and_data_unchanged(small_digits, name):
    attributor = _contract_attributor(name)
    if refuses(attributor, small_digits):
        return
    run = train_model(small_digits, small_digits.build_model(0), torch.arange(small_digits.n_train), 0, n_checkpoints=2)
    shared = {"train data": small_digits.train_data, "test data": small_digits.test_data}
    before = state_digests(run.model, run.checkpoints, shared)
    attributor.fit(small_digits, run.model, small_digits.train_data, checkpoints=run.checkpoints)
    attributor.attribute(small_digits.test_data)
    check_unchanged(before, state_digests(run.model, run.checkpoints, shared), name)


def scale_weights(model, train, test):
    """A careless user attributor: scales the model's first parameter in place."""
    with torch.no_grad():
        next(model.parameters()).mul_(2.0)
    return torch.zeros(len(test), len(train))


def relabel_train(model, train, test):
    """A careless user attributor: overwrites training labels in place (bypassing torch's version counter)."""
    train.targets.numpy()[:5] = 0
    return torch.zeros(len(test), len(train))


def harmless(model, train, test):
    return test.inputs.flatten(1) @ train.inputs.flatten(1).T


@pytest.mark.parametrize("careless,part", [(scale_weights, "model parameter"), (relabel_train, "train data targets")])
@pytest.mark.parametrize("on_error", ["raise", "record"])
def test_a_run_stops_naming_the_attributor_that_changed_shared_state(small_logreg, tmp_path, careless, part, on_error):
    with pytest.raises(AttributorError, match=rf"'careless' modified what every attributor shares \({part}"):
        tdaeval.evaluate(small_logreg, attributors={"first": harmless, "careless": careless, "after": harmless},
                         metrics={"lds": {"n_subsets": 4}}, cache_dir=tmp_path, on_error=on_error, progress=False)


def test_a_run_whose_attributors_change_nothing_is_unaffected(small_logreg, tmp_path):
    result = tdaeval.evaluate(small_logreg, attributors={"a": harmless, "b": "grad_dot"}, metrics={"lds": {"n_subsets": 4}},
                              cache_dir=tmp_path, progress=False)
    assert {e.attributor for e in result.entries} == {"a", "b"} and not result.failures()


def test_check_unchanged_names_the_changed_parts():
    model = torch.nn.Linear(2, 2)
    before = state_digests(model)
    with torch.no_grad():
        model.bias.add_(1.0)
    with pytest.raises(TdaevalError, match=r"'x' modified .*model parameter 'bias'"):
        check_unchanged(before, state_digests(model), "x")
