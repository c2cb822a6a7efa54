"""Declarative parameter constraints and the one validator that checks them.

A class states what each constructor parameter accepts in a table,
``_parameter_constraints: ClassVar[dict[str, list]]``, mapping a parameter
name to the forms it may take (a union: the value must satisfy at least
one), as scikit-learn's ``_parameter_constraints``:

.. code-block:: python

    class MyAttributor(Attributor):
        _parameter_constraints = {
            "n_iter": [Interval(int, 1, None)],                 # an integer >= 1
            "damping": [None, Interval(float, 0, None)],       # None or >= 0
            "solver": [Options({"cg", "lissa"})],
            "block": [Boolean()],
        }

:func:`validate_params` checks a dict of values against such a table and
raises :class:`~tdaeval.errors.ConfigError` naming the owner and the
parameter: ``The 'n_iter' parameter of MyAttributor must be an integer >= 1.
Got 0 instead.``

Three places use it:

* :class:`ValidatedInit` (a base of :class:`~tdaeval.attributors.Attributor`)
  validates the arguments of the outermost ``__init__`` of every subclass,
  defaults included, before the constructor body runs; a subclass only
  declares its table.
* :class:`ValidatedDataclass` validates a (frozen) dataclass's fields in
  ``__post_init__`` (the solver settings of
  :class:`~tdaeval.attributors.Influence`).
* Any other code (metrics, suite specs) calls :func:`validate_params` itself,
  or inherits one of the two bases.

Checks that relate two parameters stay in the constructor, after the table.
``bool`` is never an integer or a number here.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any, ClassVar

from tdaeval.errors import ConfigError

__all__ = [
    "Constraint",
    "Interval",
    "Options",
    "Boolean",
    "Instance",
    "ListOf",
    "Check",
    "validate_params",
    "describe",
    "invalid_values",
    "ValidatedInit",
    "ValidatedDataclass",
    "check_int_at_least",
    "check_in_open_interval",
]

#: Longest ``repr`` of a rejected value shown in a message.
MAX_REPR = 80


class Constraint(ABC):
    """One form a parameter may take."""

    @abstractmethod
    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` has this form."""

    @abstractmethod
    def __str__(self) -> str:
        """What the form is, completing "must be …" (e.g. ``an integer >= 1``)."""

    def invalid_examples(self) -> list[Any]:
        """Values that do not have this form (for the common tests)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Interval(Constraint):
    """A number of ``type`` between ``low`` and ``high`` (``None``: unbounded on that side).

    Parameters
    ----------
    type : {int, float}
        ``int``: a Python ``int``; ``float``: any real number (``int`` or
        ``float``, not NaN). ``bool`` is neither.
    low, high : float, optional
        The bounds.
    closed : {"both", "left", "right", "neither"}
        Which bounds belong to the interval.
    """

    def __init__(self, type: type, low: float | None, high: float | None, closed: str = "both") -> None:
        if type not in (int, float):
            raise ConfigError(f"Interval expects type int or float. Got {type!r}.")
        if closed not in ("both", "left", "right", "neither"):
            raise ConfigError(f"Interval expects closed='both', 'left', 'right' or 'neither'. Got {closed!r}.")
        self.type, self.low, self.high, self.closed = type, low, high, closed

    def _type_ok(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.type is int:
            return isinstance(value, int)
        return isinstance(value, numbers.Real) and not math.isnan(value)

    def is_satisfied_by(self, value: Any) -> bool:
        if not self._type_ok(value):
            return False
        if self.low is not None and (value < self.low or value == self.low and self.closed in ("right", "neither")):
            return False
        if self.high is not None and (value > self.high or value == self.high and self.closed in ("left", "neither")):
            return False
        return True

    def __str__(self) -> str:
        low_in, high_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        kind = "an integer" if self.type is int else "a number"
        if self.low is not None and self.high is not None:
            interval = f"{'[' if low_in else '('}{_number(self.low)}, {_number(self.high)}{']' if high_in else ')'}"
            return f"{kind} in {interval}" if self.type is int else f"in {interval}"
        if self.low is not None:
            return f"{kind} {'>=' if low_in else '>'} {_number(self.low)}"
        if self.high is not None:
            return f"{kind} {'<=' if high_in else '<'} {_number(self.high)}"
        return kind

    def invalid_examples(self) -> list[Any]:
        out: list[Any] = ["1", True]
        if self.type is int:
            out.append(1.5)
        if self.low is not None:
            out.append(self.type(self.low - 1))
        if self.high is not None:
            out.append(self.type(self.high + 1))
        return out


class Options(Constraint):
    """One of a fixed set of values (compared with their type: ``True`` is not ``1``)."""

    def __init__(self, options: Iterable[Any]) -> None:
        self.options = tuple(options)

    def is_satisfied_by(self, value: Any) -> bool:
        return any(type(value) is type(option) and value == option for option in self.options)

    def __str__(self) -> str:
        return "one of " + ", ".join(map(repr, self.options))

    def invalid_examples(self) -> list[Any]:
        return ["<not an option>", 3.5]


class Boolean(Constraint):
    """``True`` or ``False`` (not ``0``, ``1`` or a string)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "True or False"

    def invalid_examples(self) -> list[Any]:
        return ["yes", 1]


