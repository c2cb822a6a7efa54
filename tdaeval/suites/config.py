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
    """:func:`tdaeval.suites.schema.parse_suite`; with ``check``, also :func:`~tdaeval.suites.build.check_suite` (built, then discarded)."""
    config = schema.parse_suite(text, source=source, fmt=fmt)
    if check:
        check_suite(config, source)
    return config


def load_suite(path: str | Path, check: bool = True) -> tuple[SuiteConfig, Path | None]:
    """:func:`tdaeval.suites.schema.load_suite`; with ``check``, :func:`~tdaeval.suites.build.build_suite` instead (built, then discarded).

    Building imports what the suite names and appends its folder to ``sys.path``
    (see :mod:`tdaeval.suites.build`); ``check=False`` does neither.
    """
    if not check:
        return schema.load_suite(path)
    built = build_suite(path)
    return built.config, built.folder
