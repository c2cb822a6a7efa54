"""Suite files: YAML or TOML, validated with pydantic, errors that name the file and the key path.

A suite says what to evaluate (a task, attributors, metrics), how to build the
ground truth (M, α, R, seeds, store, executor, device), how to rank, and what
must hold in CI (floors, maximum regression against a baseline). Every key is
documented in ``docs/suites.rst``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tdaeval.errors import ConfigError, TdaevalError

__all__ = [
    "SuiteConfig",
    "TaskSpec",
    "AttributorSpec",
    "MetricSpec",
    "GroundTruthSpec",
    "RankingSpec",
    "FloorSpec",
    "ThresholdSpec",
    "load_suite",
    "parse_suite",
    "builtin_suites",
    "suite_path",
    "SETTINGS",
]

#: Controlled settings a suite can apply to its task (``task.setting``), see :mod:`tdaeval.tasks.controlled`.
SETTINGS = ("flipped_labels", "grouped_labels", "shortcut", "mixed_dataset")

#: Largest seed a suite may give: seeds are unsigned 32-bit integers (as numpy's), so every
#: seed derived from them by addition stays within what torch's generators accept.
MAX_SEED = 2**32 - 1
#: Upper bounds on the counts a suite may ask for; each is far beyond any feasible run, and
#: checked at validation so that no run starts an allocation or a loop it cannot finish.
MAX_SUBSETS = 1_000_000
MAX_SEEDS = 10_000
MAX_CHECKPOINTS = 10_000
MAX_CHUNK = 2**31 - 1

#: ``module:attribute`` with dotted Python identifiers on both sides (no paths, no empty parts).
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _check_import_path(value: str, key: str) -> str:
    if not IMPORT_PATH.fullmatch(value):
        raise ValueError(f"'{key}' must look like 'package.module:Name' (dotted Python names, no file paths); got {value!r}")
    return value


def _check_path_text(value: str | None, key: str) -> str | None:
    if value is not None and (value == "" or "\x00" in value):
        raise ValueError(f"'{key}' must be a non-empty path without NUL bytes; got {value!r}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingSpec(_Strict):
    """A controlled setting applied to the task (mislabel, subclass, shortcut, mixed-dataset metrics)."""

    name: Literal["flipped_labels", "grouped_labels", "shortcut", "mixed_dataset"]
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(_Strict):
    """What is explained: a built-in task by ``name`` or a ``factory`` ``"module:function"`` returning a Task."""

    name: str | None = None
    factory: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    setting: SettingSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> "TaskSpec":
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of 'name' (a built-in task) or 'factory' ('module:function')")
        if self.factory is not None:
            _check_import_path(self.factory, "factory")
        if self.name is not None and "recipe" in self.params and not isinstance(self.params["recipe"], dict):
            raise ValueError("'params.recipe' must be a mapping of training-recipe fields (epochs, batch_size, lr, "
                             f"momentum, weight_decay); got {self.params['recipe']!r}")
        return self


class AttributorSpec(_Strict):
    """An attributor: ``use`` is a registered name or ``"module:Name"``; ``name`` labels it in reports."""

    use: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"use": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _import_path(self) -> "AttributorSpec":
        if ":" in self.use:
            _check_import_path(self.use, "use")
        return self

    @property
    def label(self) -> str:
        """The name shown in results: ``name`` or ``use``."""
        return self.name or self.use


class MetricSpec(_Strict):
    """A registered metric and its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class GroundTruthSpec(_Strict):
    """Defaults for the metrics whose ground truth takes them (a metric's own ``params`` win).

    ``n_subsets`` is M, ``alpha`` the subset fraction α (LDS), ``n_seeds`` R
    and ``seed`` the ground truth's seed (LDS, LOO, removal metrics, further
    training); see each metric's ``groundtruth_params``. Other metrics'
    parameters of the same name (e.g. ``seed_reliability``'s ``alpha``) are
    left alone.
    """

    n_subsets: int | None = Field(default=None, ge=2, le=MAX_SUBSETS)
    alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    n_seeds: int | None = Field(default=None, ge=1, le=MAX_SEEDS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)


class RankingSpec(_Strict):
    """The ranking test: paired bootstrap, two-sided, level ``alpha``, multiple-pair ``correction``."""

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    n_resamples: int = Field(default=2000, ge=100)
    correction: Literal["holm", "none"] = "holm"


