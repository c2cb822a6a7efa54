"""One checkpoint requirement, declared on the ``Attributor`` base, for every registered attributor.

An attributor that needs the checkpoints of the training run says so
(``requires_checkpoints`` or ``needs_checkpoints()``), and ``fit`` without
them raises the same ``AttributorError`` with the same message, naming the
attributor, before any train-side work.
"""

from __future__ import annotations

import pytest
import torch

from tdaeval.attributors import Attributor, get, names
from tdaeval.errors import AttributorError
from tdaeval.training import Checkpoint

#: The registered attributors that cannot fit without checkpoints (with their default parameters).
NEED_CHECKPOINTS = {"tracin", "source", "fast_source", "checkpoint_ensemble", "dda"}


def _message(name: str) -> str:
    return (
        f"Attributor {name!r} needs checkpoints of the training run: pass checkpoints=[...] to fit() "
        "(tdaeval.training.train_model(..., n_checkpoints=k) records them)."
    )


def _instance(name: str, **params) -> Attributor:
    """A registered attributor with its contract parameters (no optional library is imported)."""
    return get(name, **{**type(get(name)).contract_params, **params})


@pytest.mark.parametrize("name", names())
def test_every_registered_attributor_declares_whether_it_needs_checkpoints(name):
    attributor = _instance(name)
    assert isinstance(type(attributor).requires_checkpoints, bool)
    assert attributor.needs_checkpoints() is (name in NEED_CHECKPOINTS)


def test_trak_needs_checkpoints_only_when_it_uses_them():
    assert get("trak").needs_checkpoints() is False
    assert get("trak", use_checkpoints=True).needs_checkpoints() is True


CASES = [(name, {}) for name in sorted(NEED_CHECKPOINTS)] + [("trak", {"use_checkpoints": True})]


@pytest.mark.parametrize(("name", "params"), CASES)
@pytest.mark.parametrize("checkpoints", [None, []])
def test_fit_without_checkpoints_raises_one_error_naming_the_attributor(small_logreg, name, params, checkpoints):
    attributor = _instance(name, **params)
    model = small_logreg.build_model(0).eval()
    with pytest.raises(AttributorError) as caught:
        attributor.fit(small_logreg, model, small_logreg.train_data, checkpoints=checkpoints)
    assert str(caught.value) == _message(attributor.display_name)


def test_the_requirement_is_checked_before_train_side_work(small_logreg):
    class Needy(Attributor):
        name = "needy"
        requires_checkpoints = True
        fitted = False

        def _fit(self) -> None:
            type(self).fitted = True

        def _attribute(self, test):
            return torch.zeros(len(test), len(self.train_))

    model = small_logreg.build_model(0).eval()
    with pytest.raises(AttributorError, match="'needy' needs checkpoints"):
        Needy().fit(small_logreg, model, small_logreg.train_data)
    assert not Needy.fitted
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    fitted = Needy().fit(small_logreg, model, small_logreg.train_data, checkpoints=[Checkpoint(epoch=1, lr=0.1, params=params)])
    assert Needy.fitted and len(fitted._checkpoints()) == 1


@pytest.mark.parametrize(("name", "params"), CASES)
def test_a_checkpoint_with_a_parameter_the_model_lacks_raises_one_error_naming_attributor_and_checkpoint(small_logreg, name, params):
    """Every attributor that reads checkpoints checks them by name the same way (one base method)."""
    attributor = _instance(name, **params)
    model = small_logreg.build_model(0).eval()
    good = {k: v.detach().clone() for k, v in model.named_parameters()}
    checkpoints = [Checkpoint(epoch=1, lr=0.1, params=good), Checkpoint(epoch=2, lr=0.1, params={**good, "bogus.weight": torch.zeros(1)})]
    with pytest.raises(AttributorError) as caught:
        attributor.fit(small_logreg, model, small_logreg.train_data, checkpoints=checkpoints)
        attributor.attribute(small_logreg.test_data)
    assert str(caught.value) == (
        f"Attributor {attributor.display_name!r}: checkpoint 1 holds parameters the model does not have: ['bogus.weight']."
    )
