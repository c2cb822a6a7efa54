"""One registry type for every plug-in kind, and the one ``"module:Name"`` resolver.

Attributors, metrics, executors and tasks each have a :class:`Registry`
(``tdaeval.attributors.base.ATTRIBUTORS``, ``tdaeval.metrics.base.METRICS``,
``tdaeval.groundtruth.executors.EXECUTORS``, ``tdaeval.tasks.TASKS``), defined
next to its base class. Every registry also accepts a ``"module:Name"`` import
path, resolved by :func:`import_object`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from tdaeval._imports import import_failure
from tdaeval.errors import ConfigError

__all__ = ["IMPORT_PATH", "Registry", "import_object"]

T = TypeVar("T")

#: ``module:attribute`` with dotted Python identifiers on both sides (no file paths, no empty parts).
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_object(path: str, kind: str, accept: Callable[[Any], bool] | None = None, expected: str = "") -> Any:
    """The object a ``"module:Name"`` path names, importing its module.

    Parameters
    ----------
    path : str
        ``"package.module:Name"``: dotted Python names on both sides (``Name``
        may be dotted too, e.g. ``"module:Class.attribute"``).
    kind : str
        What the path is for (``"attributor"``, ``"task factory"``), used in errors.
    accept : callable, optional
        Predicate the object must satisfy.
    expected : str
        What ``accept`` checks, in words (``"a Metric subclass"``), used in errors.

    Returns
    -------
    Any
        The object.

    Raises
    ------
    ConfigError
        The path is malformed; the module is missing or fails while importing
        (the message says which, and which folders were searched); the module
        lacks the attribute; or the object fails ``accept``.
    """
    if not isinstance(path, str) or not IMPORT_PATH.fullmatch(path):
        raise ConfigError(
            f"The {kind} path {path!r} must look like 'package.module:Name' (dotted Python names, no file paths)."
        )
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"Cannot import module {module_name!r} for {kind} {path!r}: {import_failure(module_name, err)}.") from err
    except Exception as err:  # the module was found and raised while running its top-level code
        first = (str(err).splitlines() or [""])[0]
        raise ConfigError(
            f"Cannot import module {module_name!r} for {kind} {path!r}: module {module_name!r} was found, "
            f"but importing it failed: {type(err).__name__}: {first}."
        ) from err
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"Module {module_name!r} has no attribute {attr!r} ({kind} {path!r}).") from None
    if accept is not None and not accept(obj):
        shown = f"class {obj.__qualname__}" if isinstance(obj, type) else f"an object of type {type(obj).__name__}"
        raise ConfigError(f"{kind.capitalize()} {path!r} must be {expected or 'something else'}. Got {shown}.")
    return obj


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


class Registry(Mapping[str, "type[T]"], Generic[T]):
    """Classes of one kind by name, all subclasses of ``base``; names may also be ``"module:Name"`` paths.

    A read-only mapping ``{name: class}`` (iterated in sorted order); register
    with :meth:`register`, look up with :meth:`get_class`, build with
    :meth:`create`. Listing names imports nothing: classes that wrap an
    optional library import it when built or fitted, never when registered.

    Parameters
    ----------
    kind : str
        What the classes are, as messages name them (``"attributor"``).
    base : type
        The class every registered class must subclass.
    """

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[T]] = {}

    # -- registering -------------------------------------------------------------------------------
    def register(self, cls: type[T] | None = None, *, name: str | None = None) -> Any:
        """Add ``cls`` under ``name`` (default: its ``name`` class attribute); usable as a decorator.

        ``@registry.register`` and ``@registry.register(name="x")`` both work;
        they return the class unchanged. Registering a class again under its
        own name is a no-op.

        Raises
        ------
        ConfigError
            ``cls`` is not a ``base`` subclass, the name is not a non-empty
            string without ``':'``, or another class holds the name.
        """
        if cls is None:
            return lambda c: self.register(c, name=name)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ConfigError(f"The {self.kind} registry takes {self.base.__name__} subclasses. Got {cls!r}.")
        key = name if name is not None else getattr(cls, "name", None)  # the bases declare ``name``; any class may be passed
        if not isinstance(key, str) or not key or ":" in key:
            raise ConfigError(
                f"The {self.kind} name of {cls.__qualname__} must be a non-empty string without ':' "
                f"(':' marks a 'module:Name' path). Got {key!r}."
            )
        taken = self._classes.get(key)
        if taken is not None and taken is not cls:
            raise ConfigError(
                f"{_article(self.kind)} {self.kind} named {key!r} is already registered ({_qualified(taken)}); "
                f"cannot register {_qualified(cls)} under the same name."
            )
        self._classes[key] = cls
        return cls

    # -- looking up --------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def get_class(self, name: str) -> type[T]:
        """The class registered under ``name``, or the ``base`` subclass a ``"module:Name"`` path names.

        Raises
        ------
        ConfigError
            ``name`` is not a string, is unknown, or its path does not resolve
            to a ``base`` subclass.
        """
        if not isinstance(name, str):
            raise ConfigError(f"{self.kind.capitalize()} names must be strings. Got {type(name).__name__}.")
        if ":" in name:
            return import_object(name, self.kind, self.is_member, f"a {self.base.__name__} subclass")
        cls = self._classes.get(name)
        if cls is None:
            raise ConfigError(f"Unknown {self.kind} {name!r}. Expected one of: {', '.join(self.names())}, or 'module:Name'.")
        return cls

    def is_member(self, obj: Any) -> bool:
        """Whether ``obj`` is a ``base`` subclass (registered or not)."""
        return isinstance(obj, type) and issubclass(obj, self.base)

    # -- building ----------------------------------------------------------------------------------
    def create(self, name: str, **params: Any) -> T:
        """An instance of :meth:`get_class` ``(name)`` built with ``params``.

        Raises
        ------
        ConfigError
            As :meth:`get_class`; or ``params`` the constructor does not take
            (or lacks a required one): the message names the kind, the name,
            the offending parameters and the accepted ones.
        """
        return self.build(self.get_class(name), name, params)

    def build(self, cls: type[T], label: str, params: Mapping[str, Any]) -> T:
        """``cls(**params)``, with bad parameters reported as a ConfigError naming ``label``."""
        signature = inspect.signature(cls)
        named = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        accepted = [p.name for p in named]
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = [] if takes_any else sorted(set(params) - set(accepted))
        if unknown:
            raise ConfigError(
                f"Invalid parameters {unknown} for {self.kind} {label!r}: {cls.__name__} does not take "
                f"{'it' if len(unknown) == 1 else 'them'}. Accepted: {accepted}."
            )
        try:
            signature.bind(**params)
        except TypeError as err:  # a required parameter is missing, or one is positional-only
            raise ConfigError(f"Invalid parameters {sorted(params)} for {self.kind} {label!r}: {err}. Accepted: {accepted}.") from None
        try:
            return cls(**params)
        except TypeError as err:
            raise ConfigError(f"Invalid parameters {sorted(params)} for {self.kind} {label!r}: {err}. Accepted: {accepted}.") from err

    # -- the mapping -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> type[T]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered (a ``"module:Name"`` path never is)."""
        return isinstance(name, str) and name in self._classes

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
