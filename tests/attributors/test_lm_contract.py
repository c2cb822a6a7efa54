"""The registry-wide contract on the language-model task: every attributor runs on a tiny causal LM, or refuses in one line.

Mirrors ``test_base.py::test_every_registered_attributor_meets_the_contract`` on a tiny
:class:`~tdaeval.tasks.language.LanguageModelTask` (trained once per module): finite float32
``[n_test, n_train]`` scores, the same on a second call and from a fresh instance. EK-FAC based
estimators (``influence`` with ``solver="ekfac"``/``"astra"``, ``source``, ``fast_source``) run with
``params="linear"`` (embeddings and LayerNorm frozen) and say so in one line without it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tdaeval.attributors import Attribution, Attributor, get, names
from tdaeval.errors import AttributorError
from tdaeval.task import TrainRecipe
from tdaeval.tasks.language import LanguageModelTask
from tdaeval.training import train_model
from tests.attributors._contract import refuses

#: Attributors that cannot explain the LM task and say why (checked both ways: these refuse, the others do not).
REFUSES_ON_LM = {
    # kronfluence tracks nn.Linear / nn.Conv2d only; it would silently leave out the embeddings and LayerNorms.
    "kronfluence.ekfac", "kronfluence.kfac", "kronfluence.diagonal", "kronfluence.identity",
    # captum's TracInCPFast needs [n, features] inputs to the output layer; dattri's RPS one label per example.
    "captum.tracin_cp_fast", "dattri.rps",
}
#: Extra parameters on this model: EK-FAC needs factorable layers, so these track the nn.Linear layers only.
LINEAR_ONLY: dict[str, dict[str, Any]] = {"source": {"params": "linear"}, "fast_source": {"params": "linear"}}
#: Solvers of ``influence`` that need ``params="linear"`` here (ASTRA with few iterations to stay fast).
INFLUENCE_LINEAR: dict[str, dict[str, Any]] = {
    "ekfac": {"solver": "ekfac", "params": "linear"},
    "astra": {"solver": "astra", "params": "linear", "astra_iter": 10},
}
#: 1.3-1.8 s each on 2 idle cores, but 20-75 s on 2 busy ones (measured): Hessian solvers and per-example backward loops.
SLOW = {"influence", "dattri.influence", "captum.arnoldi", "captum.naive_influence", "captum.tracin_cp"}


@pytest.fixture(scope="module")
def lm_run():
    """A tiny fact-completion LM: 82 training sentences, 8 queries, d_model 16, 3 epochs; 2 checkpoints."""
    task = LanguageModelTask(n_entities=40, n_relations=4, n_facts=30, n_test=8, d_model=16,
                             recipe=TrainRecipe(epochs=3, batch_size=32, lr=0.2, momentum=0.9))
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)
    return task, run


def _attributor(name: str, extra: dict[str, Any] | None = None) -> Attributor:
    """A registered attributor with its ``contract_params`` (and ``extra``); adapters whose library is missing skip."""
    from tdaeval.attributors.adapters import AdapterAttributor

    cls = type(get(name))
    if issubclass(cls, AdapterAttributor) and not cls.available():
        pytest.skip(f"{name}: optional library {cls.library!r} not installed (extra {cls.extra!r})")
    return get(name, **{**cls.contract_params, **(extra or {})})


def _mean(result: Any) -> torch.Tensor:
    return result.mean if isinstance(result, Attribution) else result


def _meets_the_contract(task: LanguageModelTask, run, name: str, extra: dict[str, Any] | None = None) -> None:
    attributor = _attributor(name, extra)
    if refuses(attributor, task):
        assert name in REFUSES_ON_LM, f"{name} refuses the LM task: {attributor.why_unsupported(task, task.train_data)}"
        return
    assert name not in REFUSES_ON_LM, f"{name} no longer refuses the LM task: update REFUSES_ON_LM"
    attributor.fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    first = _mean(attributor.attribute(task.test_data))
    assert first.shape == (task.n_test, task.n_train), name
    assert first.dtype == torch.float32 and torch.isfinite(first).all(), name
    assert first.abs().max() > 0, f"{name}: all scores are zero"
    assert torch.equal(first, _mean(attributor.attribute(task.test_data))), name
    again = _attributor(name, extra).fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
    assert torch.equal(first, _mean(again.attribute(task.test_data))), f"{name}: a fresh instance gives other scores"


# The 3-epoch LM is far from a minimum: CG meets negative curvature and says so.
@pytest.mark.filterwarnings("ignore:Influence\\(solver='cg'\\)")
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names()])
def test_every_registered_attributor_meets_the_contract_on_the_lm_task(lm_run, name):
    task, run = lm_run
    _meets_the_contract(task, run, name, LINEAR_ONLY.get(name))


# ASTRA: 0.5 s on 2 idle cores, 47 s on 2 busy ones (measured).
@pytest.mark.parametrize("solver", [pytest.param(s, marks=pytest.mark.slow) if s == "astra" else s for s in INFLUENCE_LINEAR])
def test_ekfac_solvers_meet_the_contract_with_linear_params(lm_run, solver):
    task, run = lm_run
    _meets_the_contract(task, run, "influence", INFLUENCE_LINEAR[solver])


@pytest.mark.parametrize(
    "name,params",
    [("source", {}), ("fast_source", {}), ("influence", {"solver": "ekfac"}), ("influence", {"solver": "astra"})],
)
def test_ekfac_estimators_without_linear_params_say_to_use_them(lm_run, name, params):
    """Embeddings and LayerNorm are not factorable: a one-line error naming them and pointing at params='linear'."""
    task, run = lm_run
    attributor = _attributor(name, params)
    with pytest.raises(AttributorError) as info:
        attributor.fit(task, run.model, task.train_data, checkpoints=run.checkpoints)
        attributor.attribute(task.test_data)
    message = str(info.value)
    assert "\n" not in message and "params='linear'" in message and "embed.weight" in message, message
    assert message.startswith(f"Attributor {name!r}"), message
    if "solver" in params:  # the solver that was asked for, not the one EK-FAC serves
        assert f"solver={params['solver']!r}" in message, message


@pytest.mark.parametrize("name", sorted(REFUSES_ON_LM))
def test_refusals_name_the_attributor_and_the_reason(lm_run, name):
    task, _ = lm_run
    reason = _attributor(name).why_unsupported(task, task.train_data)
    assert reason is not None and f"'{name}'" in reason, reason
    expected = "module 'embed' (Embedding)" if name.startswith("kronfluence.") else "sequence task"
    assert expected in reason, reason


@pytest.mark.parametrize("name", sorted(REFUSES_ON_LM))
def test_refusing_adapters_still_accept_a_classifier(small_logreg, name):
    """The refusals are about sequences (and untracked modules), not about every task."""
    _attributor(name)  # skips when the library is missing
    assert _attributor(name).why_unsupported(small_logreg, small_logreg.train_data) is None
