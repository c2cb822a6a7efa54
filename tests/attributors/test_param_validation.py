"""Common test of constructor parameters (scikit-learn's ``check_param_validation``) and Influence's solver settings.

For every registered attributor, every constrained parameter is fed each
value its constraint refuses (outside an interval, a string not among the
options, a non-bool for a flag, ``True`` for an integer, ...), and the
constructor must raise a ``ConfigError`` naming the class and the parameter.
Every constructor parameter is either constrained or listed in
``UNCONSTRAINED``: a new parameter without a constraint fails here.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest
import torch

from tdaeval.attributors import Influence, get, names
from tdaeval.attributors.adapters import AdapterAttributor
from tdaeval.attributors.influence import (
    FLAT_SETTINGS,
    SETTINGS,
    ArnoldiSettings,
    ASTRASettings,
    CGSettings,
    EKFACSettings,
    ExplicitSettings,
    LiSSASettings,
)
from tdaeval.errors import ConfigError
from tdaeval.params import invalid_values

#: Constructor parameters that take any value, per registered name (none today; add one only with a reason).
UNCONSTRAINED: dict[str, set[str]] = {}


def _class(name: str) -> type:
    return type(get(name))  # every registered attributor builds with its defaults, library installed or not


def _parameters(cls: type) -> tuple[list[str], bool]:
    """The constructor's named parameters, and whether it takes ``**kwargs``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _cases() -> list:
    cases = []
    for name in names():
        cls = _class(name)
        named, takes_kwargs = _parameters(cls)
        for param, constraint in cls._parameter_constraints.items():
            if param not in named and not takes_kwargs:
                continue  # an inherited entry the subclass's constructor does not take (checked below)
            for k, value in enumerate(invalid_values(constraint)):
                cases.append(pytest.param(name, param, value, id=f"{name}-{param}-{k}"))
    return cases


def test_every_registered_attributor_builds_with_its_defaults():
    for name in names():
        assert _class(name)._parameter_constraints, f"{name} declares no _parameter_constraints"


@pytest.mark.parametrize("name,param,value", _cases())
def test_an_invalid_value_is_a_config_error_naming_class_and_parameter(name, param, value):
    cls = _class(name)
    with pytest.raises(ConfigError) as info:
        cls(**{param: value})
    message = str(info.value)
    assert f"'{param}' parameter of" in message, message
    assert cls.__name__ in message, message


@pytest.mark.parametrize("name", names())
def test_every_constructor_parameter_is_constrained_or_listed(name):
    cls = _class(name)
    named, takes_kwargs = _parameters(cls)
    table = cls._parameter_constraints
    allowed = UNCONSTRAINED.get(name, set())
    missing = [p for p in named if p not in table and p not in allowed]
    assert not missing, f"{name}: parameters without a constraint: {missing}"
    tested = [p for p in table if p in named or takes_kwargs]
    assert tested, name
    for param in tested:
        assert invalid_values(table[param]), f"{name}: no invalid value can be generated for {param!r}"


@pytest.mark.parametrize("cls", sorted({_class(n) for n in names() if issubclass(_class(n), AdapterAttributor)}, key=lambda c: c.name))
def test_adapters_build_without_their_library(monkeypatch, cls):
    """An adapter's constructor never imports its library (it is imported at fit)."""
    monkeypatch.setitem(sys.modules, cls.library, None)  # any import of it now fails
    attributor = cls(**cls.contract_params)
    assert isinstance(attributor, cls)


# --- Influence's solver settings ----------------------------------------------------------------------------------

#: Influence.get_params() before the settings were grouped: the same names in the same order (results keep them).
FLAT_PARAMS = [
    "solver", "damping", "max_iter", "tol", "cg_block", "lissa_depth", "lissa_repeats", "lissa_batch_size",
    "lissa_scale", "arnoldi_iter", "arnoldi_rank", "astra_iter", "astra_lr", "astra_momentum", "astra_batch_size",
    "astra_halve_every", "ekfac_sampled", "hessian_samples", "chunk_size", "max_explicit_params", "seed", "device", "params",
]