class FloorSpec(_Strict):
    """An absolute threshold on one attributor (``"*"`` = every attributor) × metric."""

    attributor: str
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> "FloorSpec":
        if self.min is None and self.max is None:
            raise ValueError("give 'min' and/or 'max'")
        for key in ("min", "max"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"'{key}' must be a finite number; got {value!r}")
        return self


class ThresholdSpec(_Strict):
    """What ``tdaeval check`` enforces."""

    floors: list[FloorSpec] = Field(default_factory=list)
    max_regression: float | None = Field(default=None, ge=0.0)
    ci_must_clear: bool = False


class SuiteConfig(_Strict):
    """A whole suite file; see ``docs/suites.rst`` for every key."""

    version: Literal[1] = 1
    name: str = "suite"
    description: str = ""
    task: TaskSpec
    attributors: list[AttributorSpec] = Field(min_length=1)
    metrics: list[MetricSpec] = Field(min_length=1)
    groundtruth: GroundTruthSpec = Field(default_factory=GroundTruthSpec)
    store: str | None = None
    executor: str | dict[str, Any] = "local"
    device: str = "cpu"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    n_checkpoints: int = Field(default=5, ge=1, le=MAX_CHECKPOINTS)
    score_chunk: int | None = Field(default=None, ge=1, le=MAX_CHUNK)
    scores_dir: str | None = None
    ranking: RankingSpec = Field(default_factory=RankingSpec)
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)
    baseline: str | None = None

    @field_validator("store", "scores_dir", "baseline")
    @classmethod
    def _paths(cls, value: str | None, info: Any) -> str | None:
        return _check_path_text(value, info.field_name)

    @field_validator("attributors")
    @classmethod
    def _unique_labels(cls, value: list[AttributorSpec]) -> list[AttributorSpec]:
        _require_unique([a.label for a in value], "attributor names", " (set 'name' to tell them apart)")
        return value

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        _require_unique([m.name for m in value], "metric names")
        return value

    # -- building the objects -------------------------------------------------
    def metric_params(self, index: int) -> dict[str, Any]:
        """Parameters of metric ``index``: ground-truth defaults it accepts, overridden by its own params."""
        from tdaeval.metrics.base import metric_class

        spec = self.metrics[index]
        cls = metric_class(spec.name)
        accepted = set(inspect.signature(cls.__init__).parameters) & set(cls.groundtruth_params)
        defaults = {k: v for k, v in self.groundtruth.model_dump().items() if v is not None and k in accepted}
        return {**defaults, **spec.params}


def _require_unique(names: list[str], what: str, hint: str = "") -> None:
    from collections import Counter

    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)  # linear: 100,000 names in ms
    if duplicates:
        raise ValueError(f"{what} must be unique; {duplicates} appear more than once{hint}")


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-union"))))
        got = e.get("input")
        got_text = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, (dict, list)) else f" (got {got!r})"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown key (not part of the suite format; see docs/suites.rst)"
        lines.append(f"{source}: {_loc(loc)}: {message}{got_text}")
    return "\n".join(lines)


def builtin_suites() -> dict[str, str]:
    """Built-in suite names and their YAML text (``smoke``, ``standard``)."""
    folder = resources.files("tdaeval.suites") / "builtin"
    return {p.name.removesuffix(".yaml"): p.read_text() for p in folder.iterdir() if p.name.endswith(".yaml")}


#: Limits on a suite document, checked before anything is built from it: the text's size, the
#: number of nodes once YAML aliases are expanded (a 400-byte alias bomb expands to billions) and
#: the nesting depth. A real suite is far below each (100,000 attributors are about 400,000 nodes).
MAX_SUITE_BYTES = 16 * 2**20
MAX_SUITE_NODES = 2_000_000
MAX_SUITE_DEPTH = 64