class Instance(Constraint):
    """An instance of ``cls`` (a class or a tuple of classes); ``description`` replaces the default wording."""

    def __init__(self, cls: type | tuple[type, ...], description: str | None = None) -> None:
        self.cls, self.description = cls, description

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.cls)

    def __str__(self) -> str:
        if self.description:
            return self.description
        classes = self.cls if isinstance(self.cls, tuple) else (self.cls,)
        return " or ".join(f"a {c.__name__}" if c.__module__ == "builtins" else f"a {c.__module__}.{c.__qualname__}" for c in classes)

    def invalid_examples(self) -> list[Any]:
        return [object()]


class ListOf(Constraint):
    """A list or tuple (not a string) of ``item`` instances; ``non_empty`` refuses an empty one."""

    def __init__(self, item: type, non_empty: bool = False, description: str | None = None) -> None:
        self.item, self.non_empty, self.description = item, non_empty, description

    def is_satisfied_by(self, value: Any) -> bool:
        return (
            isinstance(value, (list, tuple))
            and all(isinstance(v, self.item) for v in value)
            and not (self.non_empty and not value)
        )

    def __str__(self) -> str:
        return self.description or f"a {'non-empty ' if self.non_empty else ''}list of {self.item.__name__}"

    def invalid_examples(self) -> list[Any]:
        return ["a string", [object()]] + ([[]] if self.non_empty else [])


class Check(Constraint):
    """Any value ``fn(value)`` accepts.

    ``fn`` returns True or False; it may instead raise
    :class:`~tdaeval.errors.ConfigError` with a more specific message, which
    the validator passes on. Any other exception counts as False.

    Parameters
    ----------
    fn : callable
        ``fn(value) -> bool``.
    description : str
        What ``fn`` accepts, completing "must be …".
    invalid : sequence, optional
        Values ``fn`` refuses (for the common tests).
    """

    def __init__(self, fn: Callable[[Any], bool], description: str, invalid: Iterable[Any] = ()) -> None:
        self.fn, self.description, self.invalid = fn, description, list(invalid)

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            return bool(self.fn(value))
        except ConfigError:
            raise
        except Exception:
            return False

    def __str__(self) -> str:
        return self.description

    def invalid_examples(self) -> list[Any]:
        return list(self.invalid)


def _forms(constraint: Any) -> list[Any]:
    forms = list(constraint) if isinstance(constraint, (list, tuple)) else [constraint]
    for form in forms:
        if form is not None and not isinstance(form, Constraint):
            raise ConfigError(f"A parameter constraint must be None or a tdaeval.params.Constraint. Got {form!r}.")
    return forms


