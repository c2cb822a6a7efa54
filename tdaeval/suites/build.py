"""Building a suite: a :class:`~tdaeval.suites.schema.SuiteConfig` turned into the objects a run uses.

:func:`build_suite` resolves every name in a suite once (the task, each
attributor and metric with its parameters, the executor, the device, the
floors' attributors and metrics) and returns a :class:`BuiltSuite` holding
the task, attributors and metrics it built; :func:`tdaeval.suites.run_suite`
and :func:`tdaeval.suites.build_groundtruth` take it as it is, so a run builds
its task once. A suite is code: building imports the task ``factory`` and
every ``module:Name`` (their top-level code runs) and appends the suite's
folder to ``sys.path``. Errors name the file and the key path, as the
schema's do.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tdaeval.attributors.base import Attributor, get
from tdaeval.errors import ConfigError, TdaevalError
from tdaeval.groundtruth.executors import get_executor
from tdaeval.metrics.base import Metric, get_metric, metric_class
from tdaeval.registry import import_object
from tdaeval.suites.schema import MAX_SEED, MAX_SEEDS, MAX_SUBSETS, SuiteConfig, read_suite, suite_path
from tdaeval.task import Task
from tdaeval.tasks import get_task
from tdaeval.tasks.controlled import SETTING_FUNCTIONS

__all__ = [
    "BuiltSuite",
    "build_suite",
    "build_task",
    "build_attributors",
    "build_metrics",
    "metric_params",
    "check_device",
    "check_suite",
]


@dataclass(frozen=True, eq=False)
class BuiltSuite:
    """A suite with every name resolved: what :func:`build_suite` returns and a run takes.

    Attributes
    ----------
    config : SuiteConfig
        The validated document (every key, defaults filled in).
    source : str
        Shown in error messages and recorded as the suite file: the path as
        given, ``"builtin suite 'NAME'"`` or ``"<suite>"`` for a config built in code.
    folder : Path or None
        The suite file's directory; relative paths in the suite are relative to
        it (None: to the working directory).
    task : Task
        The task, with its controlled setting applied (built once).
    attributors : dict of str to Attributor
        ``{label: attributor}`` in the suite's order; a run fits them in place.
    metrics : list of Metric
        The metrics, ground-truth defaults applied.
    """

    config: SuiteConfig
    source: str
    folder: Path | None
    task: Task
    attributors: dict[str, Attributor]
    metrics: list[Metric]

    @property
    def executor(self) -> str | dict[str, Any]:
        """The suite's executor spec (checked); each run makes its own executor from it and shuts it down."""
        return self.config.executor

    @property
    def device(self) -> str:
        """Where to train and attribute (checked to be available here)."""
        return self.config.device

    @property
    def store(self) -> Path | None:
        """The ground-truth store (``store``, relative to :attr:`folder`); None: the default store."""
        return suite_path(self.config.store, self.folder)

    @property
    def scores_dir(self) -> Path | None:
        """Where streamed scores go (``scores_dir``, relative to :attr:`folder`); None: a temporary folder."""
        return suite_path(self.config.scores_dir, self.folder)

    @property
    def baseline(self) -> Path | None:
        """The baseline results file (``baseline``, relative to :attr:`folder`); None when not set."""
        return suite_path(self.config.baseline, self.folder)

    @property
    def suite_file(self) -> str:
        """The suite file's absolute path, or :attr:`source` for a built-in suite or a config built in code."""
        return str(Path(self.source).resolve()) if self.folder is not None else self.source


