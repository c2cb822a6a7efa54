"""The constraint types, the one validator and the two bases that apply it (tdaeval.params)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import pytest

from tdaeval.errors import ConfigError
from tdaeval.params import (
    Boolean,
    Check,
    Instance,
    Interval,
    ListOf,
    Options,
    ValidatedDataclass,
    ValidatedInit,
    check_in_open_interval,
    check_int_at_least,
    describe,
    invalid_values,
    validate_params,
)


@pytest.mark.parametrize(
    "constraint,good,bad",
    [
        (Interval(int, 1, None), [1, 10**12], [0, True, 1.0, "2", None]),
        (Interval(int, 0, 8, closed="neither"), [1, 7], [0, 8]),
        (Interval(float, 0, 1, closed="left"), [0, 0.5, 0.0], [1, 1.0, -0.1, float("nan"), False]),
        (Interval(float, 0, None, closed="neither"), [1e-9, 3], [0, 0.0, -1]),
        (Interval(float, None, 2, closed="right"), [-5, 2], [2.5]),
        (Options(("cg", "lissa")), ["cg"], ["CG", None, 1]),
        (Options((1, 2)), [1], [True, 1.0]),
        (Boolean(), [True, False], [1, 0, "yes", None]),
        (Instance(dict), [{}], [[], None]),
        (ListOf(str, non_empty=True), [["a"], ("a", "b")], ["a", [], [1], None]),
        (Check(callable, "a function"), [len], [3]),
    ],
)
def test_constraints_accept_and_refuse(constraint, good, bad):
    assert all(constraint.is_satisfied_by(v) for v in good), good
    assert not any(constraint.is_satisfied_by(v) for v in bad), bad
    for value in invalid_values(constraint):
        assert not constraint.is_satisfied_by(value), value


@pytest.mark.parametrize(
    "constraint,words",
    [
        ([Interval(int, 1, None)], "an integer >= 1"),
        ([None, Interval(float, 0, None)], "None or a number >= 0"),
        ([Interval(float, 0, 1, closed="neither")], "in (0, 1)"),
        ([Interval(float, 0, 1, closed="left")], "in [0, 1)"),
        ([Interval(int, 1, 8)], "an integer in [1, 8]"),
        ([Options(("a", "b"))], "one of 'a', 'b'"),
        ([Boolean()], "True or False"),
        ([Instance(str, "a registry name"), Instance(dict), None], "None, a registry name or a dict"),
    ],
)
def test_descriptions_read_as_the_project_messages(constraint, words):
    assert describe(constraint) == words


def test_validate_params_names_owner_parameter_and_value():
    constraints = {"n": [Interval(int, 1, None)], "mode": [Options(("a", "b"))], "other": [Boolean()]}
    validate_params("Thing", {"n": 3, "mode": "a"}, constraints)  # 'other' absent: skipped
    with pytest.raises(ConfigError, match=r"^The 'n' parameter of Thing must be an integer >= 1\. Got True instead\.$"):
        validate_params("Thing", {"n": True, "mode": "a"}, constraints)
    with pytest.raises(ConfigError, match=r"The 'mode' parameter of Thing must be one of 'a', 'b'\. Got 'c' instead\."):
        validate_params("Thing", {"mode": "c"}, constraints)
    with pytest.raises(ConfigError, match=r"Got 'xxxx.*\.\.\. instead"):
        validate_params("Thing", {"mode": "x" * 500}, constraints)
    with pytest.raises(ConfigError, match="must be None or a tdaeval.params.Constraint"):
        validate_params("Thing", {"n": 1}, {"n": [int]})


def test_a_check_may_raise_its_own_message():
    def only_even(value):
        if value % 2:
            raise ConfigError(f"The 'n' parameter of Thing wants an even number; {value} is odd.")
        return True

    with pytest.raises(ConfigError, match="wants an even number; 3 is odd"):
        validate_params("Thing", {"n": 3}, {"n": [Check(only_even, "an even number")]})
    with pytest.raises(ConfigError, match="must be an even number. Got 'a' instead"):  # a TypeError inside counts as refused
        validate_params("Thing", {"n": "a"}, {"n": [Check(only_even, "an even number")]})


def test_the_old_helpers_are_the_validator():
    with pytest.raises(ConfigError, match=r"^The 'k' parameter of LDS must be an integer >= 2\. Got 1 instead\.$"):
        check_int_at_least("k", "LDS", 1, 2)
    with pytest.raises(ConfigError, match=r"^The 'alpha' parameter of LDS must be in \(0, 1\)\. Got 1\.5 instead\.$"):
        check_in_open_interval("alpha", "LDS", 1.5, 0.0, 1.0)
    assert check_int_at_least("k", "LDS", 2, 2) == 2 and check_in_open_interval("a", "X", 1, 0, 2) == 1.0


class Base(ValidatedInit):
    _parameter_constraints: ClassVar[dict] = {"n": [Interval(int, 1, None)], "flag": [Boolean()]}
    calls: ClassVar[list] = []

    def __init__(self, n: int = 1, flag: bool = False) -> None:
        self.n, self.flag = n, flag


class Child(Base):
    _parameter_constraints: ClassVar[dict] = {**Base._parameter_constraints, "extra": [Options(("x",))]}

    def __init__(self, n: int = 2, extra: str = "x", **more) -> None:
        super().__init__(n, flag=more.pop("flag", False))
        self.extra, self.more = extra, more


class Inherits(Base):
    pass


def test_validated_init_checks_the_outermost_constructor_with_defaults_and_kwargs():
    assert Child().n == 2
    with pytest.raises(ConfigError, match="'n' parameter of Child"):
        Child(n=0)
    with pytest.raises(ConfigError, match="'extra' parameter of Child"):
        Child(extra="y")
    with pytest.raises(ConfigError, match="'flag' parameter of Child"):  # through **kwargs
        Child(flag="yes")
    with pytest.raises(ConfigError, match="'n' parameter of Inherits"):  # named after the instance's class
        Inherits(n=0)
    with pytest.raises(TypeError):  # a wrong call is still Python's TypeError
        Base(1, False, 3)
    assert list(inspect.signature(Child.__init__).parameters) == ["self", "n", "extra", "more"]


def test_validated_init_runs_once_per_construction(monkeypatch):
    import tdaeval.params as params

    seen = []
    real = params.validate_params
    monkeypatch.setattr(params, "validate_params", lambda owner, values, constraints: (seen.append(owner), real(owner, values, constraints)))
    Child()
    assert seen == ["Child"]  # super().__init__ is not validated again


@dataclass(frozen=True)
class Settings(ValidatedDataclass):
    depth: int = 3
    scale: float | None = None

    _parameter_constraints: ClassVar[dict] = {"depth": [Interval(int, 1, None)], "scale": [None, Interval(float, 0, None)]}


def test_validated_dataclass():
    assert Settings(depth=2, scale=1).depth == 2
    with pytest.raises(ConfigError, match=r"The 'depth' parameter of Settings must be an integer >= 1\. Got 0 instead\."):
        Settings(depth=0)
    with pytest.raises(ConfigError, match="'scale' parameter of Settings must be None or a number >= 0"):
        Settings(scale=-1.0)
