"""The suite format: a pure pydantic schema and the parsing of suite text (YAML or TOML).

Nothing here imports or runs code named in a suite and nothing changes ``sys.path``:
:func:`parse_suite` and :func:`load_suite` check a document's structure and ranges
only (what ``tdaeval validate --schema-only`` does). Turning a :class:`SuiteConfig`
into a task, attributors, metrics and an executor, with the checks that needs
(names resolve, parameters are accepted), is :func:`tdaeval.suites.build.build_suite`.
Every key is documented in ``docs/suites.rst``.
"""

from __future__ import annotations

import math
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tdaeval.errors import ConfigError
from tdaeval.registry import IMPORT_PATH  # ``module:attribute``, dotted Python names on both sides

__all__ = [
    "SuiteConfig",
    "TaskSpec",
    "AttributorSpec",
    "MetricSpec",
    "GroundTruthSpec",
    "RankingSpec",
    "FloorSpec",
    "ThresholdSpec",
    "SettingSpec",
    "parse_suite",
    "read_suite",
    "load_suite",
    "builtin_suites",
    "suite_path",
    "SETTINGS",
    "IMPORT_PATH",
    "MAX_SEED",
    "MAX_SUBSETS",
    "MAX_SEEDS",
    "MAX_CHECKPOINTS",
    "MAX_CHUNK",
    "MAX_SUITE_BYTES",
    "MAX_SUITE_NODES",
    "MAX_SUITE_DEPTH",
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


class _Named(_Strict):
    """A spec that names what it builds in one key, :attr:`_KEY`: a bare string is shorthand for ``{_KEY: string}``,
    and a name with ``':'`` must be a ``module:Name`` path (the registries resolve those)."""

    _KEY: ClassVar[str] = "name"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {cls._KEY: value} if isinstance(value, str) else value


def _check_name(value: str | None, key: str) -> None:
    """A registered name, or (with ``':'``) a ``module:Name`` path checked by :data:`IMPORT_PATH`."""
    if value is not None and ":" in value:
        _check_import_path(value, key)


class SettingSpec(_Strict):
    """A controlled setting applied to the task (mislabel, subclass, shortcut, mixed-dataset metrics)."""

    name: Literal["flipped_labels", "grouped_labels", "shortcut", "mixed_dataset"]
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(_Named):
    """What is explained: a task by ``name`` (registered, or ``"module:Name"`` of a Task subclass) or a
    ``factory`` ``"module:function"`` returning a Task."""

    name: str | None = None
    factory: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    setting: SettingSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "TaskSpec":
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of 'name' (a built-in task) or 'factory' ('module:function')")
        _check_name(self.name, "name")
        if self.factory is not None:
            _check_import_path(self.factory, "factory")
        if self.name is not None and "recipe" in self.params and not isinstance(self.params["recipe"], dict):
            raise ValueError("'params.recipe' must be a mapping of training-recipe fields (epochs, batch_size, lr, "
                             f"momentum, weight_decay); got {self.params['recipe']!r}")
        return self


class AttributorSpec(_Named):
    """An attributor: ``use`` is a registered name or ``"module:Name"``; ``name`` labels it in reports."""

    _KEY: ClassVar[str] = "use"

    use: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _import_path(self) -> "AttributorSpec":
        _check_name(self.use, "use")
        return self

    @property
    def label(self) -> str:
        """The name shown in results: ``name`` or ``use``."""
        return self.name or self.use


class MetricSpec(_Named):
    """A metric, by registered name or ``"module:Name"`` of a Metric subclass, and its parameters.

    Results and floors name the metric by its registered name (the class's ``name``), not by the path.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _import_path(self) -> "MetricSpec":
        _check_name(self.name, "name")
        return self


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
        for key, value in (("min", self.min), ("max", self.max)):
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


def _require_unique(names: list[str], what: str, hint: str = "") -> None:
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
    """Built-in suite names and their YAML text (every ``tdaeval/suites/builtin/*.yaml``: ``smoke``, ``standard``, ``lm-smoke``, ...)."""
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


def parse_suite(text: str, source: str = "<suite>", fmt: str = "yaml") -> SuiteConfig:
    """Validate a suite document's structure and ranges; import nothing named in it.

    Parameters
    ----------
    text : str
        YAML or TOML text.
    source : str
        Shown in error messages (the file name).
    fmt : {"yaml", "toml"}
        The text's format.

    Returns
    -------
    SuiteConfig
        Names (task, attributors, metrics, executor) are not resolved: build it
        with :func:`tdaeval.suites.build.build_suite` for that.

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
        return SuiteConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_suite(path: str | Path) -> tuple[SuiteConfig, Path | None, str]:
    """:func:`load_suite`, also returning the name its error messages use.

    Returns
    -------
    tuple
        ``(config, folder, source)``: ``source`` is the path as given, or
        ``"builtin suite 'NAME'"`` for a built-in suite.
    """
    text_path = Path(path)
    if not text_path.exists():
        builtins = builtin_suites()
        if str(path) in builtins:
            source = f"builtin suite {str(path)!r}"
            return parse_suite(builtins[str(path)], source=source), None, source
        raise ConfigError(f"Suite file {str(path)!r} does not exist (built-in suites: {', '.join(sorted(builtins))}).")
    if text_path.is_dir():
        raise ConfigError(f"Suite file {str(path)!r} is a directory; expected a .yaml or .toml file.")
    fmt = "toml" if text_path.suffix.lower() == ".toml" else "yaml"
    try:
        text = text_path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Cannot read suite file {str(path)!r}: {err}.") from None
    return parse_suite(text, source=str(path), fmt=fmt), text_path.resolve().parent, str(path)


def load_suite(path: str | Path) -> tuple[SuiteConfig, Path | None]:
    """Read a suite file (``.yaml``, ``.yml``, ``.toml``) or a built-in suite by name; structure and ranges only.

    Nothing named in the suite is imported and ``sys.path`` is left as it is,
    so this is safe on a suite from an untrusted source. Build the result with
    :func:`tdaeval.suites.build.build_suite` to resolve its names.

    Parameters
    ----------
    path : str or Path
        The suite file, or the name of a built-in suite.

    Returns
    -------
    tuple
        ``(config, folder)``: relative paths in the suite (store, baseline) are
        relative to ``folder``, the file's directory (None for built-in suites:
        relative to the working directory).
    """
    config, folder, _ = read_suite(path)
    return config, folder


def suite_path(value: str | None, folder: Path | None) -> Path | None:
    """A path written in a suite (``store``, ``baseline``, ``scores_dir``), relative to the suite file's
    ``folder`` (to the working directory for built-in suites); None stays None."""
    if value is None:
        return None
    return Path(value) if folder is None else folder / value