def build_suite(suite: SuiteConfig | str | Path, source: str | None = None, folder: Path | None = None) -> BuiltSuite:
    """Resolve and check every name in a suite, building its task, attributors and metrics once.

    Checks, in this order, raising at the first problem: the task builds (its
    data loaded) and its model is constructed once; every attributor and
    metric is constructed with its parameters; the device is available here;
    the executor spec is valid; each floor names an attributor and a metric
    of the suite.

    Parameters
    ----------
    suite : SuiteConfig, str or Path
        A config (e.g. from :func:`tdaeval.suites.schema.parse_suite`), a suite
        file or the name of a built-in suite (read with
        :func:`tdaeval.suites.schema.read_suite`).
    source : str, optional
        Shown in error messages; default the path as given (``"<suite>"`` for a config).
    folder : Path, optional
        The suite file's directory, for a config: appended to ``sys.path`` (if
        absent) so ``module:Name`` entries can name modules beside the suite,
        and the base of its relative paths. Read from the file for a path.

    Returns
    -------
    BuiltSuite

    Raises
    ------
    ConfigError
        One line: ``source: key.path: what was expected``.
    """
    if isinstance(suite, (str, Path)):
        config, folder, read_source = read_suite(suite)
        source = read_source if source is None else source
    elif isinstance(suite, SuiteConfig):
        config = suite
        source = "<suite>" if source is None else source
    else:
        raise ConfigError(f"The 'suite' parameter of build_suite must be a SuiteConfig or a path. Got {type(suite).__name__}.")
    if folder is not None and str(folder) not in sys.path:  # 'module:Name' next to the suite file imports, as pytest does for its rootdir
        sys.path.append(str(folder))
    task = build_task(config, source)
    _wrap(lambda: task.build_model(config.seed), source, "task.params")  # sizes a run could not allocate fail here
    attributors = build_attributors(config, source)
    metrics = build_metrics(config, source)
    _check_runtime(config, source, metrics)
    return BuiltSuite(config=config, source=source, folder=folder, task=task, attributors=attributors, metrics=metrics)


def check_suite(config: SuiteConfig, source: str = "<suite>") -> None:
    """Raise ConfigError (file + key path) unless every name and parameter in the suite resolves.

    :func:`build_suite` without keeping what it built.
    """
    build_suite(config, source)


def _check_runtime(config: SuiteConfig, source: str, metrics: list[Metric]) -> None:
    """The device, the executor and the floors' names (a floor names a metric as results do: by its registered ``name``)."""
    try:
        check_device(config.device)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    _wrap(lambda: get_executor(config.executor, device=config.device), source, "executor")  # lazy: starts no worker
    labels = {a.label for a in config.attributors}
    names = {m.name for m in metrics}
    by_path = {spec.name: metric.name for spec, metric in zip(config.metrics, metrics) if spec.name != metric.name}
    for i, floor in enumerate(config.thresholds.floors):
        if floor.attributor != "*" and floor.attributor not in labels:
            raise ConfigError(f"{source}: thresholds.floors.{i}.attributor: {floor.attributor!r} is not an attributor of this suite "
                              f"(expected one of {sorted(labels)} or '*').")
        if floor.metric in by_path:
            raise ConfigError(f"{source}: thresholds.floors.{i}.metric: floors name a metric as results do, by its registered name: "
                              f"write {by_path[floor.metric]!r} for {floor.metric!r}.")
        if floor.metric not in names:
            raise ConfigError(f"{source}: thresholds.floors.{i}.metric: {floor.metric!r} is not a metric of this suite "
                              f"(expected one of {sorted(names)}).")


def build_task(config: SuiteConfig, source: str = "<suite>") -> Task:
    """The suite's Task (with its controlled setting applied), constructed once."""
    spec = config.task
    if spec.name is not None:
        task = _wrap(lambda: _named_task(spec.name, spec.params), source, "task.name" if not spec.params else "task.params")
    else:
        factory = _wrap(lambda: import_object(spec.factory, "task factory", callable, "a function returning a Task"), source, "task.factory")
        task = _wrap(lambda: factory(**spec.params), source, "task.params")
        if not isinstance(task, Task):
            raise ConfigError(f"{source}: task.factory: {spec.factory!r} returned {type(task).__name__}, expected a tdaeval Task.")
    if spec.setting is not None:
        transform = SETTING_FUNCTIONS[spec.setting.name]
        task = _wrap(lambda: transform(task, **spec.setting.params), source, "task.setting.params")
    return task