def test_flat_keywords_fill_the_settings_dataclasses():
    flat = Influence(
        solver="lissa", max_iter=7, tol=1e-3, cg_block=False, lissa_depth=5, lissa_repeats=2, lissa_batch_size=3,
        lissa_scale=9.0, arnoldi_iter=11, arnoldi_rank=4, astra_iter=12, astra_lr=1, astra_momentum=0.5,
        astra_batch_size=13, astra_halve_every=6, ekfac_sampled=False, max_explicit_params=99,
    )
    assert flat.cg == CGSettings(max_iter=7, tol=1e-3, block=False)
    assert flat.lissa == LiSSASettings(depth=5, repeats=2, batch_size=3, scale=9.0)
    assert flat.arnoldi == ArnoldiSettings(n_iter=11, rank=4)
    assert flat.astra == ASTRASettings(n_iter=12, lr=1.0, momentum=0.5, batch_size=13, halve_every=6)
    assert isinstance(flat.astra.lr, float)
    assert flat.ekfac == EKFACSettings(sampled=False) and flat.explicit == ExplicitSettings(max_params=99)
    grouped = Influence(
        solver="lissa", cg=CGSettings(7, 1e-3, False), lissa={"depth": 5, "repeats": 2, "batch_size": 3, "scale": 9.0},
        arnoldi=ArnoldiSettings(11, 4), astra=ASTRASettings(12, 1.0, 0.5, 13, 6), ekfac={"sampled": False},
        explicit=ExplicitSettings(99),
    )
    assert grouped.get_params() == flat.get_params()
    assert list(flat.get_params()) == FLAT_PARAMS
    assert flat.get_params()["lissa_depth"] == 5 and flat.get_params()["cg_block"] is False
    assert list(Influence().get_params()) == FLAT_PARAMS
    assert set(FLAT_SETTINGS) | {"solver", "damping", "hessian_samples", "chunk_size", "seed", "device", "params"} == set(FLAT_PARAMS)
    assert set(SETTINGS) <= set(inspect.signature(Influence.__init__).parameters)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"cg": CGSettings(), "max_iter": 3}, "'cg' settings either as cg=CGSettings"),
        ({"cg": {"max_it": 3}}, r"'cg' parameter of Influence has unknown settings \['max_it'\]"),
        ({"cg": {"max_iter": 0}}, "'max_iter' parameter of CGSettings must be an integer >= 1"),
        ({"lissa": CGSettings()}, "'lissa' parameter of Influence"),
        ({"maxiter": 3}, "Invalid parameters.*maxiter"),
        ({"astra_momentum": 1.0}, r"'astra_momentum' parameter of Influence must be in \[0, 1\)"),
    ],
)
def test_bad_settings_are_clear(params, match):
    with pytest.raises(ConfigError, match=match):
        get("influence", **params)


@pytest.mark.parametrize("cls", list(SETTINGS.values()))
def test_each_settings_dataclass_validates_itself_and_is_frozen(cls):
    settings = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(settings, dataclasses.fields(cls)[0].name, None)
    for field in dataclasses.fields(cls):
        for value in invalid_values(cls._parameter_constraints[field.name]):
            with pytest.raises(ConfigError, match=f"'{field.name}' parameter of {cls.__name__}"):
                cls(**{field.name: value})


def test_grouped_and_flat_settings_give_the_same_scores(linear_task):
    task = linear_task
    model = task.train(task.build_model(0), torch.arange(task.n_train), 0)
    flat = get("influence", solver="arnoldi", damping=0.1, arnoldi_iter=8, arnoldi_rank=3).fit(task, model, task.train_data)
    grouped = Influence(solver="arnoldi", damping=0.1, arnoldi=ArnoldiSettings(n_iter=8, rank=3)).fit(task, model, task.train_data)
    assert torch.equal(flat.attribute(task.test_data), grouped.attribute(task.test_data))


@pytest.mark.parametrize("name", names())
def test_contract_params_name_constructor_parameters_and_are_valid(name):
    """The common tests build every attributor with its ``contract_params``: a misspelt key must not pass silently."""
    cls = _class(name)
    accepted, _ = _parameters(cls)
    assert set(cls.contract_params) <= set(accepted), f"{name}: {sorted(set(cls.contract_params) - set(accepted))}"
    assert set(cls.contract_params) <= set(cls(**cls.contract_params).get_params())  # accepted and kept
