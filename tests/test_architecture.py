"""docs/architecture.rst matches the tree, and the layering rules it states hold.

Every module under ``tdaeval/`` is named on the page and every module named
there exists; imports (top-level and inside functions) follow the layers:
neutral modules at the bottom, ``functional/`` pure, metrics never importing
suites, reports reading results only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tdaeval"
PAGE = ROOT / "docs" / "architecture.rst"
MODULE_PATH = re.compile(r"``(tdaeval/[\w/]+\.py)``")

NEUTRAL = {"tdaeval.errors", "tdaeval.version", "tdaeval.hashing", "tdaeval.scores", "tdaeval.params", "tdaeval.registry",
           "tdaeval._imports", "tdaeval._text"}
# What reports may read of suites: the result types, never the runner or the build.
RESULT_TYPES = {"tdaeval.suites.result", "tdaeval.suites.ranking", "tdaeval.suites.compare", "tdaeval.suites.checks"}


def _modules() -> set[str]:
    return {str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """tdaeval modules imported anywhere in ``path`` (``from tdaeval.x import y`` counts as ``tdaeval.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "tdaeval":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "tdaeval")
    return found


def _violations(package_prefix: str, allowed) -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _dotted(path)
        if name != package_prefix and not name.startswith(package_prefix + "."):
            continue
        bad += [f"{name} imports {imported}" for imported in sorted(_imports(path)) if not allowed(imported)]
    return bad


def test_every_module_is_on_the_architecture_page_and_every_listed_module_exists():
    listed = set(MODULE_PATH.findall(PAGE.read_text(encoding="utf-8")))
    modules = _modules()
    assert modules - listed == set(), f"modules missing from docs/architecture.rst: {sorted(modules - listed)}"
    assert listed - modules == set(), f"docs/architecture.rst names modules that do not exist: {sorted(listed - modules)}"


def test_the_page_is_in_the_toctree():
    assert re.search(r"^\s+architecture$", (ROOT / "docs" / "index.rst").read_text(encoding="utf-8"), re.M)


@pytest.mark.parametrize("module", sorted(NEUTRAL))
def test_neutral_modules_import_only_one_another(module):
    path = PACKAGE / (module.removeprefix("tdaeval.").replace(".", "/") + ".py")
    assert path.exists(), module
    assert _imports(path) <= NEUTRAL, f"{module} imports {sorted(_imports(path) - NEUTRAL)}"


def test_functional_is_pure():
    assert not _violations("tdaeval.functional", lambda m: m == "tdaeval.errors" or m.startswith("tdaeval.functional"))


def test_metrics_never_import_suites_reports_or_the_command_line():
    forbidden = ("tdaeval.suites", "tdaeval.reports", "tdaeval.cli")
    assert not _violations("tdaeval.metrics", lambda m: not m.startswith(forbidden))


def test_reports_read_results_only():
    forbidden = ("tdaeval.attributors", "tdaeval.metrics", "tdaeval.groundtruth", "tdaeval.training", "tdaeval.tasks")

    def allowed(module: str) -> bool:
        if module.startswith("tdaeval.suites"):
            return module in RESULT_TYPES
        return not module.startswith(forbidden) and module != "tdaeval"

    assert not _violations("tdaeval.reports", allowed)


def test_suites_never_import_reports_or_the_command_line():
    """Reports read results (``suites.result``): the other way round would be an import cycle."""
    assert not _violations("tdaeval.suites", lambda m: not m.startswith(("tdaeval.reports", "tdaeval.cli")))


def test_the_version_has_one_home_equal_to_the_project_version():
    import tdaeval
    from tdaeval import version

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == version.__version__ == tdaeval.__version__
