"""Suite files, the backwards-compatible entry point: prefer :mod:`tdaeval.suites.schema` and :mod:`tdaeval.suites.build`.

A suite is read in two steps: :func:`tdaeval.suites.schema.load_suite` (or
``parse_suite``) checks the document's structure and ranges and imports
nothing; :func:`tdaeval.suites.build.build_suite` resolves its names once
and returns a :class:`~tdaeval.suites.build.BuiltSuite` (task, attributors,
metrics) that :func:`tdaeval.suites.run_suite` takes as it is. This module
re-exports both and keeps the older one-call forms, :func:`load_suite` and
:func:`parse_suite` with ``check=True``, which build the suite to check it
and keep only the config.
"""

from __future__ import annotations

from pathlib import Path

from tdaeval.suites import schema
from tdaeval.suites.build import (  # noqa: F401 - re-exported (see __all__)
    BuiltSuite,
    build_attributors,
    build_metrics,
    build_suite,
    build_task,
    check_device,
    check_suite,
    metric_params,
)
from tdaeval.suites.schema import (  # noqa: F401 - re-exported (see __all__)
    IMPORT_PATH,
    MAX_CHECKPOINTS,
    MAX_CHUNK,
    MAX_SEED,
    MAX_SEEDS,
    MAX_SUBSETS,
    MAX_SUITE_BYTES,
    MAX_SUITE_DEPTH,
    MAX_SUITE_NODES,
    SETTINGS,
    AttributorSpec,
    FloorSpec,
    GroundTruthSpec,
    MetricSpec,
    RankingSpec,
    SettingSpec,
    SuiteConfig,
    TaskSpec,
    ThresholdSpec,
    builtin_suites,
    read_suite,
    suite_path,
)

#: Only this module's own functions: the other names above are re-exported for code written against
#: the one-module layout, and documented where they live (:mod:`~tdaeval.suites.schema`, :mod:`~tdaeval.suites.build`).
__all__ = ["load_suite", "parse_suite"]


def parse_suite(text: str, source: str = "<suite>", fmt: str = "yaml", check: bool = True) -> SuiteConfig:
    """Validate a suite document; with ``check``, also build it to resolve its names.

    Prefer :func:`tdaeval.suites.schema.parse_suite` (structure only) followed by
    :func:`tdaeval.suites.build.build_suite`, which keeps what it built.

    Parameters
    ----------
    text : str
        YAML or TOML text.
    source : str
        Shown in error messages (the file name).
    fmt : {"yaml", "toml"}
        The text's format.
    check : bool
        Also check that names resolve (:func:`~tdaeval.suites.build.build_suite`):
        the task, every attributor and metric with its parameters, floors that
        name known attributors and metrics.

    Raises
    ------
    ConfigError
        With one line per problem: ``source: key.path: what was expected``.
    """
    config = schema.parse_suite(text, source=source, fmt=fmt)
    if check:
        build_suite(config, source)
    return config


def load_suite(path: str | Path, check: bool = True) -> tuple[SuiteConfig, Path | None]:
    """Read a suite file (``.yaml``, ``.yml``, ``.toml``) or a built-in suite by name; with ``check``, build it too.

    Prefer :func:`tdaeval.suites.build.build_suite` (which reads a path and keeps
    what it built) or :func:`tdaeval.suites.schema.load_suite` (structure only).

    A suite is code, like a ``conftest.py``: with ``check=True`` the file's
    folder is appended to ``sys.path`` (if absent), so ``module:Name`` entries
    can point at modules next to the suite, and the task factory and every
    ``module:Name`` are imported (a module's top-level code runs), so whoever
    can edit the suite or a module beside it runs code as the user running tdaeval.

    Parameters
    ----------
    path : str or Path
        The suite file, or the name of a built-in suite.
    check : bool
        Also resolve names (builds the suite once and discards it). With False,
        only the document's structure and ranges are checked, nothing is
        imported and ``sys.path`` is left as it is.

    Returns
    -------
    tuple
        ``(config, folder)``: relative paths in the suite (store, baseline) are
        relative to ``folder``, the file's directory (None for built-in suites:
        relative to the working directory).
    """
    if not check:
        return schema.load_suite(path)
    built = build_suite(path)
    return built.config, built.folder
