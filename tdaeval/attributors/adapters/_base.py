"""What every adapter shares: lazy import of its library, and the objectives it hands over.

An adapter wraps another library's attributor so that it takes our
``fit(task, model, train)`` / ``attribute(test)`` calls and returns scores
``[n_test, n_train]`` with positive = supports (docs: Methods §0). Its library is
imported only when the adapter is fitted; a missing library is an error that
names the extra to install.
"""

from __future__ import annotations

import importlib
import tempfile
from types import ModuleType
from typing import ClassVar

from torch import Tensor

from tdaeval.attributors.base import Attributor
from tdaeval.errors import ConfigError
from tdaeval.task import Task

__all__ = ["AdapterAttributor", "MissingExtraError", "import_extra", "extra_available", "measurement_badness"]


class MissingExtraError(ConfigError, ImportError):
    """An adapter's library is not installed."""


def import_extra(module: str, extra: str, attributor: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'tdaeval[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"Attributor {attributor!r} needs the optional dependency {module.split('.')[0]!r}, which could not be "
            f"imported ({err}). Install it with: pip install 'tdaeval[{extra}]'."
        ) from err


def extra_available(module: str) -> bool:
    """Whether ``module`` imports (used by tests and ``tdaeval ls``)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def measurement_badness(task: Task):
    """The test-side objective of our gradient attributors: ``-f`` when higher is better, else ``f``.

    Returns
    -------
    callable
        ``(outputs [n, ...], targets [n]) -> [n]``; lowering it improves the measurement.
    """
    sign = -1.0 if task.higher_is_better else 1.0

    def badness(outputs: Tensor, targets: Tensor) -> Tensor:
        return sign * task.measurement(outputs, targets)

    return badness


class AdapterAttributor(Attributor):
    """Base of the adapters: ``library`` is imported in :meth:`fit`, ``extra`` names what to install.

    Subclasses implement :meth:`_fit` and :meth:`_attribute` as any attributor,
    and call :meth:`_library` to get the imported module.
    """

    library: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    #: The temporary directory of the last fit (:meth:`_workdir`), None before one is made and after :meth:`cleanup`.
    _tmpdir: tempfile.TemporaryDirectory | None = None

    @classmethod
    def available(cls) -> bool:
        """Whether the wrapped library can be imported here."""
        return extra_available(cls.library)

    def _library(self, module: str | None = None) -> ModuleType:
        return import_extra(module or self.library, self.extra, self.display_name)

    def _workdir(self) -> str:
        """A fresh temporary directory for this fit, for libraries that work through files.

        The previous one is removed by its finalizer once nothing holds it (a
        shallow copy of a fitted attributor keeps its own).
        """
        self._tmpdir = tempfile.TemporaryDirectory(prefix=f"tdaeval-{self.extra or 'adapter'}-")
        return self._tmpdir.name

    def cleanup(self) -> None:
        """Remove the temporary directory of the last fit now (also done on garbage collection)."""
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def fit(self, task, model, train, checkpoints=None):  # noqa: D102 - documented on Attributor
        self._library()
        return super().fit(task, model, train, checkpoints)
