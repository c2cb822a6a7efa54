"""Common test of metric constructor parameters (as ``tests/attributors/test_param_validation.py`` for attributors).

For every registered metric, every constrained parameter is fed each value
its constraint refuses, and the constructor must raise a ``ConfigError``
naming the class and the parameter. Every constructor parameter is either
constrained or listed in ``UNCONSTRAINED``: a new parameter without a
constraint fails here.
"""

from __future__ import annotations

import inspect

import pytest

from tdaeval.errors import ConfigError
from tdaeval.metrics import Metric, metric_class, metric_names
from tdaeval.params import ValidatedInit, invalid_values

#: Parameters without a usable default, per registered name (the rest keep their defaults).
REQUIRED: dict[str, dict] = {"class_detection": {"label": "true"}}

#: Constructor parameters that take any value, per registered name (none today; add one only with a reason).
UNCONSTRAINED: dict[str, set[str]] = {}


def _parameters(cls: type) -> list[str]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _cases() -> list:
    cases = []
    for name in metric_names():
        cls = metric_class(name)
        for param, constraint in cls._parameter_constraints.items():
            if param in _parameters(cls):
                for k, value in enumerate(invalid_values(constraint)):
                    cases.append(pytest.param(name, param, value, id=f"{name}-{param}-{k}"))
    return cases


@pytest.mark.parametrize("name", metric_names())
def test_every_registered_metric_is_validated_and_builds_with_its_defaults(name):
    cls = metric_class(name)
    assert issubclass(cls, ValidatedInit) and issubclass(cls, Metric)
    metric = cls(**REQUIRED.get(name, {}))
    assert {"n_bootstrap", "seed"} <= set(cls._parameter_constraints)
    assert metric.get_params() == {p: getattr(metric, p) for p in _parameters(cls)}  # every parameter is stored


@pytest.mark.parametrize("name,param,value", _cases())
def test_an_invalid_value_is_a_config_error_naming_class_and_parameter(name, param, value):
    cls = metric_class(name)
    with pytest.raises(ConfigError) as info:
        cls(**{**REQUIRED.get(name, {}), param: value})
    message = str(info.value)
    assert f"The '{param}' parameter of {cls.__name__} must be " in message, message
    assert message.endswith(" instead."), message


@pytest.mark.parametrize("name", metric_names())
def test_every_constructor_parameter_is_constrained_or_listed(name):
    cls = metric_class(name)
    table = cls._parameter_constraints
    missing = [p for p in _parameters(cls) if p not in table and p not in UNCONSTRAINED.get(name, set())]
    assert not missing, f"{name}: parameters without a constraint: {missing}"
    for param in _parameters(cls):
        if param in table:
            assert invalid_values(table[param]), f"{name}: no invalid value can be generated for {param!r}"


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("loo_pearson", {"n_bootstrap": 5}, r"^The 'n_bootstrap' parameter of LOOPearson must be an integer >= 10\. Got 5 instead\.$"),
        ("seed_reliability", {"alpha": 1.0}, r"^The 'alpha' parameter of SeedReliability must be in \(0, 1\)\. Got 1\.0 instead\.$"),
        ("flip_test", {"k_grid": (40, 20)}, r"'k_grid' parameter of FlipTest must be a non-empty increasing list of integers >= 1"),
        ("further_training", {"downweight": 0.0}, r"'downweight' parameter of FurtherTraining must be None or in \(0, 1\]"),
        ("mislabel_detection", {"seed": -1}, r"'seed' parameter of MislabelDetection must be an integer >= 0"),
    ],
)
def test_messages_name_the_instance_class_and_what_is_accepted(name, params, match):
    with pytest.raises(ConfigError, match=match):
        metric_class(name)(**params)


def test_valid_values_pass_unchanged():
    metric = metric_class("flip_test")(k_grid=[5, 10], n_seeds=1, n_test_points=None, seed=3, n_bootstrap=10)
    assert metric.k_grid == [5, 10] and metric.spec.k_grid == (5, 10) and metric.n_test_points is None
    assert metric_class("seed_reliability")(alpha=0.1, test="snr").alpha == 0.1