def _satisfied(form: Any, value: Any) -> bool:
    return value is None if form is None else form.is_satisfied_by(value)


def describe(constraint: Constraint | None | list) -> str:
    """The "must be …" wording of a constraint or a union (a list): ``None or an integer >= 1``."""
    forms = _forms(constraint)
    words = (["None"] if None in forms else []) + [str(f) for f in forms if f is not None]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def invalid_values(constraint: Constraint | None | list) -> list[Any]:
    """Values that satisfy no form of the constraint (for tests that feed invalid parameters)."""
    forms = _forms(constraint)
    candidates = [None] + [v for f in forms if f is not None for v in f.invalid_examples()]
    out = []
    for value in candidates:
        try:
            if not any(_satisfied(f, value) for f in forms):
                out.append(value)
        except ConfigError:  # a Check that refuses it with its own message
            out.append(value)
    return out


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def validate_params(owner: str, values: Mapping[str, Any], constraints: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless each value satisfies its constraint.

    Parameters
    ----------
    owner : str
        The class or function the parameters belong to, named in the message.
    values : mapping
        Parameter name → value; names without a constraint are not checked.
    constraints : mapping
        Parameter name → a :class:`Constraint`, ``None`` or a list of them
        (a union); names without a value are skipped.

    Raises
    ------
    ConfigError
        ``The 'x' parameter of <owner> must be <description>. Got <value> instead.``
    """
    for name, constraint in constraints.items():
        if name not in values:
            continue
        value = values[name]
        forms = _forms(constraint)
        if not any(_satisfied(form, value) for form in forms):
            raise ConfigError(
                f"The {name!r} parameter of {owner} must be {describe(forms)}. Got {_short_repr(value)} instead."
            )


class ValidatedInit:
    """Validates the arguments of every subclass's constructor against ``_parameter_constraints``.

    When a subclass defines ``__init__``, it is wrapped: the arguments
    (defaults included; those of a ``**kwargs`` parameter flattened in) are
    checked by :func:`validate_params`, named after the instance's class,
    before the body runs. Only the outermost constructor validates, so a
    ``super().__init__(...)`` call inside it is not checked again. The
    signature seen by :func:`inspect.signature` is the original one.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_validates_params", False):
            return
        signature = inspect.signature(init)
        parameters = list(signature.parameters.values())
        var_keyword = next((p.name for p in parameters if p.kind is p.VAR_KEYWORD), None)

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if type(self).__init__ is __init__:  # the outermost constructor; super().__init__ calls skip this
                try:
                    bound = signature.bind(self, *args, **kwargs)
                except TypeError:
                    pass  # the constructor itself raises the usual TypeError
                else:
                    bound.apply_defaults()
                    values = dict(list(bound.arguments.items())[1:])
                    if var_keyword is not None:
                        values.update(values.pop(var_keyword, {}))
                    validate_params(type(self).__name__, values, type(self)._parameter_constraints)
            init(self, *args, **kwargs)

        __init__._validates_params = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]


class ValidatedDataclass:
    """A dataclass whose fields are validated against ``_parameter_constraints`` in ``__post_init__``.

    Subclasses that define their own ``__post_init__`` call ``super().__post_init__()`` first.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        validate_params(type(self).__name__, values, self._parameter_constraints)


def check_in_open_interval(name: str, owner: str, value: float, low: float, high: float) -> float:
    """Raise ``ConfigError`` unless ``low < value < high``; :func:`validate_params` with one ``Interval``."""
    validate_params(owner, {name: value}, {name: [Interval(float, float(low), float(high), closed="neither")]})
    return float(value)


def check_int_at_least(name: str, owner: str, value: int, minimum: int) -> int:
    """Raise ``ConfigError`` unless ``value`` is an integer ``>= minimum``; :func:`validate_params` with one ``Interval``."""
    validate_params(owner, {name: value}, {name: [Interval(int, minimum, None)]})
    return value