def _check_document_shape(root: Any, source: str, children: Any) -> None:
    """Raise ConfigError when the document under ``root`` is deeper or larger than the suite limits.

    ``children(node)`` lists a node's children. A node reached twice (a YAML alias) counts each
    time, so the size is that of the document as it would be built; sizes of shared nodes are
    memoised, so an alias bomb is refused in time linear in the text, and a node that contains
    itself (a recursive alias) is refused.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_SUITE_NODES:
                raise ConfigError(f"{source}: the document expands to more than {MAX_SUITE_NODES:,} values "
                                  "(YAML aliases count each time they are used); a suite is far smaller.")
            if depth[key] > MAX_SUITE_DEPTH:
                raise ConfigError(f"{source}: the document is nested more than {MAX_SUITE_DEPTH} levels deep; "
                                  "a suite is far shallower.")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(f"{source}: an alias refers to a value that contains it (a recursive document).")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children(node) if id(child) not in size)


def _yaml_children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _python_children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, list):
        return list(value)
    return []


def _parse_text(text: str, source: str, fmt: str) -> Any:
    if len(text) > MAX_SUITE_BYTES:
        raise ConfigError(f"{source}: the document is {len(text):,} characters long; a suite may have at most {MAX_SUITE_BYTES:,}.")
    if fmt == "toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not valid TOML: {err}") from None
        except RecursionError:
            raise ConfigError(f"{source}: the document is nested too deeply; a suite is far shallower.") from None
        _check_document_shape(data, source, _python_children)
        return data
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml when present: 10x faster on large suites
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_document_shape(node, source, _yaml_children)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the document is nested too deeply; a suite is far shallower.") from None
    except ValueError as err:  # e.g. an integer of thousands of digits (Python's int-conversion limit)
        raise ConfigError(f"{source}: not a usable YAML value: {str(err).splitlines()[0]}") from None
    finally:
        loader.dispose()


def _check_text(data: Any, source: str, path: tuple[Any, ...] = ()) -> None:
    """Raise ConfigError naming the key path of any text that is not valid Unicode (a lone surrogate
    cannot be written to a report or a file name)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        for part in (key, value):
            if isinstance(part, str):
                try:
                    part.encode("utf-8")
                except UnicodeEncodeError:
                    raise ConfigError(f"{source}: {_loc((*path, key))}: text is not valid Unicode "
                                      f"(lone surrogate); got {part!r}.") from None
        _check_text(value, source, (*path, key))


def parse_suite(text: str, source: str = "<suite>", fmt: str = "yaml", check: bool = True) -> SuiteConfig:
    """Validate a suite document.

    Parameters
    ----------
    text : str
        YAML or TOML text.
    source : str
        Shown in error messages (the file name).
    fmt : {"yaml", "toml"}
        The text's format.
    check : bool
        Also check that names resolve: the task, every attributor and metric
        with its parameters, floors that name known attributors and metrics.

    Raises
    ------
    ConfigError
        With one line per problem: ``source: key.path: what was expected``.
    """
    data = _parse_text(text, source, fmt)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite must be a mapping with keys such as 'task', 'attributors', 'metrics'; got {type(data).__name__}.")
    _check_text(data, source)
    try:
        config = SuiteConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    if check:
        check_suite(config, source)
    return config


def load_suite(path: str | Path, check: bool = True) -> tuple[SuiteConfig, Path | None]:
    """Read a suite file (``.yaml``, ``.yml``, ``.toml``) or a built-in suite by name.

    The file's folder is appended to ``sys.path`` (if absent), so ``module:Name``
    entries can point at modules next to the suite.

    A suite is code, like a ``conftest.py``: with ``check=True`` the task
    factory and every ``module:Name`` are imported (a module's top-level code
    runs), so whoever can edit the suite or a module beside it runs code as
    the user running tdaeval.

    Parameters
    ----------
    path : str or Path
        The suite file, or the name of a built-in suite.
    check : bool
        Also resolve names (imports the task factory, attributors and metrics
        named ``module:Name``). With False, only the document's structure and
        ranges are checked (:func:`parse_suite` with ``check=False``), nothing
        is imported and ``sys.path`` is left as it is.

    Returns
    -------
    tuple
        ``(config, folder)``: relative paths in the suite (store, baseline) are
        relative to ``folder``, the file's directory (None for built-in suites:
        relative to the working directory).
    """
    text_path = Path(path)
    if not text_path.exists():
        builtins = builtin_suites()
        if str(path) in builtins:
            return parse_suite(builtins[str(path)], source=f"builtin suite {path!r}", check=check), None
        raise ConfigError(f"Suite file {str(path)!r} does not exist (built-in suites: {', '.join(sorted(builtins))}).")
    if text_path.is_dir():
        raise ConfigError(f"Suite file {str(path)!r} is a directory; expected a .yaml or .toml file.")
    fmt = "toml" if text_path.suffix.lower() == ".toml" else "yaml"
    try:
        text = text_path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Cannot read suite file {str(path)!r}: {err}.") from None
    folder = text_path.resolve().parent
    if check and str(folder) not in sys.path:  # 'module:Name' next to the suite file imports, as pytest does for its rootdir
        sys.path.append(str(folder))
    return parse_suite(text, source=str(path), fmt=fmt, check=check), folder