def _named_task(name: str, params: dict[str, Any]) -> Task:
    """A built-in task; a ``recipe`` mapping overrides those fields of the task's own default recipe."""
    recipe = params.get("recipe")
    if not isinstance(recipe, dict):
        return get_task(name, **params)
    task = get_task(name, **{k: v for k, v in params.items() if k != "recipe"})
    replaced = dataclasses.replace(task.recipe, **recipe)
    if "recipe" in inspect.signature(type(task)).parameters:
        task.recipe = replaced  # the constructor only stores its recipe: set it here instead of building the task twice
        return task
    return get_task(name, **{**params, "recipe": replaced})  # no 'recipe' parameter: the TypeError naming it


def build_attributors(config: SuiteConfig, source: str = "<suite>") -> dict[str, Attributor]:
    """``{label: Attributor}`` for the suite's attributors (fresh instances)."""
    out = {}
    for i, spec in enumerate(config.attributors):
        where = f"attributors.{i}.params" if spec.params else f"attributors.{i}.use"
        attributor = _wrap(lambda: get(spec.use, **spec.params), source, where)
        if spec.name is not None or ":" in spec.use:
            attributor = attributor.renamed(spec.label)  # a copy: a module-level instance stays as its module defined it
        out[spec.label] = attributor
    return out


def metric_params(config: SuiteConfig, index: int) -> dict[str, Any]:
    """Parameters of metric ``index``: the ``groundtruth`` defaults it accepts, overridden by its own ``params``."""
    spec = config.metrics[index]
    cls = metric_class(spec.name)
    accepted = set(inspect.signature(cls.__init__).parameters) & set(cls.groundtruth_params)
    defaults = {k: v for k, v in config.groundtruth.model_dump().items() if v is not None and k in accepted}
    return {**defaults, **spec.params}


def build_metrics(config: SuiteConfig, source: str = "<suite>") -> list[Metric]:
    """The suite's Metric instances (ground-truth defaults applied).

    Results key a metric by its registered ``name`` (for a ``module:Name`` path, the class's ``name``),
    so two entries that resolve to the same name are refused.
    """
    out: list[Metric] = []
    index_of: dict[str, int] = {}  # registered name -> the first entry that resolved to it
    for i, spec in enumerate(config.metrics):
        cls = _wrap(lambda: metric_class(spec.name), source, f"metrics.{i}.name")
        earlier = index_of.setdefault(cls.name, i)
        if earlier != i:
            raise ConfigError(f"{source}: metrics.{i}.name: {spec.name!r} is the metric {cls.name!r}, as metrics.{earlier} is; "
                              "results name a metric by its registered name, so each may appear once.")
        _check_groundtruth_bounds(spec.params, source, f"metrics.{i}.params")
        out.append(_wrap(lambda: get_metric(spec.name, **metric_params(config, i)), source, f"metrics.{i}.params"))
    return out


def _check_groundtruth_bounds(params: dict[str, Any], source: str, where: str) -> None:
    """A metric's own ground-truth parameters (``n_subsets``, ``n_seeds``, ``seed``) within the suite bounds."""
    bounds = {"n_subsets": MAX_SUBSETS, "n_seeds": MAX_SEEDS, "seed": MAX_SEED}
    for key, high in bounds.items():
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > high:
            raise ConfigError(f"{source}: {where}.{key}: must be <= {high:,} (got {value!r}).")


def check_device(device: str) -> str:
    """``device`` if torch can use it here, else ConfigError saying what is available.

    Accepts ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N below the number of visible GPUs) and ``"mps"``.
    """
    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    if not isinstance(device, str) or not re.fullmatch(r"cpu|mps|cuda(:\d{1,4})?", device):
        raise ConfigError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}.")
    if device not in available:
        raise ConfigError(f"device: {device!r} is not available on this machine (available: {', '.join(available)}).")
    return device


def _wrap(build: Any, source: str, where: str) -> Any:
    try:
        return build()
    except TdaevalError as err:
        raise ConfigError(f"{source}: {where}: {err}") from None
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{source}: {where}: {type(err).__name__}: {_first_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: {where}: nested too deeply to build.") from None
    except (MemoryError, RuntimeError) as err:  # e.g. sizes that cannot be allocated; torch's C++ trace is cut
        raise ConfigError(f"{source}: {where}: cannot be built here: {type(err).__name__}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (torch appends C++ stack traces to some)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