def suite_path(value: str | None, folder: Path | None) -> Path | None:
    """A path written in a suite (``store``, ``baseline``, ``scores_dir``), relative to the suite file's
    ``folder`` (to the working directory for built-in suites); None stays None."""
    if value is None:
        return None
    return Path(value) if folder is None else folder / value


# -- semantic checks: names resolve, parameters are accepted ------------------
def build_task(config: SuiteConfig, source: str = "<suite>") -> Any:
    """The suite's Task (with its controlled setting applied)."""
    from tdaeval.task import Task
    from tdaeval.tasks import controlled, get_task

    spec = config.task
    if spec.name is not None:
        task = _wrap(lambda: get_task(spec.name, **_task_params(spec.name, spec.params)), source, "task.name" if not spec.params else "task.params")
    else:
        factory = _import(spec.factory, source, "task.factory")
        task = _wrap(lambda: factory(**spec.params), source, "task.params")
        if not isinstance(task, Task):
            raise ConfigError(f"{source}: task.factory: {spec.factory!r} returned {type(task).__name__}, expected a tdaeval Task.")
    if spec.setting is not None:
        transform = getattr(controlled, f"with_{spec.setting.name}")
        task = _wrap(lambda: transform(task, **spec.setting.params), source, "task.setting.params")
    return task


def _task_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with a ``recipe`` mapping turned into a TrainRecipe that keeps the task's own defaults."""
    import dataclasses

    from tdaeval.tasks import get_task

    if isinstance(params.get("recipe"), dict):
        base = get_task(name, **{k: v for k, v in params.items() if k != "recipe"}).recipe
        params = {**params, "recipe": dataclasses.replace(base, **params["recipe"])}
    return params


def build_attributors(config: SuiteConfig, source: str = "<suite>") -> dict[str, Any]:
    """``{label: Attributor}`` for the suite's attributors (fresh instances)."""
    from tdaeval.attributors.base import get

    out = {}
    for i, spec in enumerate(config.attributors):
        where = f"attributors.{i}.params" if spec.params else f"attributors.{i}.use"
        attributor = _wrap(lambda: get(spec.use, **spec.params), source, where)
        if spec.name is not None or ":" in spec.use:
            attributor = copy.copy(attributor)  # a module-level instance stays as its module defined it
            attributor._display_name = spec.label
        out[spec.label] = attributor
    return out


def build_metrics(config: SuiteConfig, source: str = "<suite>") -> list[Any]:
    """The suite's Metric instances (ground-truth defaults applied)."""
    from tdaeval.metrics.base import get_metric, metric_class

    out = []
    for i, spec in enumerate(config.metrics):
        _wrap(lambda: metric_class(spec.name), source, f"metrics.{i}.name")
        _check_groundtruth_bounds(spec.params, source, f"metrics.{i}.params")
        out.append(_wrap(lambda: get_metric(spec.name, **config.metric_params(i)), source, f"metrics.{i}.params"))
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
    import torch

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


def check_suite(config: SuiteConfig, source: str = "<suite>") -> None:
    """Raise ConfigError (file + key path) unless every name and parameter in the suite resolves."""
    from tdaeval.groundtruth.executors import get_executor

    task = build_task(config, source)
    _wrap(lambda: task.build_model(config.seed), source, "task.params")  # sizes a run could not allocate fail here
    build_attributors(config, source)
    build_metrics(config, source)
    try:
        check_device(config.device)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    _wrap(lambda: get_executor(config.executor, device=config.device), source, "executor")
    labels = {a.label for a in config.attributors}
    metrics = {m.name for m in config.metrics}
    for i, floor in enumerate(config.thresholds.floors):
        if floor.attributor != "*" and floor.attributor not in labels:
            raise ConfigError(f"{source}: thresholds.floors.{i}.attributor: {floor.attributor!r} is not an attributor of this suite (expected one of {sorted(labels)} or '*').")
        if floor.metric not in metrics:
            raise ConfigError(f"{source}: thresholds.floors.{i}.metric: {floor.metric!r} is not a metric of this suite (expected one of {sorted(metrics)}).")


def _import(path: str, source: str, where: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, ValueError, TypeError) as err:
        from tdaeval._imports import import_failure

        reason = import_failure(module_name, err) if isinstance(err, ImportError) else str(err).splitlines()[0]
        raise ConfigError(f"{source}: {where}: cannot import module {module_name!r}: {reason}.") from None
    except AttributeError:
        raise ConfigError(f"{source}: {where}: module {module_name!r} has no attribute {attr!r}.") from None


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
